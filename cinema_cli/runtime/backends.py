"""Choosing a stage's backend when cinema.yaml says `auto`.

`auto` means: the GPU model backend when a CUDA GPU and its weights are present, else the
CPU previz backend, and say which was chosen and why. The checks are cheap, so `cinema
status` stays instant: the GPU is seen through the NVIDIA driver (no torch import), the
weights through the Hugging Face cache (no network).
"""

from __future__ import annotations

import os
from pathlib import Path

PREVIZ = {"keyframes": "sketch", "video": "animatic"}
# stage -> the GPU backend `auto` picks when a GPU and its default weights are here.
GPU_BACKENDS = {"keyframes": "flux2", "video": "wan"}


def nvidia_gpu_visible() -> bool:
    if os.environ.get("CUDA_VISIBLE_DEVICES") in ("", "-1"):
        return False
    gpus = Path("/proc/driver/nvidia/gpus")
    return gpus.is_dir() and any(gpus.iterdir())


def default_model(stage: str) -> str:
    """The weights the GPU backend of `stage` uses when cinema.yaml names none: asked of
    the backend, with its default options."""
    from cinema_cli.keyframes.base import keyframe_backends
    from cinema_cli.runtime.inputs import weights_of
    from cinema_cli.video.base import shot_backends

    cls = (keyframe_backends if stage == "keyframes" else shot_backends).get(GPU_BACKENDS[stage])
    return weights_of(cls, cls.Options())[0]


def resolve_backend(stage: str, configured: str) -> tuple[str, str | None]:
    """(backend name, notice for the user or None)."""
    if configured != "auto":
        return configured, None
    chosen, gpu = PREVIZ[stage], GPU_BACKENDS[stage]
    if not nvidia_gpu_visible():
        reason = "no CUDA GPU"
    else:
        from cinema_cli.runtime.loading import local_folder

        model = default_model(stage)
        if local_folder(model) is not None:
            return gpu, f"{stage}: auto -> {gpu} ({model} on the GPU)"
        reason = f"the weights of {model} are not downloaded; `huggingface-cli download {model}` fetches them"
    return chosen, f"{stage}: auto -> {chosen} (CPU previz; {reason})"
