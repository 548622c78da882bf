"""Errors the library raises. The CLI turns them into a message and an exit code.

Exit codes follow the design: 0 ok, 1 failure, 2 bad input / usage.
"""

from __future__ import annotations

from pathlib import Path


class CinemaError(Exception):
    """A failure a user can act on; `str(err)` is the one-paragraph message."""

    exit_code = 1


class BadInput(CinemaError):
    """The user's input (a project file, an argument) is wrong. Nothing on disk changed."""

    exit_code = 2


class ProjectFileError(BadInput):
    """A project file is malformed or fails its schema; names file, line and field."""

    def __init__(self, path: Path | str, problems: list[tuple[int | None, str, str]]):
        # problems: (line, field, message); line is 1-based or None when unknown.
        self.path = Path(path)
        self.problems = problems
        lines = []
        for line, field, message in problems:
            where = f"{self.path.name}:{line}" if line else self.path.name
            lines.append(f"{where}: {field}: {message}" if field else f"{where}: {message}")
        super().__init__("\n".join(lines))


class NotAProject(BadInput):
    pass


class UnknownShot(BadInput):
    pass


class UnsafePath(BadInput):
    pass


class LockHeld(CinemaError):
    """Another process is writing this project."""


class FFmpegError(CinemaError):
    """ffmpeg exited non-zero; the message carries the tail of its stderr."""

    def __init__(self, what: str, returncode: int, stderr: str, tail_lines: int = 15):
        tail = "\n".join(stderr.strip().splitlines()[-tail_lines:])
        self.returncode = returncode
        self.stderr = stderr
        super().__init__(f"ffmpeg failed while {what} (exit {returncode}):\n{tail}")


class BackendError(CinemaError):
    """A stage backend could not run (missing weights, no GPU, out of memory...)."""


def disk_error(err: OSError) -> str:
    """The message for a failed file operation (disk full, permission denied, read-only
    folder): the artifact in flight was never published, so the project stays consistent."""
    return f"{err.strerror or err}: {err.filename or ''}".rstrip(": ")
