"""The local storyboarder: a transformers causal LM from a folder on this machine, for
scripts that must not leave it. Same prompts, validation and repair turns as gemini;
the JSON shape is asked for in the prompt (a local model has no structured output).
Greedy decoding, so the same model and script give the same storyboard.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.story.base import storyboarders
from cinema_cli.story.llm import LLMOptions, LLMStoryboarder
from cinema_cli.story.repair import Turn


class LocalOptions(LLMOptions):
    model_path: Path  # a save_pretrained folder: config, tokenizer, safetensors weights
    max_new_tokens: int = Field(4096, ge=1, le=65536)

    @field_validator("model_path")
    @classmethod
    def _absolute(cls, value: Path) -> Path:
        value = value.expanduser()
        if not value.is_absolute():
            raise ValueError("must be an absolute path (or start with ~)")
        return value


@storyboarders.register
class LocalStoryboarder(LLMStoryboarder):
    name = "local"
    version = "1"
    Options = LocalOptions
    who = "the local model"

    def __init__(self, options: LocalOptions) -> None:
        super().__init__(options)
        self._loaded: tuple[Any, Any] | None = None

    def chat(self, turns: Sequence[Turn], schema: dict, runtime: RuntimeSettings) -> str:
        import torch

        model, tokenizer = self._load(runtime)
        messages = [{"role": "assistant" if role == "model" else "user", "content": text} for role, text in turns]
        if tokenizer.chat_template:
            prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        else:  # a base model: a plain transcript that ends where the answer starts
            prompt = "".join(f"{m['role']}:\n{m['content']}\n\n" for m in messages) + "assistant:\n"
        inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(model.device)
        length = inputs["input_ids"].shape[1]
        context = getattr(model.config, "max_position_embeddings", None)
        if context and length + self.options.max_new_tokens > context:
            raise BackendError(
                f"the prompt is {length} tokens and up to {self.options.max_new_tokens} more may be "
                f"generated, beyond the local model's context of {context}; lower "
                "story.options.max_new_tokens or use a model with a longer context"
            )
        with torch.inference_mode():
            output = model.generate(
                **inputs, max_new_tokens=self.options.max_new_tokens, do_sample=False,
                pad_token_id=tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id,
            )
        return tokenizer.decode(output[0, length:], skip_special_tokens=True)

    def _load(self, runtime: RuntimeSettings) -> tuple[Any, Any]:
        if self._loaded is None:
            # transformers and torch take seconds to import: only when the model is used.
            from cinema_cli.runtime.profiles import resolve_runtime
            from cinema_cli.runtime.torch_compat import prepare_torch

            prepare_torch()
            from transformers import AutoModelForCausalLM, AutoTokenizer

            path = self.options.model_path
            if not (path / "config.json").is_file():
                raise BadInput(f"story.options.model_path: {path} is not a transformers model folder "
                               "(no config.json); point it at a save_pretrained folder")
            try:
                tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
                model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, use_safetensors=True)
            except ImportError as err:  # e.g. a torchvision build that does not match torch
                raise BackendError(f"transformers cannot load a model in this environment: "
                                   f"{err.__cause__ or err}") from None
            except (OSError, ValueError) as err:
                raise BadInput(f"story.options.model_path: cannot load a causal LM from {path}: {err}") from None
            # Device and dtype as every model of the project gets them; it neither offloads
            # nor quantizes, so those settings (meant for the diffusion models) are not its.
            profile, _ = resolve_runtime(runtime.model_copy(update={"offload": "none", "quantize": "none"}),
                                         "story: the local model", "story.backend: offline")
            self._loaded = (model.to(profile.device, profile.torch_dtype).eval(), tokenizer)
        return self._loaded
