"""Captions from a local vision-language model: a transformers image-text-to-text model
(Qwen2-VL, SmolVLM, Idefics, LLaVA...) saved in a folder on this machine, never fetched.

The prompt is the Gemini one (caption_frame.txt with the cast) plus the JSON shape to
answer in (caption_json.txt: a local model has no structured output); the reply goes
through the same parsing, cast check and repair turns (story.repair.ask_until_valid),
so a tag outside the cast is refused here as it is there. Greedy decoding: the same
model and keyframe give the same caption. CUDA in bf16 when present, else the CPU in
float32.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cinema_cli.data.captions import Cast, cast_text, parse_caption
from cinema_cli.data.config import CaptionSettings
from cinema_cli.errors import BackendError, BadInput
from cinema_cli.story.prompts import render
from cinema_cli.story.repair import Turn, ask_until_valid

WHERE = "captions.local_model"


def model_folder(settings: CaptionSettings, root: Path) -> Path:
    """The model's folder, checked to hold an image-text-to-text model (its config only:
    weights load in the worker)."""
    if not settings.local_model:
        raise BadInput(f"captions are local, but {WHERE} is not set: give --local-model FOLDER, a "
                       "transformers image-text-to-text model saved with save_pretrained")
    folder = (root / Path(settings.local_model).expanduser()).resolve()
    if not folder.is_dir():
        raise BadInput(f"{WHERE}: {folder} is not a folder (a local model is read from a save_pretrained "
                       "folder; cinema never downloads one)")
    if not (folder / "config.json").is_file():
        raise BadInput(f"{WHERE}: {folder} is not a transformers model folder (no config.json)")
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from transformers import AutoConfig
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES

    try:
        config = AutoConfig.from_pretrained(folder, local_files_only=True)
    except (OSError, ValueError) as err:
        raise BadInput(f"{WHERE}: cannot read the model config in {folder}: {err}") from None
    if config.model_type not in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        raise BadInput(f"{WHERE}: {folder} holds a {config.model_type!r} model, not a vision-language "
                       "(image-text-to-text) model such as Qwen2-VL, SmolVLM, Idefics or LLaVA")
    return folder


def folder_identity(folder: Path) -> str:
    """Names the model's files (by name, size and modification time: weights are too big
    to hash on every run), so a retrained or replaced model redoes its captions."""
    files = sorted(p for p in folder.rglob("*") if p.is_file())
    listing = "\n".join(f"{p.relative_to(folder)}:{p.stat().st_size}:{p.stat().st_mtime_ns}" for p in files)
    return hashlib.sha256(listing.encode()).hexdigest()


class LocalCaptioner:
    who = "the local vision-language model"

    def __init__(self, settings: CaptionSettings, cast: Cast, root: Path) -> None:
        self.settings, self.cast = settings, cast
        self.folder = model_folder(settings, root)
        self._loaded: tuple[Any, Any, str] | None = None

    def _load(self) -> tuple[Any, Any, str]:
        if self._loaded is None:
            from cinema_cli.runtime.torch_compat import prepare_torch

            prepare_torch()
            import torch
            from transformers import AutoModelForImageTextToText, AutoProcessor
            from transformers.utils import logging as transformers_logging

            transformers_logging.disable_progress_bar()
            device = self.settings.device
            if device == "auto":
                device = "cuda" if torch.cuda.is_available() else "cpu"
            dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
            try:
                processor = AutoProcessor.from_pretrained(self.folder, local_files_only=True)
                model = AutoModelForImageTextToText.from_pretrained(self.folder, local_files_only=True, dtype=dtype)
            except ImportError as err:
                raise BackendError(f"transformers cannot load {self.folder} here: {err.__cause__ or err}") from None
            except (OSError, ValueError) as err:
                raise BadInput(f"{WHERE}: cannot load a vision-language model from {self.folder}: {err}") from None
            self._loaded = (model.to(device).eval(), processor, device)
        return self._loaded

    def _chat(self, turns: Sequence[Turn], image: Any | None) -> str:
        import torch

        model, processor, device = self._load()
        messages = []
        for i, (role, text) in enumerate(turns):
            content = [{"type": "text", "text": text}]
            if i == 0 and image is not None:
                content.insert(0, {"type": "image"})
            messages.append({"role": "assistant" if role == "model" else "user", "content": content})
        prompt = processor.apply_chat_template(messages, add_generation_prompt=True)
        inputs = processor(images=[image] if image is not None else None, text=[prompt], return_tensors="pt")
        # Pixels in the model's dtype; ids, masks and grids as they are.
        inputs = {k: (v.to(device, model.dtype) if v.is_floating_point() else v.to(device))
                  if isinstance(v, torch.Tensor) else v for k, v in inputs.items()}
        length = inputs["input_ids"].shape[1]
        tokenizer = getattr(processor, "tokenizer", processor)
        with torch.inference_mode():
            output = model.generate(**inputs, max_new_tokens=self.settings.max_new_tokens, do_sample=False,
                                    pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None
                                    else tokenizer.eos_token_id)
        return tokenizer.decode(output[0, length:], skip_special_tokens=True)

    def _ask(self, prompt: str, image: Any | None, what: str) -> dict:
        asked = prompt + "\n\n" + render("caption_json")
        return ask_until_valid(lambda turns, _schema: self._chat(turns, image), asked, {},
                               lambda reply: parse_caption(reply, self.cast), self.who, what)

    def keyframe(self, jpeg: bytes) -> dict:
        from PIL import Image

        with Image.open(io.BytesIO(jpeg)) as image:
            picture = image.convert("RGB")
        return self._ask(render("caption_frame", cast=cast_text(self.cast)), picture, "keyframe caption")

    def scene(self, shot_captions: list[str]) -> dict:
        shots = "\n".join(f"{i + 1}. {caption}" for i, caption in enumerate(shot_captions))
        return self._ask(render("caption_scene", shots=shots, cast=cast_text(self.cast)), None, "global caption")
