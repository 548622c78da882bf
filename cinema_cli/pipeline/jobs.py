"""Jobs and the executor that runs them.

A stage plans its work as jobs: what to make (`key`, `outputs`), what the backend will
be asked (`request`), the typed recipe it is made with, and the keys of the jobs it
must wait for (`after`). The executor runs a stage's jobs in dependency order, each
through the stage's `build`. This one runs them here, one after another; one process
per GPU, or a long-lived directing session, is another executor over the same stages.

A stage may judge a job again just before it runs (`still_needed`): keyframes are
conditioned on earlier keyframes, so whether keyframe k is still current depends on
what the jobs before it made.

A run is a list of `Step`s, one per stage (keyframes, then shots). This executor runs
them in turn; one that spreads jobs over ranks runs them as one graph, a shot after its
own keyframes (`needs`) rather than after the whole keyframe stage. Both build the same
artifacts: each job is judged only once everything it is made from is recorded.

Stages whose jobs may run on another rank (`Distributable`: keyframes, shots) split
`build` in two: `make` writes the outputs to temporary files and touches no project
state, `record` publishes them and records them in the manifest. `build` is the two in
turn; the distributed executor (`pipeline.distributed`) runs `make` on any rank and
`record` on rank 0 only.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from cinema_cli.pipeline.state import Reporter
from cinema_cli.project.files import publish


@dataclass
class Job:
    stage: str
    key: str
    recipe: Any = None  # a pipeline.recipes.Recipe; completed by `build` when it depends on what runs before
    outputs: tuple[Path, ...] = ()
    request: Any = None  # what the backend is asked; built by `build` when it depends on earlier jobs
    after: tuple[str, ...] = ()  # keys of this stage's jobs that must be built first
    # The earlier stages' artifacts it is made from, as (stage, shot id): a shot's keyframes.
    needs: tuple[tuple[str, str], ...] = ()
    shots: tuple[str, ...] = ()  # the shots it makes (a scene job makes several)
    label: str = ""  # how progress names it
    # Judged stale when planned. A job that is not may still run: `still_needed` says
    # so once the jobs it waits for are built.
    stale: bool = True

    @property
    def size(self) -> int:
        return max(1, len(self.shots))


@dataclass
class Made:
    """A job's outputs, made but not yet visible: each target and the temporary file
    (same filesystem) that holds it until it is published."""

    files: dict[Path, Path]

    def publish(self) -> None:
        for target, temp in self.files.items():
            publish(temp, target)

    def discard(self) -> None:
        for temp in self.files.values():
            temp.unlink(missing_ok=True)


class Stage(Protocol):
    name: str

    def build(self, job: Job) -> None:
        """Make the job's outputs, publish them atomically, record them in the manifest."""
        ...


@runtime_checkable
class Distributable(Protocol):
    """A stage whose jobs any rank can make; only the coordinator records them."""

    def make(self, job: Job, tmp_dir: Path) -> Made:
        """Write the job's outputs under `tmp_dir`, unpublished; touch no project state."""
        ...

    def record(self, job: Job, made: Made) -> None:
        """Publish what `make` made and record it in the manifest."""
        ...


@dataclass
class Step:
    """One stage's part of a run. `plan` gives its jobs: when the stage's turn comes, or,
    for an executor that runs several steps as one graph, before any job is built. So
    `still_needed` judges each job again once what it waits for (`after`, `needs`) is
    recorded, and brings its recipe up to date."""

    stage: Stage
    plan: Callable[[], list[Job]]
    still_needed: Callable[[Job], bool] | None = None


class Executor(Protocol):
    def run(self, stage: Stage, jobs: list[Job], still_needed: Callable[[Job], bool] | None = None) -> list[Job]:
        """Build `jobs` in dependency order; return those built."""
        ...

    def run_steps(self, steps: list[Step]) -> list[list[Job]]:
        """Build the steps' jobs, each after the jobs it waits for; the jobs built, per step."""
        ...


def in_order(jobs: Iterable[Job]) -> list[Job]:
    """Jobs sorted so each comes after the jobs it waits for, otherwise as planned
    (stages plan in storyboard order, so one pass usually places them all)."""
    pending = list(jobs)
    keys = {j.key for j in pending}
    placed: list[Job] = []
    done: set[str] = set()
    while pending:
        waiting = []
        for job in pending:
            if all(k in done or k not in keys for k in job.after):
                placed.append(job)
                done.add(job.key)
            else:
                waiting.append(job)
        if len(waiting) == len(pending):
            raise ValueError(f"jobs wait for each other: {', '.join(j.key for j in waiting)}")
        pending = waiting
    return placed


@dataclass
class InProcessExecutor:
    """Runs jobs one after another in this process, reporting progress."""

    reporter: Reporter

    def run(self, stage: Stage, jobs: list[Job], still_needed: Callable[[Job], bool] | None = None) -> list[Job]:
        total = sum(j.size for j in jobs if j.stale)
        if total:
            self.reporter.stage(stage.name, total)
        done, built = 0, []
        for job in in_order(jobs):
            if not (still_needed(job) if still_needed is not None else job.stale):
                continue
            self.reporter.item(stage.name, job.label or job.key, done, total)
            stage.build(job)
            for key in job.shots or (job.label or job.key,):
                self.reporter.item_done(stage.name, key)
            done += job.size
            built.append(job)
        return built

    def run_steps(self, steps: list[Step]) -> list[list[Job]]:
        """Stage after stage: a step is planned once the steps before it are built."""
        return [self.run(step.stage, step.plan(), step.still_needed) for step in steps]
