"""Choosing a stage's backend when cinema.yaml says `auto`.

`auto` means: the GPU model backend when a CUDA GPU and its weights are present, else the
CPU previz backend, and say which was chosen. No GPU model backend ships yet, so `auto`
resolves to the previz backends and the notice says why.
"""

from __future__ import annotations

PREVIZ = {"keyframes": "sketch", "video": "animatic"}


def resolve_backend(stage: str, configured: str) -> tuple[str, str | None]:
    """(backend name, notice for the user or None)."""
    if configured != "auto":
        return configured, None
    chosen = PREVIZ[stage]
    return chosen, (
        f"{stage}: auto -> {chosen} (CPU previz; no GPU {stage} model is configured)"
    )
