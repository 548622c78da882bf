"""The stage graph across ranks: one render spread over the processes torchrun started.

Every rank opens the project and builds the same `Pipeline`, so each validates the same
inputs and keeps its backends loaded from one job to the next. Rank 0 is the
coordinator: it holds the project lock, plans and judges the jobs exactly as a
single-process render does, hands each job to an idle rank as soon as the jobs it waits
for are recorded, then publishes what the rank made and records it in the manifest.
The keyframe and shot stages run as one graph (`run_steps`): a keyframe after the
keyframes its context may come from (none for a backend that reads no context), a shot
job — one shot, or a whole scene for a group backend — after its own keyframes, while
other keyframes are still being drawn. Keyframes go first when both are ready: they
are the chain the rest waits for. Rank 0 also makes jobs itself, in a thread, so N
ranks are N builders; the story and the film are made by rank 0 alone.

The other ranks only `make` (`jobs.Distributable`): into their own scratch folder
`.cinema/tmp/rank-R/` (the project on a filesystem every node shares), and
`project.files.confine_writes` makes any write of project state by them fail. Messages
are pickled objects under numbered keys in torchrun's c10d store.

With context parallelism (`render --gpus N --cp C`), the ranks form N/C groups of C
(runtime.parallel's mesh), and each group is one builder: rank 0 hands the job to the
group's leader (its own thread, `LocalGroup`, for group 0; a `RemoteRank` for the others),
and the members make it with the leader, each holding 1/C of every scene's tokens — the
backend's calls reach them through the group (runtime.parallel's lead/follow). A job whose
backend makes no such call (a keyframe) is made by the leader alone, its members idle.

Faults: a rank whose job raises (a backend error, out of memory) reports it; rank 0
hands out nothing more, records the jobs still in flight as they finish, and fails the
run naming the rank and the artifact. A rank that dies is seen by torchrun, which stops
the others (SIGTERM: rank 0 then leaves through `Stopped`, releasing the lock). Either
way every artifact recorded so far is kept, and the next render resumes from there.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import queue
import signal
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cinema_cli.errors import CinemaError
from cinema_cli.pipeline.jobs import Distributable, InProcessExecutor, Job, Made, Stage, Step, in_order
from cinema_cli.pipeline.state import Reporter
from cinema_cli.project.files import confine_writes
from cinema_cli.runtime import parallel
from cinema_cli.runtime.distributed import World

POLL = 0.003  # seconds between looks at the store when nothing happened
# Fault injection for tests and drills: "R:N" makes rank R kill itself (SIGKILL) right
# after it has handed in its N-th job.
KILL_ENV = "CINEMA_FAULT_KILL_RANK"


class Stopped(BaseException):
    """torchrun stopped this rank (SIGTERM), most often because another rank died."""


class RankFailed(CinemaError):
    """A rank could not make a job; the run stops after the jobs in flight."""


def stop_on_sigterm() -> None:
    def stopped(signum: int, frame: object) -> None:
        raise Stopped

    signal.signal(signal.SIGTERM, stopped)


def rank_tmp(tmp_dir: Path, rank: int) -> Path:
    return tmp_dir / f"rank-{rank}"


# ---------------------------------------------------------------- messages


@dataclass
class Assignment:
    stage: str
    job: Job


@dataclass
class Outcome:
    """What a rank hands back: the job as `make` completed it (its request, and recipe
    fields such as a keyframe's context) and the unpublished outputs, or the error."""

    rank: int
    job: Job
    made: Made | None
    seconds: float
    error: str | None = None


STOP = "stop"  # rank 0's last word to a worker in a session


class Mailbox:
    """Numbered messages in the store: `to/R/n` for rank R's n-th job, `from/R/n` for its
    answer; `session` keeps the projects of one `render -p A -p B` apart."""

    def __init__(self, store: Any, session: int) -> None:
        self.store = store
        self.session = session

    def key(self, box: str, n: int) -> str:
        return f"{self.session}/{box}/{n}"

    def send(self, box: str, n: int, message: Any) -> None:
        self.store.set(self.key(box, n), pickle.dumps(message))

    def poll(self, box: str, n: int) -> Any | None:
        key = self.key(box, n)
        if not self.store.check([key]):
            return None
        message = pickle.loads(self.store.get(key))
        self.store.delete_key(key)
        return message

    def wait(self, box: str, n: int) -> Any:
        # Short sleeps, not one blocking wait, so Ctrl-C reaches Python at once.
        while (message := self.poll(box, n)) is None:
            time.sleep(POLL)
        return message


def describe(err: BaseException) -> str:
    if type(err).__name__ == "OutOfMemoryError":
        return f"out of GPU memory ({str(err).splitlines()[0] if str(err) else 'torch.cuda.OutOfMemoryError'})"
    if isinstance(err, CinemaError):
        return str(err)
    return "".join(traceback.format_exception_only(err)).strip()


def make_one(stage: Distributable, job: Job, rank: int, tmp_dir: Path) -> Outcome:
    started = time.monotonic()
    try:
        made = stage.make(job, tmp_dir)
    except Exception as err:  # noqa: BLE001 - any failure of a job is reported to rank 0
        return Outcome(rank, job, None, time.monotonic() - started, describe(err))
    return Outcome(rank, job, made, time.monotonic() - started)


# ---------------------------------------------------------------- the ranks, as rank 0 sees them


class RemoteRank:
    def __init__(self, index: int, mailbox: Mailbox) -> None:
        self.index = index
        self.mailbox = mailbox
        self.sent = self.answered = 0

    def assign(self, assignment: Assignment | str) -> None:
        self.mailbox.send(f"to/{self.index}", self.sent, assignment)
        self.sent += 1

    def poll(self) -> Outcome | None:
        outcome = self.mailbox.poll(f"from/{self.index}", self.answered)
        if outcome is not None:
            self.answered += 1
        return outcome

    def close(self) -> None:
        self.assign(STOP)


class LocalRank:
    """Rank 0's own builder: a thread making jobs beside the coordinator."""

    index = 0

    def __init__(self, stages: dict[str, Distributable], tmp_dir: Path) -> None:
        self.stages = stages
        self.tmp_dir = tmp_dir
        self.inbox: queue.Queue[Assignment | None] = queue.Queue()
        self.outbox: queue.Queue[Outcome] = queue.Queue()
        self.thread = threading.Thread(target=self._serve, name="cinema-rank-0", daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while (assignment := self.inbox.get()) is not None:
            self.outbox.put(make_one(self.stages[assignment.stage], assignment.job, 0, self.tmp_dir))

    def assign(self, assignment: Assignment) -> None:
        self.inbox.put(assignment)

    def poll(self) -> Outcome | None:
        try:
            return self.outbox.get_nowait()
        except queue.Empty:
            return None

    def close(self) -> None:
        self.inbox.put(None)  # a job its thread is still making dies with the process


class LocalGroup(LocalRank):
    """Rank 0's builder when it leads a context-parallel group (`render --gpus N --cp C`):
    its thread makes the jobs as a `LocalRank`'s does, and the group's other ranks take part
    in each of its backend calls (runtime.parallel's lead/follow). On close it waits for the
    thread, then releases them: the group's broadcasts come from one thread at a time, and
    the next project's session finds the members waiting. (A remote group's leader is a
    `RemoteRank`; its own process releases its members when told to stop.)"""

    def __init__(self, stages: dict[str, Distributable], tmp_dir: Path) -> None:
        super().__init__(stages, tmp_dir)
        self.in_flight = 0

    def assign(self, assignment: Assignment) -> None:
        self.in_flight += 1
        super().assign(assignment)

    def poll(self) -> Outcome | None:
        outcome = super().poll()
        if outcome is not None:
            self.in_flight -= 1
        return outcome

    def close(self) -> None:
        super().close()
        if not self.in_flight:  # else Ctrl-C or torchrun is ending the run, the members with it
            self.thread.join()
            parallel.release()


# ---------------------------------------------------------------- rank 0: the scheduler


@dataclass
class DistributedExecutor:
    """The `jobs.Executor` of rank 0: builds the stages' jobs on every rank as the
    dependency graph allows. `log` gets one entry per job built: which rank, how long,
    and when it was handed out and recorded (seconds since the executor started)."""

    reporter: Reporter
    ranks: list[Any]  # LocalRank and RemoteRank
    log: list[dict] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)

    def run(self, stage: Stage, jobs: list[Job], still_needed: Callable[[Job], bool] | None = None) -> list[Job]:
        return self.run_steps([Step(stage, lambda: jobs, still_needed)])[0]

    def run_steps(self, steps: list[Step]) -> list[list[Job]]:
        """All the steps' jobs as one graph: each planned now, handed out once the jobs it
        waits for — its stage's (`after`), and those making the artifacts it `needs` —
        are recorded or judged current, and judged then."""
        if not all(isinstance(step.stage, Distributable) for step in steps):  # the story, the film: here
            return [self._here(step.stage, step.plan(), step.still_needed) for step in steps]
        graph = _Graph(steps, [step.plan() for step in steps])
        for step, total in zip(steps, graph.totals):
            if total:
                self.reporter.stage(step.stage.name, total)
        idle = sorted(self.ranks, key=lambda r: r.index == 0)  # rank 0 also coordinates: it goes last
        busy: dict[int, tuple[Any, tuple[int, str], float]] = {}  # rank index: rank, node, handed out
        built: list[list[Job]] = [[] for _ in steps]
        failure: str | None = None
        while (graph.pending and failure is None) or busy:
            progressed = False
            for node in list(graph.pending):  # in order: a judged-current job frees the next at once
                if failure is not None or not idle:
                    break
                if not graph.ready(node):
                    continue
                step, job = graph.take(node)
                progressed = True
                if not (step.still_needed(job) if step.still_needed is not None else job.stale):
                    graph.finished.add(node)
                    continue
                rank = idle.pop(0)
                rank.assign(Assignment(step.stage.name, job))
                busy[rank.index] = (rank, node, self._now())
                self._show(node[0], busy, graph)
            for index, (rank, node, handed) in list(busy.items()):
                outcome = rank.poll()
                if outcome is None:
                    continue
                progressed = True
                del busy[index]
                idle.append(rank)
                stage, job = steps[node[0]].stage, graph.jobs[node]
                if outcome.error is not None:
                    failure = failure or (f"rank {index} failed making {stage.name} {job.label or job.key}: "
                                          f"{outcome.error}")
                    continue
                stage.record(outcome.job, outcome.made)
                graph.finished.add(node)
                built[node[0]].append(outcome.job)
                graph.done[node[0]] += job.size
                self._logged(stage.name, outcome.job, index, outcome.seconds, handed)
                for key in job.shots or (job.label or job.key,):
                    self.reporter.item_done(stage.name, key)
                if any(n[0] == node[0] for _, n, _ in busy.values()):
                    self._show(node[0], busy, graph)
            if not progressed:
                time.sleep(POLL)
        if failure is not None:
            raise RankFailed(f"{failure}. What was finished before is kept and recorded; fix the cause and run "
                             "`cinema render` again to resume")
        return built

    def _here(self, stage: Stage, jobs: list[Job], still_needed: Callable[[Job], bool] | None) -> list[Job]:
        handed = self._now()
        built = InProcessExecutor(self.reporter).run(stage, jobs, still_needed)
        for job in built:
            self._logged(stage.name, job, 0, self._now() - handed, handed)
        return built

    def _now(self) -> float:
        return round(time.monotonic() - self.started, 4)

    def _logged(self, stage: str, job: Job, rank: int, seconds: float, handed: float) -> None:
        self.log.append({"stage": stage, "key": job.label or job.key, "shots": list(job.shots), "rank": rank,
                         "seconds": round(seconds, 4), "handed_out": handed, "recorded": self._now()})

    def _show(self, step: int, busy: dict, graph: _Graph) -> None:
        """What each rank is making for step `step`, as its stage's progress line."""
        working = " · ".join(f"rank {i}: {graph.jobs[node].label or graph.jobs[node].key}"
                             for i, (_, node, _) in sorted(busy.items()) if node[0] == step)
        self.reporter.item(graph.steps[step].stage.name, working, graph.done[step], graph.totals[step])


class _Graph:
    """The jobs of a run's steps and what each waits for. A node is (step index, job key):
    keys are a stage's own (a keyframe and a shot are both named by their shot)."""

    def __init__(self, steps: list[Step], planned: list[list[Job]]) -> None:
        self.steps = steps
        self.jobs = {(i, job.key): job for i, jobs in enumerate(planned) for job in in_order(jobs)}
        self.pending = list(self.jobs)  # earlier steps first, each in dependency order: the hand-out order
        makers = {(steps[node[0]].stage.name, shot): node for node, job in self.jobs.items() for shot in job.shots}
        # What a job waits for: its stage's jobs (`after`) and the jobs making what it `needs`;
        # one outside the graph is current.
        self.waits = {(i, key): [(i, k) for k in job.after if (i, k) in self.jobs]
                      + [makers[n] for n in job.needs if n in makers]
                      for (i, key), job in self.jobs.items()}
        self.finished: set[tuple[int, str]] = set()  # recorded, or judged current
        self.totals = [sum(j.size for (i, _), j in self.jobs.items() if i == step and j.stale)
                       for step in range(len(steps))]
        self.done = [0] * len(steps)

    def ready(self, node: tuple[int, str]) -> bool:
        return all(w in self.finished for w in self.waits[node])

    def take(self, node: tuple[int, str]) -> tuple[Step, Job]:
        self.pending.remove(node)
        return self.steps[node[0]], self.jobs[node]


def distributable_stages(pipeline: Any) -> dict[str, Distributable]:
    return {s.name: s for s in (pipeline.keyframes, pipeline.shots)}


class Session:
    """Rank 0's side of one project: the ranks it hands jobs to (with context parallelism,
    each group's leader)."""

    def __init__(self, remote: list[RemoteRank]) -> None:
        self.remote = remote
        self.local: LocalRank | None = None
        self.executor: DistributedExecutor | None = None

    def executor_for(self, pipeline: Any) -> DistributedExecutor:
        """The executor over every builder, rank 0's making jobs with `pipeline`."""
        builder = LocalGroup if parallel.leads() else LocalRank
        self.local = builder(distributable_stages(pipeline), rank_tmp(pipeline.project.tmp_dir, 0))
        self.executor = DistributedExecutor(pipeline.reporter, [self.local, *self.remote])
        return self.executor

    @property
    def log(self) -> list[dict]:
        return self.executor.log if self.executor is not None else []

    def close(self) -> None:
        for rank in self.remote:
            rank.close()
        if self.local is not None:
            self.local.close()
        else:  # the project failed before rank 0 built: a group's members still wait for it
            parallel.release()


class RankGroup:
    """The ranks torchrun started, as this rank sees them: `session` on rank 0,
    `serve` on the others, once per project of the command, in the same order."""

    def __init__(self, world: World, store: Any) -> None:
        self.world = world
        self.store = store
        self.sessions = 0
        cp = parallel.group()
        # With context parallelism: every group's ranks, the leaders being the builders.
        self.groups = parallel.groups_of(world.size, len(cp.ranks)) if cp is not None else None

    @property
    def builders(self) -> list[int]:
        """The ranks rank 0 hands jobs to (itself included)."""
        return [g[0] for g in self.groups] if self.groups is not None else list(range(self.world.size))

    @contextlib.contextmanager
    def session(self) -> Iterator[Session]:
        """Rank 0: the workers wait for this session's jobs until it ends, however it ends."""
        mailbox = Mailbox(self.store, self.sessions)
        self.sessions += 1
        session = Session([RemoteRank(r, mailbox) for r in self.builders[1:]])
        try:
            yield session
        except Stopped:
            raise RankFailed(
                "stopped: torchrun ended this render, most often because another rank died (its report "
                "follows); what was finished before is kept and recorded, the artifacts in progress were "
                "dropped; run `cinema render` again to resume") from None
        finally:
            session.close()

    def serve(self, open_pipeline: Callable[[], Any]) -> None:
        """A worker: the next project's session. Its errors are rank 0's to report. A
        member of a context-parallel group follows its leader's backend calls instead."""
        try:
            pipeline = open_pipeline()
        except CinemaError as err:
            pipeline = err
        session = self.sessions
        self.sessions += 1
        if self.world.rank not in self.builders:
            follow(pipeline)
            return
        serve(pipeline, self.world, self.store, session)
        parallel.release()  # the session is over: this leader's members too


def follow(pipeline: Any) -> None:
    """A group member's side of one session: the leader's video-backend calls, until released.
    (A project this rank could not open is also one its leader could not: no call comes.)"""
    if isinstance(pipeline, BaseException):
        parallel.follow(None, None)
        return
    parallel.follow(pipeline.ctx.video.instance, pipeline.ctx.encode)


# ---------------------------------------------------------------- the other ranks


def serve(pipeline: Any, world: World, store: Any, session: int) -> None:
    """A worker rank's side of one session: make each job rank 0 hands over until it
    says stop. `pipeline` is the error when this rank could not open the project: then
    each job is answered with it (rank 0 reports it)."""
    mailbox = Mailbox(store, session)
    stages = {} if isinstance(pipeline, BaseException) else distributable_stages(pipeline)
    kill_after = _kill_after(world.rank)
    tmp = rank_tmp(pipeline.project.tmp_dir, world.rank) if stages else Path()
    if stages:
        confine_writes(tmp)
    try:
        n = 0
        while (assignment := mailbox.wait(f"to/{world.rank}", n)) != STOP:
            if stages:
                outcome = make_one(stages[assignment.stage], assignment.job, world.rank, tmp)
            else:
                outcome = Outcome(world.rank, assignment.job, None, 0.0, describe(pipeline))
            mailbox.send(f"from/{world.rank}", n, outcome)
            n += 1
            if kill_after == n:
                os.kill(os.getpid(), signal.SIGKILL)
    finally:
        confine_writes(None)


def _kill_after(rank: int) -> int | None:
    spec = os.environ.get(KILL_ENV, "")
    target, _, after = spec.partition(":")
    if target.strip() == str(rank) and after.strip().isdigit():
        return int(after)
    return None
