"""A directing session: each line becomes the next shot of the film, made forward in time.

A shot is drawn and rendered before it becomes part of the film. Its keyframe comes
from the memory planner over the keyframes before it (as `render` draws one); then a
causal video backend continues the film's latent history with it (`render_next`), or
any other shot backend renders it from its keyframe. Only then is it committed: the
storyboard gains the shot (atomically: that write is the commit), the stream gains its
segment and film.mp4 is joined again. Shots before it are never touched.

Crash safety: `.cinema/direct/pending.json` names the shot in flight before any of its
files is written. Ctrl-C discards that shot on the spot; after a kill, the next
session does (`recover`): files of a pending shot the storyboard does not hold are
removed, history and memory-log entries of shots not in the storyboard dropped, and the
stream and the film made to match the storyboard again.

Undo drops the last shot, once, and only a shot made in this session: the shots before
it were watched and built upon, so they are the fixed past (edit one deliberately with
`cinema shot ID`).
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Callable, Iterable
from contextlib import AbstractContextManager

from cinema_cli.direct.lines import BadLine, Command, Direction, parse_line
from cinema_cli.direct.routing import keyframe_routing, memory_log
from cinema_cli.direct.signals import Interrupt, shielded
from cinema_cli.direct.stream import Clip, HlsStream
from cinema_cli.errors import BadInput, CinemaError, ProjectFileError
from cinema_cli.pipeline import Pipeline
from cinema_cli.pipeline.jobs import InProcessExecutor, Job
from cinema_cli.pipeline.state import DONE, ArtifactState, Reporter
from cinema_cli.project.files import atomic_output, atomic_write_text
from cinema_cli.project.manifest import Record
from cinema_cli.project.project import Project
from cinema_cli.project.schema import MIN_JOINED_FRAMES, Shot, Storyboard, caption_tags
from cinema_cli.story.base import shot_seed
from cinema_cli.video.base import GroupShotBackend
from cinema_cli.video.causal import CausalShotBackend, LatentHistory, Routing

DIRECTED_ID = re.compile(r"^d(\d+)$")
Emit = Callable[[dict], None]
Reporting = Callable[[], AbstractContextManager[Reporter]]


class DirectingSession:
    def __init__(self, project: Project, *, scene: str | None = None, seconds: float | None = None) -> None:
        """Validates everything the session will read (project files, backends, memory
        weights, music) before anything is written; the caller then takes the lock."""
        self.project = project
        self.pipeline = Pipeline(project)
        self.ctx = self.pipeline.ctx
        backend = self.ctx.video.instance
        if isinstance(backend, GroupShotBackend):
            raise BadInput(f"video: {self.ctx.video.name} renders whole scenes at once, and a directing session "
                           "makes one shot at a time without touching the ones before; set `video: backend:` "
                           "in cinema.yaml to animatic, wan or a causal model (helios)")
        self.causal = isinstance(backend, CausalShotBackend)
        script = self.ctx.script
        if scene is not None and script.scene(scene) is None:
            raise BadInput(f"--scene {scene}: no such scene in script.yaml "
                           f"(scenes: {', '.join(s.id for s in script.scenes)})")
        self.scene = scene
        self.seconds = seconds if seconds is not None else self.ctx.config.shot_seconds
        fps = self.ctx.config.fps
        if round(self.seconds * fps) < MIN_JOINED_FRAMES:  # the next shot could never be joined to it
            raise BadInput(f"--seconds {self.seconds:g} is {round(self.seconds * fps)} frame(s) at {fps} fps; a shot "
                           f"the film goes on from needs at least {MIN_JOINED_FRAMES} frames "
                           f"(--seconds {MIN_JOINED_FRAMES / fps:.3g} or more)")
        self.cast = [c.name for c in script.characters]
        self.pipeline.check_storyboard()
        self.pipeline.check_inputs("film")
        state = project.state_dir / "direct"
        self.pending_path = state / "pending.json"
        self.history = LatentHistory(state / "history")
        self.log = memory_log(project)
        self.stream = HlsStream(project.stream_dir, project.tmp_dir, self.ctx.config.fps)
        self.made: list[str] = []  # shots made in this session, in order
        self.undone = False  # the last undo has not been followed by a new shot
        self.discarded: str | None = None  # the shot an interrupt discarded

    # ------------------------------------------------------------ session

    def start(self) -> list[dict]:
        """Repair what a killed session left, check the film can be continued, and open
        the stream. The caller holds the project lock. Returns the events to report."""
        events = []
        self.project.clear_tmp()
        dropped = self.recover()
        if dropped:
            events.append({"event": "repaired", "dropped": dropped})
        board = self._board()
        unrendered = [s.id for s in board.shots if not self.project.shot_path(s.id).is_file()] if board else []
        if unrendered:
            raise BadInput(f"shot(s) {', '.join(unrendered)} of storyboard.yaml have no video yet, and a directing "
                           "session continues a finished film; run `cinema render` first")
        if self.causal and board:
            events += self._unseen_by_the_model(board)
        for stage in (self.pipeline.keyframes, self.pipeline.shots):
            if stage.has_preflight:
                stage.preflight()
        events += [{"event": "notice", "message": m} for m in self.pipeline.notices]
        with shielded():
            self._publish(board, ended=False)
        events.append({
            "event": "session", "project": str(self.project.root), "shots": len(board.shots) if board else 0,
            "last": board.shots[-1].id if board else None, "stream": str(self.stream.playlist),
            "film": str(self.project.film_path), "backends": self.ctx.backend_names,
            "causal": self.causal,
        })
        return events

    def drive(self, lines: Iterable[str], emit: Emit, reporting: Reporting, *,
              interactive: bool = False) -> dict:
        """Direct each line in turn; a bad line or a failed shot is reported and the session
        goes on. An interrupt discards the shot in flight and ends the session, or, when
        `interactive`, returns to the prompt. Counts of what happened."""
        counts = {"shots": 0, "undone": 0, "bad": 0, "failed": 0}
        for number, line in enumerate(lines, start=1):
            try:
                parsed = parse_line(line, self.cast)
                if isinstance(parsed, Command) and parsed.name == "quit":
                    break
                if isinstance(parsed, Command) and parsed.name == "comment":
                    continue
                with reporting() as reporter:
                    event = self.direct(parsed, reporter) if isinstance(parsed, Direction) else self.undo()
                counts["shots" if event["event"] == "shot" else "undone"] += 1
                emit({**event, "line": number})
            except BadInput as err:
                counts["bad"] += 1
                emit({"event": "error", "line": number, "text": line.rstrip("\n"), "error": str(err),
                      "exit_code": err.exit_code})
            except CinemaError as err:
                counts["failed"] += 1
                emit({"event": "error", "line": number, "text": line.rstrip("\n"), "error": str(err),
                      "exit_code": err.exit_code})
            except Interrupt:
                emit({"event": "discarded", "line": number, "shot": self.discarded,
                      "reason": "interrupted: the shot was dropped, the film is as it was"})
                if not interactive:
                    raise
        return counts

    def close(self) -> dict:
        """End the stream (a player knows the film is complete)."""
        board = self._board()
        with shielded():
            self._publish(board, ended=True)
        return {"event": "end", "shots": len(board.shots) if board else 0, "made": list(self.made),
                "stream": str(self.stream.playlist), "film": str(self.project.film_path) if board else None}

    # ------------------------------------------------------------ one line

    def _unseen_by_the_model(self, board: Storyboard) -> list[dict]:
        """Shots `cinema render` made have no latents in the history, so a causal model
        cannot route to them; say so rather than let a `continue:` after one silently
        start afresh."""
        in_history = set(self.history.shots())
        unseen = [s.id for s in board.shots if s.id not in in_history]
        if not unseen:
            return []
        return [{"event": "notice", "message": (
            f"{self.ctx.video.name}: shot(s) {', '.join(unseen)} were made by `cinema render`, not in a directing "
            "session, so their latents are not in the film's history: the model does not see them, and a "
            "`continue:` right after one starts afresh")}]

    def direct(self, direction: Direction, reporter: Reporter) -> dict:
        """Make the next shot and commit it; the event that reports it."""
        started = time.monotonic()
        board = self._board()
        shots = list(board.shots) if board else []
        if direction.kind == "continue" and not shots:
            raise BadLine("there is no shot to continue yet; start with a cut (a bare line)")
        shot = self._new_shot(direction, shots)
        draft = Storyboard(shots=[*shots, shot])
        try:
            self.project.validate_storyboard(draft)
        except ProjectFileError as err:
            raise BadLine(str(err)) from None
        self.discarded = None
        self.ctx.reporter = reporter
        committed = False
        self._write_pending(shot.id, "make")
        try:
            self.project.draft_storyboard(draft)
            routing = self._generate(draft, shot)
            with shielded():
                self.project.write_storyboard(draft)  # the commit
                committed = True
                self.pending_path.unlink(missing_ok=True)
                self.made.append(shot.id)
                self.undone = False
                segments = self._publish(draft, ended=False)
        except BaseException:
            with shielded():
                self.project.forget()
                if not committed:
                    self._remove_shot(shot.id)
                    self.pending_path.unlink(missing_ok=True)
                    self.discarded = shot.id
            raise
        return {
            "event": "shot", "id": shot.id, "kind": direction.kind, "caption": shot.caption,
            "camera": shot.camera, "duration": shot.duration, "transition": shot.transition,
            "keyframe": str(self.project.keyframe_path(shot.id)), "video": str(self.project.shot_path(shot.id)),
            "segment": segments[-1].name, "film": str(self.project.film_path),
            "seconds": round(time.monotonic() - started, 3), "memory": routing.to_json(),
        }

    def undo(self) -> dict:
        board = self._board()
        if self.undone:
            raise BadLine("only the last shot can be undone, once: the shots before it are the fixed past "
                          "(edit one deliberately with `cinema shot ID`)")
        if not self.made or board is None or board.shots[-1].id != self.made[-1]:
            last = board.shots[-1].id if board else None
            raise BadLine(f"the last shot {last} was made before this session; the past is fixed, so only a shot "
                          "made in this session can be undone" if last else "there is no shot to undo")
        shot_id = board.shots[-1].id
        remaining = board.shots[:-1]
        self._write_pending(shot_id, "undo")
        with shielded():
            if remaining:
                self.project.write_storyboard(Storyboard(shots=remaining))  # the commit
            else:
                self.project.storyboard_path.unlink()
                self.project.forget()
                self.project.film_path.unlink(missing_ok=True)
                self._forget_record("film", "film")
            self._remove_shot(shot_id)
            self.pending_path.unlink(missing_ok=True)
            self.made.pop()
            self.undone = True
            self._publish(self._board(), ended=False)
        return {"event": "undo", "id": shot_id, "shots": len(remaining)}

    # ------------------------------------------------------------ making a shot

    def _new_shot(self, direction: Direction, shots: list[Shot]) -> Shot:
        previous = shots[-1] if shots else None
        numbers = [int(m[1]) for s in shots if (m := DIRECTED_ID.match(s.id))]
        shot_id = f"d{max(numbers, default=0) + 1:03d}"
        scene = self.scene or (previous.scene if previous else self.ctx.script.scenes[0].id)
        camera = direction.camera or (previous.camera if direction.kind == "continue" and previous else
                                      "medium, static")
        return Shot(
            id=shot_id, scene=scene, caption=direction.caption, characters=caption_tags(direction.caption),
            camera=camera, duration=self.seconds, seed=shot_seed(self.ctx.config.seed, shot_id),
            transition="continuous" if direction.kind == "continue" else "cut", directed=True,
        )

    def _generate(self, draft: Storyboard, shot: Shot) -> Routing:
        """Draw the keyframe and make the video of `shot` (the last of `draft`); its memory."""
        executor = InProcessExecutor(self.ctx.reporter)
        keyframes = self.pipeline.keyframes
        keyframe_job = Job(keyframes.name, shot.id, recipe=keyframes.recipe(shot), shots=(shot.id,), label=shot.id,
                           outputs=(self.project.keyframe_path(shot.id), self.project.sidecar_path(shot.id)))
        executor.run(keyframes, [keyframe_job])
        shots = self.pipeline.shots
        jobs, _ = shots.plan(draft, {s.id: ArtifactState(DONE) for s in draft.shots}, {shot.id})
        job = next(j for j in jobs if j.shots == (shot.id,))
        if self.causal:
            routing = self._continue_history(job, shot)
        else:
            executor.run(shots, [job])
            memory = self.ctx.memory
            routing = keyframe_routing(keyframe_job.request.context, len(memory.candidates(draft, shot)),
                                       memory.embedder.identity)
        self.log.put(shot.id, routing)
        return routing

    def _continue_history(self, job: Job, shot: Shot) -> Routing:
        """A causal backend continues the film's latent history with the shot; its latents
        join the history before the shot is published (a discard drops them again)."""
        reporter, path = self.ctx.reporter, self.project.shot_path(shot.id)
        reporter.stage("shots", 1)
        reporter.item("shots", shot.id, 0, 1)
        with atomic_output(path, self.project.tmp_dir) as temp:
            routing, latents = self.ctx.video.instance.render_next(
                job.request, shot.transition != "continuous", self.history, temp, self.ctx.encode, reporter.step)
            self.history.append(shot.id, latents)
        self.ctx.record("shots", shot.id, Record(job.recipe[0].to_dict(), self.ctx.hasher(path) or ""))
        reporter.item_done("shots", shot.id)
        return routing

    # ------------------------------------------------------------ the film on disk

    def _board(self) -> Storyboard | None:
        return self.project.storyboard if self.project.has_storyboard() else None

    def _publish(self, board: Storyboard | None, *, ended: bool) -> list:
        """The stream, then film.mp4, made to match `board` (each only where it differs)."""
        if board is None:
            self.stream.sync([], ended=ended)
            return []
        hasher, frames_of = self.ctx.hasher, self.pipeline.frames_of
        paths = {s.id: self.project.shot_path(s.id) for s in board.shots}
        clips = [Clip(s.id, paths[s.id], hasher(paths[s.id]) or "", frames_of(s)) for s in board.shots]
        segments = self.stream.sync(clips, ended=ended)
        film = self.pipeline.film
        InProcessExecutor(self.ctx.reporter).run(film, film.plan(board, {s.id: ArtifactState(DONE)
                                                                        for s in board.shots}))
        return segments

    def recover(self) -> str | None:
        """Undo what a killed session left half done; the shot it dropped, if any."""
        board = self._board()
        ids = {s.id for s in board.shots} if board else set()
        dropped = None
        pending = self._read_pending()
        if pending is not None:
            if pending not in ids:  # never committed (or its undo was): its files go
                self._remove_shot(pending)
                dropped = pending
            self.pending_path.unlink(missing_ok=True)
        for shot_id in self.history.shots():
            if shot_id not in ids:
                self.history.drop(shot_id)
        self.log.keep(ids)
        return dropped

    def _remove_shot(self, shot_id: str) -> None:
        """Everything a directed shot put on disk, for a shot that is not in the film."""
        for path in (self.project.keyframe_path(shot_id), self.project.sidecar_path(shot_id),
                     self.project.shot_path(shot_id)):
            path.unlink(missing_ok=True)
        for stage in ("keyframes", "shots"):
            self._forget_record(stage, shot_id)
        if shot_id in self.history.shots():
            self.history.drop(shot_id)
        self.log.keep({s for s in self.log.entries() if s != shot_id})

    def _forget_record(self, stage: str, key: str) -> None:
        self.ctx.manifest.record_path(stage, key).unlink(missing_ok=True)

    def _write_pending(self, shot_id: str, action: str) -> None:
        self.pending_path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.pending_path, json.dumps({"shot": shot_id, "action": action}) + "\n",
                          self.project.tmp_dir)

    def _read_pending(self) -> str | None:
        try:
            data = json.loads(self.pending_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        shot_id = data.get("shot") if isinstance(data, dict) else None
        return shot_id if isinstance(shot_id, str) and DIRECTED_ID.match(shot_id) else None

