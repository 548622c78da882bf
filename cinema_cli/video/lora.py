"""The LoRAs a Wan video backend (`wan`, `keyframe-scene`, `holocine`) renders with:
`lora:` goes into the transformer (on Wan2.2 A14B, the high-noise expert), `lora_2:` into
Wan2.2's second, low-noise expert (`transformer_2`), each at its strength. A file is one
`cinema train video` saved, or one from musubi-tuner, diffusion-pipe, ComfyUI or DiffSynth
(runtime.lora_formats reads them all); the files are declared inputs, so a retrained
adapter makes exactly the shots rendered with it stale.

Each file is checked before anything is written (present, a LoRA of a layout cinema reads,
for this model's modules and shapes), loaded with diffusers' `load_lora_weights`
(`load_into_transformer_2=True` for `lora_2`), then fused into the weights at its strength
and its adapter layers removed. Fused, every denoising step costs what the base model's
does (no extra low-rank matmuls per layer, twice per step with guidance), the model is
plain Linear layers again for the attention processors, context parallelism and
`torch.compile`, and the output is the unfused adapter's up to float rounding (tested).
On quantized weights (runtime.quantize int8/nf4) it is not fused: rounding W + s·BA back
to 8 or 4 bits would lose most of a LoRA's small update, so the adapter stays as peft
layers at its strength (`set_adapters`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, Field

from cinema_cli.errors import BadInput
from cinema_cli.runtime.inputs import FileOption

# option -> the pipeline component it goes into
EXPERTS = {"lora": "transformer", "lora_2": "transformer_2"}
# {component: {module: (out, in)}} of a model's transformers, or None when not known yet
# (weights to be downloaded on first use).
Transformers = dict[str, dict[str, tuple[int, int]]] | None


class VideoLoraOptions(BaseModel):
    # A LoRA file (.safetensors: `cinema train video`, musubi-tuner, diffusion-pipe, ComfyUI,
    # DiffSynth), or a training run / its lora/ folder. Into the transformer; on Wan2.2
    # A14B that is the high-noise expert.
    lora: FileOption = None
    lora_strength: float = Field(1.0, ge=-4.0, le=4.0)  # 0: the base model's output
    # A LoRA for Wan2.2 A14B's second, low-noise expert (transformer_2).
    lora_2: FileOption = None
    lora_2_strength: float = Field(1.0, ge=-4.0, le=4.0)


def lora_file(path: str, who: str, option: str) -> Path:
    """The adapter file `option` names (a file, a training run or its lora/ folder)."""
    from cinema_cli.train.run import lora_weights

    try:
        return lora_weights(path)
    except BadInput:
        raise BadInput(f"{who}: {option}: {path} is neither a .safetensors file, a training run, "
                       "nor its lora/ folder") from None


def lora_files(options: VideoLoraOptions, who: str) -> dict[str, Path]:
    """{option: file} for the backend's `input_files` (hashed into every recipe)."""
    return {option: lora_file(getattr(options, option), who, option) for option in EXPERTS
            if getattr(options, option)}


def pipeline_transformers(pipe) -> dict[str, dict[str, tuple[int, int]]]:
    from cinema_cli.runtime.lora_formats import linear_shapes

    return {c: linear_shapes(getattr(pipe, c)) for c in EXPERTS.values() if getattr(pipe, c, None) is not None}


def config_transformers(configs: dict[str, dict]) -> dict[str, dict[str, tuple[int, int]]]:
    """{component: its Linear layers} of transformers given by config, built on no device."""
    import torch

    from cinema_cli.runtime.lora_formats import linear_shapes
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from diffusers import WanTransformer3DModel

    found = {}
    for component, config in configs.items():
        with torch.device("meta"):
            found[component] = linear_shapes(WanTransformer3DModel.from_config(config))
    return found


def folder_transformers(folder: Path) -> dict[str, dict[str, tuple[int, int]]]:
    """The transformers of a diffusers Wan pipeline folder, from their config files."""
    configs = {}
    for component in EXPERTS.values():
        path = folder / component / "config.json"
        if path.is_file():
            configs[component] = json.loads(path.read_text(encoding="utf-8"))
    return config_transformers(configs)


def _no_second_expert(model: str, who: str) -> BadInput:
    return BadInput(f"{who}: lora_2 is for Wan2.2 A14B's second (low-noise) expert, transformer_2, but {model} "
                    "has a single transformer; use lora: alone")


def preflight_loras(options: VideoLoraOptions, model: str, who: str,
                    transformers: Callable[[], Transformers]) -> None:
    """Before anything is written: each LoRA present and readable, of a layout cinema reads,
    and (when the model is local) for its modules and shapes."""
    from cinema_cli.runtime.lora_formats import read_header, read_lora

    chosen = {option: lora_file(getattr(options, option), who, option) for option in EXPERTS
              if getattr(options, option)}
    if not chosen:
        return
    known = transformers()
    for option, path in chosen.items():
        component = EXPERTS[option]
        if known is None:
            read_header(path, who, option)
        elif component not in known:
            raise _no_second_expert(model, who)
        else:
            read_lora(path, known[component], model, who, option)


def load_loras(pipe, options: VideoLoraOptions, model: str, who: str, fuse: bool | None = None) -> None:
    """Loads `lora` / `lora_2` into the pipeline's experts at their strengths: fused, or
    (on quantized weights, or with fuse=False) as active adapters."""
    from cinema_cli.runtime.lora_formats import linear_shapes, read_lora

    for option, component in EXPERTS.items():
        if not getattr(options, option):
            continue
        transformer = getattr(pipe, component, None)
        if transformer is None:
            raise _no_second_expert(model, who)
        lora = read_lora(lora_file(getattr(options, option), who, option), linear_shapes(transformer), model, who,
                         option)
        name, strength = f"cinema_{option}", getattr(options, f"{option}_strength")
        # diffusers' own layout loads from the file, so diffusers reads its adapter metadata (alpha).
        weights = str(lora.path) if lora.native else lora.state_dict()
        try:
            pipe.load_lora_weights(weights, adapter_name=name, load_into_transformer_2=component == "transformer_2")
        except (RuntimeError, ValueError, KeyError) as err:
            raise BadInput(f"{who}: {option}: {lora.path} ({lora.layout} layout) does not load into {model}'s "
                           f"{component}: {str(err).splitlines()[0]}") from None
        quantized = getattr(transformer, "hf_quantizer", None) is not None
        if fuse if fuse is not None else not quantized:
            transformer.fuse_lora(lora_scale=strength, adapter_names=[name])
            transformer.unload_lora()
        else:
            transformer.set_adapters([name], weights=[strength])
