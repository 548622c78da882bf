"""The project lock: one writer at a time.

An advisory `flock` on `.cinema/lock`. The kernel drops it when the holder dies, even
by SIGKILL, so a killed run never leaves a stale lock behind. The holder's pid is
written into the file so a refused writer can say who holds it.
"""

from __future__ import annotations

import fcntl
import os
from pathlib import Path

from cinema_cli.errors import LockHeld


class ProjectLock:
    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise LockHeld(
                f"the project is being written by another cinema process (pid {holder}); "
                f"lock: {self.path}. Wait for it to finish, or stop that process."
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> "ProjectLock":
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
