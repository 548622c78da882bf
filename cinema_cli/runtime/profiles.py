"""Runtime profiles: cinema.yaml's `runtime:` resolved for this machine.

`resolve_runtime` turns the settings (device auto, dtype auto...) into a concrete
`Runtime` and says what it decided; `PROFILE_LADDER` orders the profiles from fastest to
leanest, so a message can name the next one that needs less memory.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass, replace

from cinema_cli.errors import BackendError
from cinema_cli.project.schema import RuntimeSettings

# The package each quantization needs, and the diffusers/transformers backend name.
QUANTIZERS = {"int8": ("bitsandbytes", "bitsandbytes_8bit"), "nf4": ("bitsandbytes", "bitsandbytes_4bit")}


@dataclass(frozen=True)
class Runtime:
    device: str  # cuda | cpu
    dtype: str  # float32 | bfloat16 | float16
    offload: str = "none"
    vae_tiling: bool = False
    quantize: str = "none"
    compile: bool = False

    @property
    def torch_dtype(self):
        import torch

        return getattr(torch, self.dtype)

    def settings(self) -> str:
        """The profile as it would be written under `runtime:` (only what differs from the defaults)."""
        parts = [f"offload: {self.offload}"]
        if self.vae_tiling:
            parts.append("vae_tiling: true")
        if self.quantize != "none":
            parts.append(f"quantize: {self.quantize}")
        return "{" + ", ".join(parts) + "}"


# From most memory (fastest) to least; each step keeps what the one before added.
PROFILE_LADDER: tuple[dict, ...] = (
    {"offload": "none"},
    {"offload": "model"},
    {"offload": "model", "vae_tiling": True},
    {"offload": "group", "vae_tiling": True},
    {"offload": "group", "vae_tiling": True, "quantize": "nf4"},
    {"offload": "sequential", "vae_tiling": True, "quantize": "nf4"},
)


def leaner_profiles(runtime: Runtime) -> list[Runtime]:
    """The ladder's profiles that need less memory than `runtime`: each of offload, tiling
    and quantization at least as lean, one of them leaner. Fastest first."""
    here = _leanness(runtime)
    profiles = [replace(runtime, **{"vae_tiling": False, "quantize": "none", **step}) for step in PROFILE_LADDER]
    return [p for p in profiles if _leanness(p) != here and all(a >= b for a, b in zip(_leanness(p), here))]


def _leanness(runtime: Runtime) -> tuple[int, int, int]:
    return (
        ("none", "model", "group", "sequential").index(runtime.offload),
        int(runtime.vae_tiling),
        ("none", "int8", "nf4").index(runtime.quantize),
    )


@functools.cache
def cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def quantizer_missing(quantize: str) -> str | None:
    """The package a quantization needs when it is not installed, else None."""
    if quantize == "none":
        return None
    package = QUANTIZERS[quantize][0]
    return package if importlib.util.find_spec(package) is None else None


def resolve_runtime(
    settings: RuntimeSettings, who: str, previz: str = "video.backend: animatic"
) -> tuple[Runtime, list[str]]:
    """The concrete profile for this machine, and notices for the user. `who` names the
    backend in messages, `previz` the setting that runs the stage without a GPU. Raises
    BackendError for a profile this machine cannot run."""
    notices: list[str] = []
    cuda = cuda_available()
    device = settings.device
    if device == "auto":
        device = "cuda" if cuda else "cpu"
        if not cuda:
            notices.append(
                f"{who}: no CUDA GPU, so it runs on the CPU (float32; very slow for real models); "
                f"{previz} is the fast CPU previz"
            )
    elif device == "cuda" and not cuda:
        raise BackendError(
            f"{who}: runtime.device is cuda but torch sees no CUDA GPU; set runtime.device: auto "
            f"to run on the CPU (very slow), or {previz} for the CPU previz"
        )
    dtype = settings.dtype
    if dtype == "auto":
        dtype = "bfloat16" if device == "cuda" else "float32"
    offload = settings.offload
    if offload != "none" and device == "cpu":
        notices.append(f"{who}: runtime.offload: {offload} does nothing on the CPU; ignored")
        offload = "none"
    missing = quantizer_missing(settings.quantize)
    if missing:
        raise BackendError(
            f"{who}: runtime.quantize: {settings.quantize} needs the {missing} package, which is not "
            f"installed; pip install {missing}, or set runtime.quantize: none"
        )
    if settings.quantize != "none" and device != "cuda":
        raise BackendError(
            f"{who}: runtime.quantize: {settings.quantize} ({QUANTIZERS[settings.quantize][0]}) needs a CUDA GPU; "
            "set runtime.quantize: none on this machine"
        )
    runtime = Runtime(device, dtype, offload, settings.vae_tiling, settings.quantize, settings.compile)
    return runtime, notices
