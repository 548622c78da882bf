"""Which kernel solves the sparse segments: flash-attn varlen on CUDA when the `cuda`
extra is installed, else packed dense calls through diffusers' attention dispatch (torch
SDPA unless the model was given another backend with `set_attention_backend`)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Literal

import torch

from cinema_cli.attention.sparse import Attend

Kernel = Literal["auto", "flash-varlen", "sdpa"]


@functools.cache
def flash_varlen() -> Callable | None:
    """flash-attn's varlen function, or None when the package is not installed."""
    try:
        from flash_attn import flash_attn_varlen_func
    except ImportError:
        return None
    return flash_attn_varlen_func


def flash_varlen_usable(q: torch.Tensor) -> bool:
    return flash_varlen() is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)


def pick_kernel(requested: Kernel, q: torch.Tensor) -> str:
    """The kernel for these tensors: `auto` takes flash-attn varlen where it can run."""
    if requested == "flash-varlen" and not flash_varlen_usable(q):
        raise RuntimeError(
            "the flash-varlen attention kernel needs flash-attn (pip install -e '.[cuda]'), a CUDA "
            f"device and float16/bfloat16 tensors; got {q.device} {q.dtype}"
            + ("" if flash_varlen() else ", and flash-attn is not installed")
        )
    if requested == "auto":
        return "flash-varlen" if flash_varlen_usable(q) else "sdpa"
    return requested


def dispatch_attend(backend=None) -> Attend:
    """One dense call through diffusers' attention dispatch, with the model's backend."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        return dispatch_attention_fn(q, k, v, attn_mask=None, dropout_p=0.0, is_causal=False, backend=backend)

    return attend


def own_and_shared_kernel(q: torch.Tensor, backend=None) -> Callable | None:
    """The training kernel for segments with own and shared keys (`own_and_shared`), where
    it may stand in for the model's backend (the native one, on the CPU), else None."""
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from cinema_cli.attention import own_and_shared

    return own_and_shared.OwnAndShared.apply if own_and_shared.usable(q, backend) else None
