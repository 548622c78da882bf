"""Wan LoRA files in the layouts the common trainers write, read into diffusers' own.

What each layout looks like (one module, Wan's first self-attention query):

    diffusers / cinema train    transformer.blocks.0.attn1.to_q.lora_A.weight / lora_B.weight
                                (the adapter's alpha in the file's metadata, which diffusers reads)
    musubi-tuner                lora_unet_blocks_0_self_attn_q.lora_down.weight / lora_up.weight + .alpha
    diffusion-pipe              diffusion_model.blocks.0.self_attn.q.lora_A.weight / lora_B.weight
    ComfyUI                     diffusion_model.blocks.0.self_attn.q.lora_down.weight / lora_up.weight + .alpha
    DiffSynth                   blocks.0.self_attn.q.lora_A.default.weight / lora_B.default.weight (peft's
                                adapter name left in; sometimes `pipe.dit.` before it)

The module names are Wan's original ones (`self_attn.q`, `cross_attn.k_img`, `ffn.0`,
`head.head`, `time_projection.1`...) or diffusers' (`attn1.to_q`, `attn2.add_k_proj`,
`ffn.net.0.proj`, `proj_out`, `condition_embedder.time_proj`...). Rather than a converter
per trainer, every key is read the same way — a known prefix, a module, a known suffix —
and the module is looked up among the model's own Linear layers under each of its names:
diffusers', the original one (checked against diffusers' own Wan key conversion), and both
with underscores for dots (musubi's). So any mix of prefix, naming and suffix loads, a
LoRA trained on only some modules loads, and a LoRA for another model is caught by its
modules or shapes, before a tensor is read.

`.alpha` (kohya's convention: the update is alpha/rank x B A; no alpha means alpha = rank)
is folded into lora_A, so what diffusers loads is the plain update B A. diffusers' own
converters (`_convert_musubi_wan_lora_to_diffusers`, `_convert_non_diffusers_wan_lora_to_diffusers`)
are not used: they need every block to carry every module with its alpha (musubi), or a
`diffusion_model.` prefix and no alpha on the non-block modules, and neither reads
DiffSynth's `.default` keys.

Refused (BadInput, with a few of the keys and their count): keys of no LoRA layout this
reads (DoRA scales, full-weight `.diff`, bias `.diff_b`, LoKr...), and keys of a LoRA for
another architecture (modules the model has not, or of other shapes).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BadInput

# Prefixes trainers put before the module name; the first that matches is removed.
PREFIXES = ("base_model.model.", "model.diffusion_model.", "diffusion_model.", "pipe.dit.", "dit.", "transformer.",
            "lora_unet_", "lora_transformer_")
KEY = re.compile(r"^(?P<module>.+?)\.(?:(?P<part>lora_A|lora_B|lora_down|lora_up)(?:\.(?P<adapter>\w+))?\.weight"
                 r"|(?P<alpha>alpha))$")
DOWN, UP = ("lora_A", "lora_down"), ("lora_B", "lora_up")

# diffusers' Wan module names -> the original ones (whole names, then name parts).
ORIGINAL_NAMES = {
    "condition_embedder.time_embedder.linear_1": "time_embedding.0",
    "condition_embedder.time_embedder.linear_2": "time_embedding.2",
    "condition_embedder.text_embedder.linear_1": "text_embedding.0",
    "condition_embedder.text_embedder.linear_2": "text_embedding.2",
    "condition_embedder.time_proj": "time_projection.1",
    "condition_embedder.image_embedder.ff.net.0.proj": "img_emb.proj.1",
    "condition_embedder.image_embedder.ff.net.2": "img_emb.proj.3",
    "proj_out": "head.head",
}
ORIGINAL_PARTS = {"attn1": "self_attn", "attn2": "cross_attn", "to_q": "q", "to_k": "k", "to_v": "v",
                  "to_out.0": "o", "add_k_proj": "k_img", "add_v_proj": "v_img", "ffn.net.0.proj": "ffn.0",
                  "ffn.net.2": "ffn.2"}
SHOWN = 5  # keys named in a refusal


@dataclass(frozen=True)
class ModuleLora:
    down: str  # the file's key of lora_A / lora_down
    up: str
    alpha: str | None


@dataclass(frozen=True)
class WanLora:
    """A LoRA file read against one transformer: which of its keys go where."""

    path: Path
    layout: str  # what wrote it, in words
    # diffusers' own layout: loaded from the file as it is, so its adapter metadata (alpha) is read by diffusers.
    native: bool
    modules: dict[str, ModuleLora]  # diffusers module name -> its keys in the file

    def state_dict(self) -> dict:
        """{transformer.<module>.lora_A/B.weight: tensor}, alpha folded into lora_A."""
        import torch
        from safetensors import safe_open

        state = {}
        with safe_open(str(self.path), framework="pt") as f:
            for module, keys in self.modules.items():
                down, up = f.get_tensor(keys.down), f.get_tensor(keys.up)
                if keys.alpha is not None:
                    scale = f.get_tensor(keys.alpha).to(torch.float64).item() / down.shape[0]
                    down = (down.to(torch.float32) * scale).to(down.dtype)
                state[f"transformer.{module}.lora_A.weight"] = down
                state[f"transformer.{module}.lora_B.weight"] = up
        return state


def linear_shapes(model) -> dict[str, tuple[int, int]]:
    """{module name: (out, in)} of a model's Linear layers (quantized ones too: they subclass it)."""
    import torch

    return {name: (m.out_features, m.in_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)}


def original_name(module: str) -> str:
    """Wan's original name of a diffusers module (e.g. blocks.0.attn1.to_q -> blocks.0.self_attn.q)."""
    if module in ORIGINAL_NAMES:
        return ORIGINAL_NAMES[module]
    name = f".{module}."
    for ours, theirs in ORIGINAL_PARTS.items():
        name = name.replace(f".{ours}.", f".{theirs}.")
    return name[1:-1]


def module_names(linears: dict[str, tuple[int, int]]) -> dict[str, str]:
    """Every name a trainer may give a module -> its diffusers name. The original names
    are kept only where diffusers' own Wan conversion maps them back to the module."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from diffusers.loaders.single_file_utils import convert_wan_transformer_to_diffusers

    originals = {original_name(m): m for m in linears}
    converted = convert_wan_transformer_to_diffusers({f"{o}.weight": m for o, m in originals.items()})
    agreed = {o: m for o, m in originals.items() if converted.get(f"{m}.weight") == m}
    names: dict[str, str | None] = {}
    for name, module in [(m, m) for m in linears] + list(agreed.items()):
        for alias in (name, name.replace(".", "_")):
            names[alias] = module if names.get(alias, module) == module else None  # ambiguous: neither
    return {alias: module for alias, module in names.items() if module is not None}


def read_header(path: Path, who: str, option: str) -> dict[str, tuple[int, ...]]:
    """{key: shape} of a safetensors file, read from its header alone."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a bad header
        raise BadInput(f"{who}: {option}: {path} is not a readable safetensors LoRA file: {err}") from None


def _examples(keys: list[str]) -> str:
    return ", ".join(keys[:SHOWN]) + (f" (and {len(keys) - SHOWN} more)" if len(keys) > SHOWN else "")


def read_lora(path: Path, linears: dict[str, tuple[int, int]], model: str, who: str, option: str) -> WanLora:
    """The file's keys read against a transformer's Linear layers (`linears`, of `model`):
    a WanLora, or a BadInput naming what did not fit. Reads the header only."""
    header = read_header(path, who, option)
    names = module_names(linears)
    found: dict[str, dict[str, str]] = {}
    unknown, foreign, prefixes, styles, adapters, kinds = [], [], set(), set(), set(), set()
    for key in header:
        prefix = next((p for p in PREFIXES if key.startswith(p)), "")
        match = KEY.match(key[len(prefix):])
        if match is None:
            unknown.append(key)
            continue
        name = match["module"]
        module = names.get(name)
        if module is None:
            foreign.append(key)
            continue
        prefixes.add(prefix)
        kinds.add("diffusers" if name in linears else "original")
        part = "alpha" if match["alpha"] else "down" if match["part"] in DOWN else "up"
        if part != "alpha":
            styles.add(match["part"])
            adapters.add(match["adapter"])
        if part in found.setdefault(module, {}):
            unknown.append(key)  # the same module twice, under two names
        found[module][part] = key
    if not header:
        raise BadInput(f"{who}: {option}: {path} holds no tensors; it is not a LoRA")
    if unknown:
        raise BadInput(
            f"{who}: {option}: {path} is in a LoRA layout cinema does not know: {len(unknown)} of its "
            f"{len(header)} keys are not lora_A/lora_B (peft, diffusers, DiffSynth), lora_down/lora_up + alpha "
            f"(musubi-tuner, ComfyUI) of a module: {_examples(unknown)}"
        )
    if foreign:
        raise BadInput(
            f"{who}: {option}: {path} is a LoRA for another architecture: {len(foreign)} of its {len(header)} keys "
            f"name modules {model}'s transformer does not have: {_examples(foreign)}"
        )
    modules, wrong = {}, []
    for module, parts in found.items():
        if "down" not in parts or "up" not in parts:
            have = ", ".join(parts.values())
            raise BadInput(f"{who}: {option}: {path} is incomplete: {module} has only {have} (a LoRA module needs "
                           "both its down (lora_A) and up (lora_B) weights)")
        out_features, in_features = linears[module]
        down, up = header[parts["down"]], header[parts["up"]]
        alpha = parts.get("alpha")
        if len(down) != 2 or len(up) != 2 or down[1] != in_features or up[0] != out_features or down[0] != up[1] \
                or (alpha is not None and math.prod(header[alpha]) != 1):
            wrong.append(f"{module}: {list(up)} x {list(down)}, the layer is {out_features} x {in_features}")
        modules[module] = ModuleLora(parts["down"], parts["up"], alpha)
    if wrong:
        raise BadInput(
            f"{who}: {option}: {path} is a LoRA for another architecture or size: {len(wrong)} of its "
            f"{len(modules)} modules do not fit {model}'s layers: {_examples(wrong)}"
        )
    native = prefixes == {"transformer."} and kinds == {"diffusers"} and styles <= {"lora_A", "lora_B"} \
        and adapters == {None} and not any(m.alpha for m in modules.values())
    return WanLora(path, _layout(prefixes, styles, adapters, kinds, native), native, modules)


def _layout(prefixes: set, styles: set, adapters: set, kinds: set, native: bool) -> str:
    if native:
        return "diffusers"
    if "lora_unet_" in prefixes:
        return "musubi-tuner"
    if adapters - {None}:
        return "DiffSynth (peft)"
    if prefixes & {"diffusion_model.", "model.diffusion_model."}:
        return "ComfyUI" if "lora_down" in styles else "diffusion-pipe"
    return f"{'/'.join(sorted(kinds))} module names, {'/'.join(sorted(styles))}"

