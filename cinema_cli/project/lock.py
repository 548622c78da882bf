"""The project lock: one writer at a time.

An advisory `flock` on `.cinema/lock`. The kernel drops it when the holder dies, even
by SIGKILL, so a killed run never leaves a stale lock behind. The holder's pid is
written into the file so a refused writer can say who holds it.

The lock file is opened without following a symlink and refused when it is not this
project's own plain file (a symlink, a hard link to another file): writing the pid
would otherwise truncate a file outside the project.
"""

from __future__ import annotations

import errno
import fcntl
import os
import stat
from collections.abc import Callable
from pathlib import Path

from cinema_cli.errors import LockHeld, UnsafePath


class ProjectLock:
    def __init__(self, path: Path, on_acquire: Callable[[], None] | None = None):
        """`on_acquire` runs once the lock is held: the holder forgets what it read
        before, so every read-modify-write works on the files as they are now."""
        self.path = path
        self.on_acquire = on_acquire
        self._fd: int | None = None

    def acquire(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as err:
            if err.errno == errno.ELOOP:
                raise self._refused("is a symlink") from None
            if err.errno == errno.EISDIR:
                raise self._refused("is a folder") from None
            raise
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode) or info.st_nlink != 1:
            os.close(fd)
            raise self._refused("is not a plain file of its own (a hard link, a device?)")
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
        if self.on_acquire is not None:
            self.on_acquire()

    def _refused(self, why: str) -> UnsafePath:
        return UnsafePath(f"the project lock {self.path} {why}; cinema writes it, so it must be a plain "
                          "file inside the project. Remove it (`rm` the link, not what it points to) "
                          "and run again")

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
