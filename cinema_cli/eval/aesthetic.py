"""`eval aesthetic`: the LAION aesthetic predictor on CLIP image features.

The predictor is a small stack of linear layers (the "improved aesthetic predictor"
MLP, or the first version's single linear layer) over a frame's unit CLIP vector
(ViT-L/14 for LAION's released weights), scoring about 1-10. The user gives its weights
with `--aesthetic`: a local .pth/.safetensors file, or ORG/REPO/FILE in the Hugging Face
cache. The layers are read from the file, in order, so both versions load; a
.pth is read with `weights_only=True`.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from cinema_cli.errors import BadInput
from cinema_cli.eval.results import mean, per_scene
from cinema_cli.eval.sources import Film

NAME = "aesthetic"
KEYS = ["aesthetic"]


class AestheticPredictor:
    def __init__(self, weights: str) -> None:
        self.path = _weights_file(weights)
        stat = self.path.stat()
        self.identity = f"{weights}:{stat.st_size}:{stat.st_mtime_ns}"
        self.layers = _linear_layers(self.path)

    @property
    def input_width(self) -> int:
        return self.layers[0][0].shape[1]

    def __call__(self, features: np.ndarray) -> np.ndarray:
        x = features.astype(np.float32)
        for weight, bias in self.layers:  # the MLP has no activations between its layers
            x = x @ weight.T + bias
        return x[:, 0]


def scores(predictor: AestheticPredictor, clip, frames: list[np.ndarray]) -> np.ndarray:
    """The predictor's score of each frame, through `clip` (eval.features.Clip)."""
    features = clip.images(frames)
    if features.shape[1] != predictor.input_width:
        raise BadInput(f"the aesthetic predictor takes {predictor.input_width}-wide CLIP features, but "
                       f"{clip.identity} gives {features.shape[1]}: use the CLIP model it was trained on "
                       "(ViT-L-14 for LAION's predictor)")
    return predictor(features)


def measure(film: Film, tools) -> dict:
    predictor, clip = tools.aesthetic, tools.clip
    rows = []
    for shot in film.shots:
        per_frame = scores(predictor, clip, shot.frames)
        rows.append({"id": shot.id, "scene": shot.scene, "frames": len(shot.frames),
                     "aesthetic": round(float(per_frame.mean()), 4), "aesthetic_min": round(float(per_frame.min()), 4)})
    return {"models": {"clip": clip.identity, "aesthetic": predictor.identity},
            "summary": {"aesthetic": mean(r["aesthetic"] for r in rows)},
            "shots": rows, "scenes": per_scene(rows, KEYS)}


def _weights_file(weights: str) -> Path:
    path = Path(weights).expanduser()
    if path.is_file():
        return path.resolve()
    parts = weights.split("/")
    if len(parts) >= 3 and not path.is_absolute():
        from huggingface_hub import try_to_load_from_cache

        repo, filename = "/".join(parts[:2]), "/".join(parts[2:])
        found = try_to_load_from_cache(repo, filename)
        if isinstance(found, str):
            return Path(found)
        raise BadInput(f"--aesthetic {weights}: not in the Hugging Face cache (cinema never downloads while "
                       f"measuring); fetch it once with `huggingface-cli download {repo} {filename}`")
    raise BadInput(f"--aesthetic {weights}: no such file; give the LAION aesthetic predictor's weights as a "
                   "local .pth/.safetensors file or ORG/REPO/FILE in the Hugging Face cache")


def _linear_layers(path: Path) -> list[tuple[np.ndarray, np.ndarray]]:
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import torch

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is the same bad input
        raise BadInput(f"--aesthetic {path}: not a readable weights file ({type(err).__name__}: {err})") from None
    state = state.get("state_dict", state) if isinstance(state, dict) else {}
    weights = [k for k, v in state.items() if k.endswith("weight") and getattr(v, "ndim", 0) == 2]

    def order(key: str) -> list[int]:
        return [int(n) for n in re.findall(r"\d+", key)]

    layers = []
    for key in sorted(weights, key=order):
        weight = state[key].float().numpy()
        bias = state.get(key[: -len("weight")] + "bias")
        layers.append((weight, bias.float().numpy() if bias is not None else np.zeros(weight.shape[0], np.float32)))
    if not layers or layers[-1][0].shape[0] != 1 or any(
            a[0].shape[0] != b[0].shape[1] for a, b in zip(layers, layers[1:])):
        raise BadInput(f"--aesthetic {path}: expected a chain of linear layers ending in one score "
                       "(LAION's aesthetic predictor)")
    return layers
