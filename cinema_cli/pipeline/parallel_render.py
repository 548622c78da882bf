"""`cinema render --cp N`: one render as N processes, each scene's transformer passes split
over them (context parallelism, runtime/parallel).

Without torchrun around it, `render --cp N` starts itself again under torchrun with N
processes (`torch.distributed.run --standalone`); `torchrun ... -m cinema_cli render --cp N`
is the same by hand (several nodes too). Rank 0 renders the project as a single process
would: it alone takes the lock, writes artifacts and the manifest, prints. The others open
the project read-only, build the same video backend and follow rank 0's calls.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from pydantic import ValidationError

from cinema_cli.errors import BadInput
from cinema_cli.project.project import Project
from cinema_cli.project.schema import ContextParallelSettings
from cinema_cli.runtime import parallel
from cinema_cli.runtime.distributed import EXIT_CODE_FILE

def with_cp(project: Project, degree: int | None, mode: str | None) -> ContextParallelSettings:
    """cinema.yaml's runtime.cp with the command line's degree and mode put over it, for this run."""
    config = project.config
    flags = {k: v for k, v in (("degree", degree), ("mode", mode)) if v is not None}
    try:  # the flags checked as cinema.yaml's runtime.cp is
        cp = ContextParallelSettings.model_validate({**config.runtime.cp.model_dump(), **flags})
    except ValidationError as err:
        raise BadInput(f"--cp-mode: {err.errors()[0]['msg']}") from None
    runtime = config.runtime.model_copy(update={"cp": cp})
    project.config = config.model_copy(update={"runtime": runtime})  # the cached config of this run
    return cp


def needs_launch(cp: ContextParallelSettings) -> bool:
    """True when this process must start the N processes itself (no torchrun around it)."""
    return cp.degree > 1 and parallel.world()[1] == 1


def launch(cp: ContextParallelSettings, args: list[str]) -> int:
    """This render again under torchrun with `cp.degree` processes; rank 0's exit code
    (torchrun's own is 1 for any failure, and bad input must still exit 2)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
               str(cp.degree), "-m", "cinema_cli", *args]
    with tempfile.TemporaryDirectory(prefix="cinema-cp-") as folder:
        code_file = Path(folder) / "exit-code"
        returncode = subprocess.run(command, env={**os.environ, EXIT_CODE_FILE: str(code_file)}).returncode
        return int(code_file.read_text()) if code_file.is_file() else returncode




def start_group(cp: ContextParallelSettings, device_setting: str) -> None:
    """The process group and its one context-parallel group, on every rank, before anything
    else (rank 0 may never load a model, and must still release the others)."""
    parallel.check_launch(cp, "render")
    device = parallel.mesh_device(device_setting)
    parallel.init_group(device)
    parallel.build_mesh(cp, device)


@contextlib.contextmanager
def leading() -> Iterator[None]:
    """Rank 0's render: the followers are released when it ends, however it ends."""
    try:
        yield
    finally:
        parallel.release()


def follow(project: Project) -> int:
    """A rank above 0: make the video backend's calls rank 0 sends, write nothing. Returns the
    number of calls."""
    from cinema_cli.pipeline.context import build_context

    ctx = build_context(project)
    return parallel.follow(ctx.video.instance, ctx.encode)
