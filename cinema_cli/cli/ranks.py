"""`cinema render --gpus N`: checking the request and starting the ranks. Thin: the
scheduling is pipeline.distributed, the processes runtime.distributed."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from cinema_cli.cli import output
from cinema_cli.errors import BadInput
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.project import Project
from cinema_cli.runtime import distributed


def check(targets: list[Optional[Path]], gpus: str) -> tuple[int, list[Path], str | None]:
    """The number of ranks `--gpus` means here, the projects' folders, and a notice.
    Bad input (the count, a project) is refused before anything starts or is written."""
    processes, notice = distributed.processes_for(gpus, distributed.cuda_devices(), distributed.cpu_cores())
    roots = []
    for target in targets:
        pipeline = Pipeline(Project.open(target))
        pipeline.check_storyboard()
        pipeline.check_inputs("film")
        roots.append(pipeline.project.root)
    return processes, roots, notice


def launch(roots: list[Path], processes: int, gpus: str, json_mode: bool) -> int:
    """Render `roots` on `processes` ranks through torchrun; its exit code."""
    args = ["render", *(a for root in roots for a in ("-p", str(root))), *(["--json"] if json_mode else [])]
    code = distributed.launch(processes, args)
    if code not in (0, distributed.INTERRUPTED):  # Ctrl-C: rank 0 has said what was kept
        output.error(f"the render on {processes} processes stopped (torchrun exit code {code}; the ranks' reports "
                     f"are above). What was finished is kept and recorded: run `cinema render --gpus {gpus}` "
                     "again to resume")
    return code


def gpus_under_torchrun() -> BadInput:
    return BadInput("--gpus starts the ranks itself with torchrun; this process is one of torchrun's ranks "
                    "already, so leave --gpus out")
