"""The executor runs a stage's jobs in dependency order, reports each, and asks the
stage again before a job that was current when planned; typed recipes explain changes."""

from __future__ import annotations

import pytest

from cinema_cli.pipeline.jobs import InProcessExecutor, Job, in_order
from cinema_cli.pipeline.recipes import FilmRecipe, ShotRecipe


class Recorder:
    def __init__(self):
        self.events = []

    def stage(self, name, total):
        self.events.append(("stage", name, total))

    def item(self, stage, key, index, total):
        self.events.append(("item", key, index, total))

    def item_done(self, stage, key):
        self.events.append(("done", key))

    def step(self, done, total):
        pass

    def notice(self, message):
        pass


class Stage:
    name = "shots"

    def __init__(self):
        self.built = []

    def build(self, job):
        self.built.append(job.key)


def test_jobs_run_after_what_they_wait_for():
    jobs = [Job("shots", "c", after=("b",)), Job("shots", "b", after=("a",)), Job("shots", "a"),
            Job("shots", "d", after=("elsewhere",))]
    assert [j.key for j in in_order(jobs)] == ["a", "d", "b", "c"]
    with pytest.raises(ValueError, match="wait for each other"):
        in_order([Job("shots", "x", after=("y",)), Job("shots", "y", after=("x",))])


def test_executor_reports_and_rechecks():
    reporter, stage = Recorder(), Stage()
    jobs = [Job("shots", "s1", shots=("s1",)), Job("shots", "s2", shots=("s2",), stale=False, after=("s1",)),
            Job("shots", "scene a", shots=("s3", "s4"), after=("s2",))]
    built = InProcessExecutor(reporter).run(stage, jobs, still_needed=lambda job: job.key != "s1")
    assert [j.key for j in built] == stage.built == ["s2", "scene a"]
    # The total counts what was stale when planned; a scene job counts its shots.
    assert reporter.events[0] == ("stage", "shots", 3)
    assert ("done", "s3") in reporter.events and ("done", "s4") in reporter.events
    assert InProcessExecutor(reporter).run(stage, [Job("shots", "s9", stale=False)]) == []


def test_one_comparison_says_what_changed():
    old = FilmRecipe(shots=[["s1", "a", 9, "cut"], ["s2", "b", 9, "cut"]], fps=8, crossfade_frames=4,
                     encoding={}, assembler_version="1").to_dict()
    new = FilmRecipe(shots=[["s1", "a", 9, "cut"], ["s3", "c", 9, "cut"]], fps=12, crossfade_frames=4,
                     encoding={}, assembler_version="1", subtitles=[["s1", "hi"]])
    assert new.changes(old) == ["shot s3 added", "shot s2 removed", "fps changed", "subtitles changed"]
    shot = ShotRecipe(caption="x", backend_inputs={"lora": "1", "model m": "2"})
    assert shot.changes({**shot.to_dict(), "backend inputs": {"lora": "0", "model m": "2"}}) == [
        "backend input lora changed"]
    assert "next keyframe" in shot.to_dict()  # recorded as null: "reads none"
