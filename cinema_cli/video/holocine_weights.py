"""HoloCine's DiT files: found, checked, and converted to diffusers' WanTransformer3DModel.

HoloCine releases only its fine-tuned DiTs, one file per expert and variant
(`full_high_noise.safetensors`, `full_low_noise.safetensors`, `sparse_high_noise...`,
`sparse_low_noise...`), in the original Wan / DiffSynth key layout (`blocks.0.self_attn.q`,
`head.modulation`...). The rest of the model (UMT5 encoder, VAE) is Wan2.2-T2V-A14B's.

A file is checked from its header alone (key names and shapes, no tensors read) before
anything is written: the keys must be a Wan DiT's and the input channels a text-to-video
one's. On first use it is converted with diffusers' own Wan key conversion and written,
with the transformer config it fits, as a diffusers model folder in the user's cache
(`$CINEMA_CACHE`, else `$XDG_CACHE_HOME/cinema`, else `~/.cache/cinema`), never in the
project; later runs load that folder directly. The cache key is the file's path, size and
modification time, so a replaced file is converted again.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.runtime.torch_compat import prepare_torch

EXPERTS = ("high_noise", "low_noise")  # transformer (t >= boundary), transformer_2 (below)
VARIANTS = ("full", "sparse")
# Prefixes some trainers put before the original keys.
PREFIXES = ("model.diffusion_model.", "pipe.dit.", "dit.", "model.")
MODEL_FILE, CONFIG_FILE = "diffusion_pytorch_model.safetensors", "config.json"


def cache_root() -> Path:
    if os.environ.get("CINEMA_CACHE"):
        return Path(os.environ["CINEMA_CACHE"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or "~/.cache").expanduser() / "cinema"


def expert_files(folder: Path, variant: str, who: str) -> dict[str, Path]:
    """{expert: file} of `variant` under `folder` (searched in subfolders too)."""
    found = {}
    for expert in EXPERTS:
        name = f"{variant}_{expert}.safetensors"
        matches = sorted(folder.rglob(name))
        if not matches:
            raise BadInput(
                f"{who}: {folder} has no {name}; HoloCine's {variant} model is two files, "
                f"{variant}_high_noise.safetensors and {variant}_low_noise.safetensors (both experts are needed)"
            )
        found[expert] = matches[0]
    return found


def _strip(keys: list[str]) -> str:
    for prefix in PREFIXES:
        if keys and all(k.startswith(prefix) for k in keys):
            return prefix
    return ""


def diffusers_names(original: dict[str, tuple[int, ...]]) -> dict[str, tuple[int, ...]]:
    """Original-layout key -> shape, renamed to diffusers' layout (shapes unchanged)."""
    prepare_torch()
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    prefix = _strip(list(original))
    placeholders = {k[len(prefix):]: shape for k, shape in original.items()}
    # The conversion only renames keys; run it on the names with the shapes as values.
    return dict(convert_wan_transformer_to_diffusers(placeholders))


def expected_layout(config: dict) -> dict[str, tuple[int, ...]]:
    """diffusers' key -> shape for a WanTransformer3DModel of `config`, built on no device."""
    import torch

    prepare_torch()
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        model = WanTransformer3DModel.from_config(config)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


def read_layout(path: Path, who: str) -> dict[str, tuple[int, ...]]:
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise BadInput(f"{who}: {path} is not a safetensors file: {err}") from err


def check_file(path: Path, config: dict, who: str) -> None:
    """The file is a Wan text-to-video DiT of `config`'s shape, or a BadInput naming it."""
    layout = diffusers_names(read_layout(path, who))
    expected = expected_layout(config)
    patch = layout.get("patch_embedding.weight")
    if patch is not None and len(patch) == 5 and patch[1] != config["in_channels"]:
        kind = "an image-to-video" if patch[1] > config["in_channels"] else "another"
        raise BadInput(
            f"{who}: {path} is {kind} Wan DiT (it reads {patch[1]} input channels); holocine needs HoloCine's "
            f"text-to-video DiT, which reads {config['in_channels']} (Wan2.2-T2V-A14B's)"
        )
    missing = sorted(set(expected) - set(layout))
    unexpected = sorted(set(layout) - set(expected))
    wrong = sorted(k for k in set(expected) & set(layout) if expected[k] != layout[k])
    if missing or unexpected or wrong:
        problems = []
        if missing:
            problems.append(f"{len(missing)} keys missing (e.g. {', '.join(missing[:3])})")
        if unexpected:
            problems.append(f"{len(unexpected)} unexpected (e.g. {', '.join(unexpected[:3])})")
        if wrong:
            k = wrong[0]
            problems.append(f"{len(wrong)} of another shape (e.g. {k}: {layout[k]}, expected {expected[k]})")
        raise BadInput(
            f"{who}: {path} is not a HoloCine/Wan DiT in the original key layout for this model: "
            + "; ".join(problems)
        )


def converted_folder(path: Path, config: dict, who: str) -> Path:
    """A diffusers model folder holding `path` converted (made once, then reused)."""
    stat = path.stat()
    identity = json.dumps([str(path.resolve()), stat.st_size, stat.st_mtime_ns, config], sort_keys=True, default=str)
    folder = cache_root() / "holocine" / hashlib.sha256(identity.encode()).hexdigest()[:20]
    if (folder / MODEL_FILE).is_file() and (folder / CONFIG_FILE).is_file():
        return folder
    check_file(path, config, who)
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers
    from safetensors.torch import load_file, save_file

    state = load_file(str(path))
    prefix = _strip(list(state))
    state = convert_wan_transformer_to_diffusers({k[len(prefix):]: v for k, v in state.items()})
    partial = folder.with_name(folder.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    save_file({k: v.contiguous() for k, v in state.items()}, str(partial / MODEL_FILE))
    (partial / CONFIG_FILE).write_text(json.dumps({"_class_name": "WanTransformer3DModel", **config}, indent=2))
    shutil.rmtree(folder, ignore_errors=True)
    partial.rename(folder)  # whole or not at all: an interrupted conversion is redone
    return folder
