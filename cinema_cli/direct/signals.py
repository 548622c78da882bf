"""Ctrl-C in a directing session: it stops the shot being made, never a commit.

While a shot is generated, SIGINT raises `Interrupt` and the session discards the
shot. While the session commits a shot (storyboard, stream, film) or discards one,
the signal is held (`shielded`) and raised once that is done, so the project on disk
is always either before or after the shot, never between.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator


class Interrupt(BaseException):
    """Ctrl-C during a directing session (not a KeyboardInterrupt, which click turns into
    "Aborted!")."""


def _raise(signum: int, frame: object) -> None:
    raise Interrupt


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def interrupts_raise() -> Iterator[None]:
    """SIGINT raises `Interrupt` inside the block."""
    if not _main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, _raise)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


@contextlib.contextmanager
def shielded() -> Iterator[None]:
    """Hold SIGINT during the block; one that arrived is acted on when it ends."""
    if not _main_thread():
        yield
        return
    caught: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
    if caught and callable(previous):
        previous(signal.SIGINT, None)
