"""Where an open_clip model's weights are on this machine, found without downloading.

`memory.model` + `memory.weights` in cinema.yaml name them: a model name with an
open_clip pretrained tag (looked up in the Hugging Face cache), a model name with a
local file, `hf-hub:ORG/REPO` (its cached snapshot), or `random` (seeded random
weights: the plumbing runs, nothing meaningful is retrieved). Planning never downloads:
weights that are not here are bad input, named with the command that fetches them.
Weights may live outside the project (model caches do); they load with
`weights_only=True` or from safetensors.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.runtime.torch_compat import prepare_torch

RANDOM = "random"
TINY_CONFIGS = Path(__file__).resolve().parents[1] / "runtime" / "open_clip_configs"


class WeightsMissing(BadInput):
    """memory.model or memory.weights (the `field`) names weights this machine does not have."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


@dataclass(frozen=True)
class ClipWeights:
    model: str  # what open_clip.create_model gets: a model name, or local-dir:FOLDER
    checkpoint: str | None  # a file of weights, None when `model` carries them or for random
    identity: str  # names exactly these weights: keys the embedding index
    random: bool = False
    # What a pretrained tag tells open_clip besides its file: loaded from the file, the
    # tag's activation (OpenAI's QuickGELU) and image preprocessing must be passed along.
    quick_gelu: bool = False
    preprocess: tuple[tuple[str, object], ...] = ()


@functools.cache
def open_clip_module():
    """open_clip, imported safely, with cinema's tiny model configs registered."""
    prepare_torch()
    import open_clip

    open_clip.add_model_config(TINY_CONFIGS)
    return open_clip


def resolve_clip_weights(model: str, weights: str | None, root: Path) -> ClipWeights:
    if model.startswith("hf-hub:"):
        return _hub_snapshot(model.removeprefix("hf-hub:"))
    if weights is None:  # said before open_clip is imported: that takes seconds
        raise WeightsMissing(
            "weights", f"the embedder needs weights for {model}: an open_clip pretrained tag "
            "(open_clip.list_pretrained_tags_by_model lists them), a local file, or `random` "
            "(plumbing tests only); or use `embedder: lexical`, which needs none"
        )
    open_clip = open_clip_module()
    if open_clip.get_model_config(model) is None:
        raise WeightsMissing(
            "model", f"{model!r} is not an open_clip model (e.g. ViT-B-32, ViT-L-14, "
            "or hf-hub:ORG/REPO)"
        )
    if weights == RANDOM:
        return ClipWeights(model, None, f"{model}:{RANDOM}", random=True)
    local = (root / Path(weights).expanduser()).resolve()
    if local.is_file():
        stat = local.stat()
        problem = _unsafe_checkpoint(str(local), stat.st_size, stat.st_mtime_ns)
        if problem:
            raise WeightsMissing("weights", f"{local} cannot be loaded safely: {problem}")
        return ClipWeights(model, str(local), f"{model}:{local}:{stat.st_size}:{stat.st_mtime_ns}")
    tag = open_clip.get_pretrained_cfg(model, weights)
    if not tag:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(model)) or "none"
        raise WeightsMissing(
            "weights", f"{weights!r} is neither a file (looked for {local}) nor an open_clip "
            f"pretrained tag of {model} (tags: {tags})"
        )
    found = _cached_tag_file(tag)
    if found is None:
        raise WeightsMissing(
            "weights", f"the open_clip weights {model}/{weights} are not on this machine "
            "(cinema never downloads while planning); fetch them once with "
            f"`python -c \"import open_clip; open_clip.create_model('{model}', pretrained='{weights}')\"`, "
            "or point memory.weights at a local file"
        )
    preprocess = tuple((k, tag[k]) for k in ("mean", "std", "interpolation", "resize_mode") if k in tag)
    return ClipWeights(model, found, f"{model}:{weights}", quick_gelu=bool(tag.get("quick_gelu")),
                       preprocess=preprocess)


@functools.cache
def _unsafe_checkpoint(path: str, size: int, mtime_ns: int) -> str | None:
    """Why a local weights file would not load (None when it does): safetensors, or a
    torch file that `weights_only=True` accepts (no pickled code). Checked when the
    project is opened, so `status` already says it, not a render after its first
    keyframe. Memory-mapped: nothing but the header and the pickle is read."""
    import pickle

    import torch

    advice = "cinema loads only safetensors, or torch files that load with weights_only=True"
    try:
        if path.endswith(".safetensors"):
            from safetensors import safe_open

            with safe_open(path, framework="pt") as f:
                f.keys()
        else:
            try:
                torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except RuntimeError as err:
                if "mmap" not in str(err):
                    raise
                torch.load(path, map_location="cpu", weights_only=True)  # the legacy format
    except pickle.UnpicklingError as err:
        if "unsupported global" in str(err).lower():  # code or classes, not just tensors
            return f"it holds pickled objects other than tensors, which weights_only=True refuses ({advice})"
        return f"not a readable checkpoint ({advice})"
    except Exception as err:  # noqa: BLE001 - a damaged file makes the loaders raise many kinds
        first = (str(err).strip().splitlines() or [""])[0]
        return f"not a readable checkpoint ({type(err).__name__}: {first[:200]}; {advice})"
    return None


def transformers_folder(weights: str | None, root: Path) -> Path | None:
    """`weights` as a local transformers model folder (one with a config.json), or None."""
    if weights is None:
        return None
    folder = (root / Path(weights).expanduser()).resolve()
    return folder if (folder / "config.json").is_file() else None


def _cached_tag_file(tag: dict) -> str | None:
    """The cached file of a pretrained tag: on the Hugging Face hub, or a plain URL's
    download in open_clip's own cache."""
    if tag.get("file"):
        return tag["file"] if Path(tag["file"]).is_file() else None
    if tag.get("hf_hub"):
        from huggingface_hub import try_to_load_from_cache

        # "ORG/REPO/FILE", or "ORG/REPO/" for the default file (as open_clip splits it).
        repo, filename = os.path.split(tag["hf_hub"])
        for name in filter(None, (filename, "open_clip_model.safetensors", "open_clip_pytorch_model.bin")):
            found = try_to_load_from_cache(repo, name)
            if isinstance(found, str):
                return found
    if tag.get("url"):
        cached = Path("~/.cache/clip").expanduser() / Path(tag["url"]).name
        if cached.is_file():
            return str(cached)
    return None


def _hub_snapshot(repo: str) -> ClipWeights:
    from huggingface_hub import try_to_load_from_cache

    config = try_to_load_from_cache(repo, "open_clip_config.json")
    if isinstance(config, str):
        folder = Path(config).parent
        if any((folder / n).is_file() for n in ("open_clip_model.safetensors", "open_clip_pytorch_model.bin")):
            return ClipWeights(f"local-dir:{folder}", None, f"hf-hub:{repo}@{folder.name}")
    raise WeightsMissing(
        "model", f"hf-hub:{repo} is not in the Hugging Face cache (cinema never downloads "
        f"while planning); fetch it once with `huggingface-cli download {repo}`"
    )
