"""Loading pretrained diffusers pipelines and applying a runtime profile to them.

Weights come from the Hugging Face cache or a local folder. With HF_HUB_OFFLINE=1
nothing is ever downloaded (`local_files_only`), and missing weights are a message that
names the id and the command that fetches them.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable
from pathlib import Path

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.runtime.profiles import QUANTIZERS, Runtime


def hub_offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")


def local_folder(model: str) -> Path | None:
    """The folder holding `model` (a local path, or a Hub id in the local cache), or None."""
    if Path(model).expanduser().is_dir():
        return Path(model).expanduser()
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import HFValidationError

    try:
        return Path(snapshot_download(model, local_files_only=True))
    except (OSError, HFValidationError):
        return None


def missing_weights(model: str, who: str) -> BackendError:
    return BackendError(
        f"{who}: the weights of {model} are not on this machine, and HF_HUB_OFFLINE=1 forbids "
        f"downloading them; fetch them with `huggingface-cli download {model}` (or point the "
        "backend's `model:` option at a local folder that holds them)"
    )


def missing_folder(model: str, who: str) -> None:
    """Refuse a model named by a path (made absolute: runtime.inputs) with no folder there;
    a Hub id is never absolute, and may be downloaded."""
    if Path(model).is_absolute() and not Path(model).is_dir():
        raise BadInput(f"{who}: the model folder {model} does not exist")


def preflight_weights(model: str, runtime: Runtime, who: str, notices: list[str]) -> Path | None:
    """The first checks of every model backend's preflight: the folder of `model`'s
    weights to check further, or None when there is nothing on disk to check — the tiny
    preset, or weights downloaded on first use (told in `notices`). Offline and absent,
    or a folder that is not there, is an error."""
    from cinema_cli.runtime.tiny import is_tiny

    if is_tiny(model):
        if runtime.quantize != "none":
            notices.append(f"{who}: the tiny preset is not quantized (runtime.quantize applies to pretrained weights)")
        return None
    missing_folder(model, who)
    folder = local_folder(model)
    if folder is None:
        if hub_offline():
            raise missing_weights(model, who)
        notices.append(f"{who}: {model} is not in the local cache; it is downloaded on first use")
    return folder


def load_pretrained(pipeline_cls, model: str, runtime: Runtime, who: str,
                    before_profile: Callable[[object], None] | None = None, **components):
    """`pipeline_cls.from_pretrained(model)` with the profile's dtype and quantization,
    then `before_profile` (e.g. LoRAs loaded), then the profile applied. `components`
    replace the folder's own (already loaded)."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    if importlib.util.find_spec("accelerate") is None:
        # diffusers loads models that keep some modules in float32 (Wan's) only with it.
        raise BackendError(f"{who}: loading pretrained weights needs the accelerate package; pip install accelerate")
    prepare_torch()
    from diffusers.utils import deprecation_utils
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    # diffusers renamed `torch_dtype` to `dtype` (with a deprecation); older versions know only the first.
    dtype_key = "dtype" if hasattr(deprecation_utils, "_resolve_dtype") else "torch_dtype"
    kwargs: dict = {dtype_key: runtime.torch_dtype}
    if hub_offline():
        kwargs["local_files_only"] = True
    if runtime.quantize != "none":
        kwargs["quantization_config"] = _quantization(model, runtime)
    # Progress is cinema's to show; the libraries' loading bars stay off.
    diffusers_logging.disable_progress_bar()
    transformers_logging.disable_progress_bar()
    try:
        pipe = pipeline_cls.from_pretrained(model, **kwargs, **components)
    except (OSError, ValueError) as err:
        if local_folder(model) is None and hub_offline():
            raise missing_weights(model, who) from None
        raise BackendError(f"{who}: cannot load {model}: {err}") from err
    if before_profile is not None:
        before_profile(pipe)
    apply_profile(pipe, runtime)
    return pipe


def _quantization(model: str, runtime: Runtime):
    from diffusers import PipelineQuantizationConfig

    folder = local_folder(model)
    components = ["transformer", "text_encoder"]
    if folder is not None and (folder / "transformer_2").is_dir():
        components.append("transformer_2")
    kwargs = {"load_in_8bit": True} if runtime.quantize == "int8" else {
        "load_in_4bit": True, "bnb_4bit_quant_type": "nf4", "bnb_4bit_compute_dtype": runtime.torch_dtype,
    }
    return PipelineQuantizationConfig(
        quant_backend=QUANTIZERS[runtime.quantize][1], quant_kwargs=kwargs, components_to_quantize=components
    )


def apply_profile(pipe, runtime: Runtime) -> None:
    """Device and offload, VAE tiling and regional compilation, as the profile says."""
    import torch

    # Progress goes through cinema's reporter, never diffusers' own bars.
    pipe.set_progress_bar_config(disable=True)
    device = torch.device(runtime.device)
    if runtime.offload in ("model", "sequential") and importlib.util.find_spec("accelerate") is None:
        raise BackendError(
            f"runtime.offload: {runtime.offload} needs the accelerate package; pip install accelerate, "
            "or use runtime.offload: group (no extra package)"
        )
    if runtime.offload == "none":
        pipe.to(device)
    elif runtime.offload == "model":
        pipe.enable_model_cpu_offload(device=device)
    elif runtime.offload == "group":
        pipe.enable_group_offload(onload_device=device, offload_type="block_level", num_blocks_per_group=1)
    else:
        pipe.enable_sequential_cpu_offload(device=device)
    if runtime.vae_tiling:
        pipe.vae.enable_tiling()
    if runtime.compile:
        for name in ("transformer", "transformer_2"):
            model = getattr(pipe, name, None)
            if model is not None:
                model.compile_repeated_blocks(fullgraph=True)
