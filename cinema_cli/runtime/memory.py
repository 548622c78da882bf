"""GPU memory: a preflight estimate from a model's configs, and out-of-memory as a message.

The estimate is deliberately simple and errs high: resident weights (which the offload
profile decides), plus the larger of one transformer block's activations and the VAE's
decode peak, plus a fixed reserve for the CUDA context and fragmentation. It is computed
from the model's config files (parameters counted on the meta device, nothing loaded),
so a profile that cannot fit stops before minutes of loading.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.runtime.profiles import Runtime, leaner_profiles, quantizer_missing

GiB = 1024**3
RESERVE = GiB * 3 // 4
# The Wan VAE decodes a causal chunk of 4 frames; its widest full-resolution stage holds
# about this many feature maps of `base_dim` channels alive at once.
VAE_FRAMES, VAE_LIVE_MAPS = 4, 4
TILE_PIXELS = 256 * 256  # diffusers' default VAE tile


@dataclass(frozen=True)
class ModelSize:
    params: dict[str, int]  # component -> parameter count
    quantizable: tuple[str, ...]  # components that runtime.quantize applies to
    hidden: int  # transformer width
    ffn: int  # transformer feed-forward width
    layers: int  # transformer blocks
    vae_channels: int  # VAE base channels
    vae_frames: int = VAE_FRAMES  # frames the VAE decodes at once (an image VAE: 1)


def _bytes_per_param(runtime: Runtime, quantized: bool) -> float:
    if quantized and runtime.quantize == "int8":
        return 1.0
    if quantized and runtime.quantize == "nf4":
        return 0.56  # 4 bits plus block scales
    return 4.0 if runtime.dtype == "float32" else 2.0


def weights_bytes(size: ModelSize, runtime: Runtime) -> float:
    """The weights resident on a GPU with this profile's offload."""
    weights = {
        name: count * _bytes_per_param(runtime, name in size.quantizable) for name, count in size.params.items()
    }
    if runtime.offload == "none":
        return sum(weights.values())
    if runtime.offload == "model":
        return max(weights.values())
    return 2 * max(weights.values()) / max(size.layers, 1)  # group / sequential: a block or two at a time


def need_bytes(size: ModelSize, runtime: Runtime, tokens: int, pixels: int, cp: int = 1) -> int:
    """Estimated peak GPU memory to denoise `tokens` transformer tokens and decode frames
    of `pixels` pixels with this profile, on each of `cp` context-parallel GPUs: the
    weights and the VAE decode on every GPU, a block's activations split `cp` ways (plus
    the exchange buffers: Q/K/V sent and received, or two K/V slices of the ring)."""
    resident = weights_bytes(size, runtime)
    act_bytes = 4 if runtime.dtype == "float32" else 2
    local = -(-tokens // cp)
    block = local * (size.ffn + 6 * size.hidden + (6 * size.hidden if cp > 1 else 0)) * act_bytes
    decode = min(pixels, TILE_PIXELS) if runtime.vae_tiling else pixels
    vae = decode * size.vae_frames * VAE_LIVE_MAPS * size.vae_channels * act_bytes
    return int(resident + max(block, vae) + RESERVE)


def check_fits(size: ModelSize, runtime: Runtime, tokens: int, pixels: int, free: int, who: str,
               cp: int = 1, degrees: tuple[int, ...] = ()) -> None:
    """Stop before loading when the profile will not fit in `free` bytes (per GPU, split
    over `cp` GPUs); name a context-parallel split over more of this machine's GPUs
    (`degrees`: those the model can be split over) or a leaner profile that would."""
    need = need_bytes(size, runtime, tokens, pixels, cp)
    if need <= free:
        return
    split = f" per GPU, split over {cp} GPUs" if cp > 1 else ""
    have = f"{who}: needs about {need / GiB:.1f} GiB of GPU memory{split} with runtime {runtime.settings()}, " \
           f"and {free / GiB:.1f} GiB is free"
    for degree in sorted(d for d in degrees if d > cp):
        per_gpu = need_bytes(size, runtime, tokens, pixels, degree)
        if per_gpu <= free:
            raise BackendError(
                f"{have}; split over {degree} GPUs it needs about {per_gpu / GiB:.1f} GiB on each "
                f"(weights {weights_bytes(size, runtime) / GiB:.1f} GiB on every GPU, the activations split): "
                f"cinema render --cp {degree}"
            )
    for profile in leaner_profiles(runtime):
        lean = need_bytes(size, profile, tokens, pixels, cp)
        if lean <= free:
            package = quantizer_missing(profile.quantize)
            extra = f" (pip install {package})" if package else ""
            raise BackendError(
                f"{have}; set runtime: {profile.settings()} in cinema.yaml{extra}, which needs about "
                f"{lean / GiB:.1f} GiB"
            )
    raise BackendError(
        f"{have}; even the leanest runtime profile does not fit. Lower the resolution or the shot "
        "lengths, or use a smaller model"
    )


@dataclass(frozen=True)
class SceneMemory:
    """What the longest scene (or shot) of a render asks of a GPU, from the configs alone:
    the inputs of `need_bytes`, and what context parallelism can split (`possible_degrees`)."""

    label: str  # which scene, for messages
    size: ModelSize
    runtime: Runtime
    tokens: int
    pixels: int
    tokens_per_frame: int
    heads: int | None

    def need(self, cp: int = 1) -> int:
        return need_bytes(self.size, self.runtime, self.tokens, self.pixels, cp)


def split_degree(scene: SceneMemory, free: int, degrees: tuple[int, ...]) -> tuple[int, str | None]:
    """The context-parallel degree to render `scene` with when `free` bytes are free on each
    GPU and it may be split over any of `degrees` (those the model, the resolution and the
    GPUs allow, ascending): 1 when one GPU holds it, else the smallest degree whose share
    fits, with a notice saying so. BadInput with the numbers when even the largest does not."""
    one = scene.need()
    if one <= free:
        return 1, None
    for degree in degrees:
        each = scene.need(degree)
        if each <= free:
            return degree, (f"{scene.label} needs ~{one / GiB:.1f} GiB of GPU memory, {free / GiB:.1f} GiB is free "
                            f"on each GPU; split over {degree} GPUs: ~{each / GiB:.1f} GiB each "
                            f"(render --cp {degree})")
    most = max(degrees, default=1)
    split = (f"split over {most} GPUs it still needs ~{scene.need(most) / GiB:.1f} GiB on each (the weights, "
             f"{weights_bytes(scene.size, scene.runtime) / GiB:.1f} GiB, are on every GPU)" if most > 1 else
             "it cannot be split over these GPUs (context parallelism divides the tokens of a frame and, with "
             "Ulysses, the attention heads)")
    raise BadInput(f"{scene.label} needs ~{one / GiB:.1f} GiB of GPU memory with runtime {scene.runtime.settings()}, "
                   f"and {free / GiB:.1f} GiB is free on each GPU; {split}. Set a leaner runtime profile "
                   "(runtime.offload, runtime.quantize), or lower the resolution or the shot lengths")


def free_gpu_bytes() -> int:
    import torch

    return torch.cuda.mem_get_info()[0]


def free_gpu_bytes_each(gpus: int) -> int:
    """The least free memory of GPUs 0..gpus-1, asked in a short-lived process: asking here
    would leave a CUDA context on every GPU in the process that launches the ranks."""
    import subprocess
    import sys

    probe = f"import torch; print(min(torch.cuda.mem_get_info(i)[0] for i in range({gpus})))"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    if result.returncode:
        raise BackendError(f"could not ask the GPUs how much memory is free: {result.stderr.strip()[-500:]}")
    return int(result.stdout.strip().splitlines()[-1])


def model_size(folder: Path) -> ModelSize:
    """Parameter counts and transformer shape of a diffusers pipeline folder, from its
    config files only: every component is instantiated on the meta device."""
    import torch

    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    import diffusers
    import transformers

    index = json.loads((folder / "model_index.json").read_text(encoding="utf-8"))
    params: dict[str, int] = {}
    shape: dict = {}
    for name, entry in index.items():
        if name.startswith("_") or not isinstance(entry, list) or entry[0] not in ("diffusers", "transformers"):
            continue
        config_path = folder / name / "config.json"
        if not config_path.is_file():
            continue
        library, class_name = entry
        cls = getattr(diffusers if library == "diffusers" else transformers, class_name)
        with torch.device("meta"):
            if library == "diffusers":
                config = cls.load_config(folder / name)
                model = cls.from_config(config)
            else:
                config = transformers.AutoConfig.from_pretrained(folder / name)
                model = cls(config)
        params[name] = sum(p.numel() for p in model.parameters())
        if name == "transformer":
            hidden = config["num_attention_heads"] * config["attention_head_dim"]
            shape = {
                "hidden": hidden,
                # FLUX.2 gives its feed-forward width as a ratio, and has single-stream blocks too.
                "ffn": config.get("ffn_dim") or int(hidden * config.get("mlp_ratio", 4.0)),
                "layers": config["num_layers"] + config.get("num_single_layers", 0),
            }
        elif name == "vae":
            shape["vae_channels"] = (config.get("decoder_base_dim") or config.get("base_dim")
                                     or config["block_out_channels"][0])
    return ModelSize(
        params=params,
        quantizable=tuple(n for n in params if n.startswith(("transformer", "text_encoder"))),
        hidden=shape.get("hidden", 0),
        ffn=shape.get("ffn", 0),
        layers=shape.get("layers", 1),
        vae_channels=shape.get("vae_channels", 0),
    )


@contextlib.contextmanager
def out_of_memory_is_a_message(runtime: Runtime, who: str, what: str) -> Iterator[None]:
    """Turn CUDA out-of-memory into a message naming a leaner profile. The artifact in
    flight is never published, so the project stays as it was before it."""
    import torch

    try:
        yield
    except torch.cuda.OutOfMemoryError:
        torch.cuda.empty_cache()
        leaner = leaner_profiles(runtime)
        hint = f"try runtime: {leaner[0].settings()} in cinema.yaml" if leaner else \
            "lower the resolution or the shot lengths, or use a smaller model"
        raise BackendError(
            f"{who}: out of GPU memory while rendering {what} with runtime {runtime.settings()}; {hint}. "
            "What is already rendered is kept, and `cinema render` goes on from here"
        ) from None
