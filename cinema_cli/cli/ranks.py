"""`cinema render --gpus N [--cp C]`: checking the request, splitting a scene too big for one
GPU, and starting the ranks. Thin: the scheduling is pipeline.distributed, the processes
runtime.distributed, the context-parallel groups runtime.parallel, the memory estimate
runtime.memory."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

from cinema_cli.cli import output
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.pipeline import Pipeline
from cinema_cli.pipeline.parallel_render import with_cp
from cinema_cli.pipeline.state import DONE
from cinema_cli.project.project import Project
from cinema_cli.project.schema import ContextParallelSettings
from cinema_cli.runtime import distributed, parallel
from cinema_cli.runtime.memory import SceneMemory, free_gpu_bytes_each, split_degree
from cinema_cli.video.base import MemoryEstimating


@dataclass
class Ranks:
    """What `render --gpus` starts: how many ranks, for which projects, in context-parallel
    groups of `cp.degree` (1: every rank a builder), and what to tell the user."""

    processes: int
    roots: list[Path]
    cp: ContextParallelSettings
    notices: list[str] = field(default_factory=list)


def check(targets: list[Optional[Path]], gpus: str, cp: int | None, cp_mode: str | None) -> Ranks:
    """The ranks `--gpus` (and `--cp`) mean here. Bad input (the count, a degree that does not
    divide it, a project) is refused before anything starts or is written. Without `--cp` (or
    runtime.cp) a scene too big for one GPU is split over as few as fit (`auto_split`)."""
    processes, notice = distributed.processes_for(gpus, distributed.cuda_devices(), distributed.cpu_cores())
    pipelines = []
    for target in targets:
        project = Project.open(target)
        settings = with_cp(project, cp, cp_mode)
        pipeline = Pipeline(project)
        pipeline.check_storyboard()
        pipeline.check_inputs("film")
        pipelines.append(pipeline)
    ranks = Ranks(processes, [p.project.root for p in pipelines], settings, [notice] if notice else [])
    if settings.degree == 1 and processes > 1 and distributed.cuda_devices():
        degree, split = auto_split(pipelines, processes)
        if degree > 1:
            ranks.cp = settings.model_copy(update={"degree": degree})
            ranks.processes = degree * (processes // degree)
            idle = processes - ranks.processes
            ranks.notices.append(split + (f"; {idle} GPU(s) stay idle: the ranks form groups of {degree}"
                                          if idle else ""))
    if ranks.cp.degree > 1:
        if len(targets) > 1:
            raise BadInput("render --cp renders one project at a time; give one -p")
        parallel.groups_of(ranks.processes, ranks.cp.degree)  # C must divide N
    return ranks


def auto_split(pipelines: list[Pipeline], gpus: int) -> tuple[int, str | None]:
    """The context-parallel degree a render over `gpus` GPUs needs, and its notice: 1 unless
    the longest scene still to render does not fit one GPU (runtime.memory.split_degree)."""
    return split_for(scenes_to_render(pipelines), gpus)


def scenes_to_render(pipelines: list[Pipeline]) -> list[tuple[SceneMemory, ContextParallelSettings]]:
    """Each project's longest scene, where shots are still to render and the backend
    estimates its memory (real weights on CUDA), with the project's context parallelism."""
    found = []
    for pipeline in pipelines:
        status = pipeline.status()
        if status.story.state == DONE and all(row.shot.state == DONE for row in status.shots):
            continue
        scene = pipeline.shots.memory()
        if scene is not None:
            found.append((scene, pipeline.ctx.config.runtime.cp))
    return found


def split_for(scenes: list[tuple[SceneMemory, ContextParallelSettings]], gpus: int) -> tuple[int, str | None]:
    """The degree the most demanding of `scenes` needs on `gpus` GPUs, and its notice."""
    if not scenes:
        return 1, None
    free = free_gpu_bytes_each(gpus)
    choices = [split_degree(scene, free, parallel.possible_degrees(cp, scene.tokens_per_frame, scene.heads, gpus))
               for scene, cp in scenes]
    return max(choices, key=lambda choice: choice[0])


def launch(ranks: Ranks, gpus: str, json_mode: bool) -> int:
    """Render the projects on the ranks through torchrun; the exit code."""
    cp = ["--cp", str(ranks.cp.degree), "--cp-mode", ranks.cp.mode] if ranks.cp.degree > 1 else []
    args = ["render", *(a for root in ranks.roots for a in ("-p", str(root))), *(["--json"] if json_mode else []),
            *cp]
    code = distributed.launch(ranks.processes, args)
    if code == 1:  # not bad input (2) nor Ctrl-C (130): rank 0 has said why
        output.error(f"the render on {ranks.processes} processes stopped (the ranks' reports are above). What was "
                     f"finished is kept and recorded: run `cinema render --gpus {gpus}` again to resume")
    return code


def plain_split(target: Optional[Path]) -> tuple[int, str | None]:
    """A plain `cinema render` on a machine with several GPUs: the context-parallel degree its
    longest scene needs (1 when it fits one GPU, or there is one GPU)."""
    try:
        pipeline = Pipeline(Project.open(target))
        if not isinstance(pipeline.shots.backend, MemoryEstimating):
            return 1, None  # asked first: a previz render need not import torch to learn it
        gpus = distributed.cuda_devices()
        scenes = scenes_to_render([pipeline]) if gpus > 1 else []
    except CinemaError:
        return 1, None  # the render that follows reports it, as any render does
    return split_for(scenes, gpus)


def gpus_under_torchrun() -> BadInput:
    return BadInput("--gpus starts the ranks itself with torchrun; this process is one of torchrun's ranks "
                    "already, so leave --gpus out")
