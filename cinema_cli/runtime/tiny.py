"""`model: tiny`: the real diffusers pipelines built from small configs with random
weights, entirely offline, in seconds on a CPU. Tests and smoke runs use them to run the
real code path; their pictures mean nothing.

A preset is a function registered by name that returns a ready pipeline. Weights are
drawn from a fixed seed, so a preset builds the same model every time. The text parts
every preset needs are here: a byte-level tokenizer whose vocabulary is built in memory
(every string has a distinct, lossless tokenization) and a tiny UMT5 encoder.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from cinema_cli.registry import Registry
from cinema_cli.runtime.torch_compat import prepare_torch

TINY = "tiny"
# `model:` values that build a tiny preset: `tiny`, or `tiny-<kind>` for a preset's other kinds.
TINY_PREFIX = "tiny-"
# T5's special tokens and ids: pad 0, end of sequence 1, unknown 2.
T5_SPECIALS = ("<pad>", "</s>", "<unk>")

# Preset name -> the module that registers it, imported on first use.
BUILTIN = {"wan": "cinema_cli.runtime.tiny_wan", "flux2": "cinema_cli.runtime.tiny_flux2",
           "helios": "cinema_cli.runtime.tiny_helios"}
presets: Registry[Callable[..., Any]] = Registry("tiny", BUILTIN, kind="preset")


def tiny_preset(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register a builder: `@tiny_preset("wan")` then `build_tiny("wan", ...)`."""
    return lambda builder: presets.register(builder, name)


def is_tiny(model: str | None) -> bool:
    return model is not None and (model == TINY or model.startswith(TINY_PREFIX))


def tiny_kind(model: str, default: str) -> str:
    """The preset kind a `model:` value names: `tiny` -> default, `tiny-kv` -> kv."""
    return default if model == TINY else model[len(TINY_PREFIX):]


def build_tiny(name: str, **kwargs: Any) -> Any:
    return presets.get(name)(**kwargs)


@contextlib.contextmanager
def seeded(seed: int = 0) -> Iterator[None]:
    """Draw the random weights from `seed` without touching the caller's RNG state."""
    import torch

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def byte_tokenizer(specials: tuple[str, ...] = T5_SPECIALS, eos: str = "</s>"):
    """A PreTrainedTokenizerFast over the 256 byte symbols (a BPE with no merges), with
    `specials` first and `eos` appended to every sequence."""
    prepare_torch()
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    vocab = {token: i for i, token in enumerate((*specials, *alphabet))}
    tokenizer = Tokenizer(models.BPE(vocab=vocab, merges=[], unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, vocab[eos])]
    )
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, pad_token="<pad>", eos_token=eos, unk_token="<unk>")


def tiny_umt5(vocab_size: int, width: int = 32):
    """A two-layer UMT5 encoder (Wan's text encoder family) of `width` channels."""
    prepare_torch()
    from transformers import UMT5Config, UMT5EncoderModel

    config = UMT5Config(
        vocab_size=vocab_size, d_model=width, d_kv=8, d_ff=2 * width, num_layers=2, num_heads=4,
        relative_attention_num_buckets=8, relative_attention_max_distance=32,
    )
    return UMT5EncoderModel(config).eval()
