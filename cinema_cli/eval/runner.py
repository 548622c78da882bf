"""Running a metric: open the film (a project or a folder), build the feature models it
needs on first use, measure, compare with `--against`, and keep a project's result.

The metrics are a registry: name -> the module that measures it (`measure(film, tools)`
returning a result, see results.py). A new metric is one module listed here.
"""

from __future__ import annotations

import contextlib
import importlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.eval import results
from cinema_cli.eval.features import DEFAULT_DINO, Cache, Dino, load_clip
from cinema_cli.eval.sources import FRAMES_PER_SHOT, Film, from_folder, from_project
from cinema_cli.project.project import CONFIG_FILE, Project

METRICS = {
    "text": "cinema_cli.eval.text",
    "consistency": "cinema_cli.eval.consistency",
    "aesthetic": "cinema_cli.eval.aesthetic",
    "judge": "cinema_cli.eval.judge",
}


@dataclass(frozen=True)
class Source:
    """A project (the default: found from the current folder), or a folder of videos or
    keyframes with an optional captions file."""

    project: Path | None = None
    folder: Path | None = None
    captions: Path | None = None

    def open(self, frames: int, keyframes_only: bool = False) -> Film:
        if self.folder is not None:
            return from_folder(self.folder, self.captions, frames)
        if self.captions is not None:
            raise BadInput("--captions goes with --folder: a project's captions are its storyboard")
        return from_project(Project.open(self.project), frames, keyframes_only)

    def against(self, other: Path) -> "Source":
        """`--against OTHER`: a project when it has a cinema.yaml, else a folder measured
        with the same captions file."""
        if (other / CONFIG_FILE).is_file():
            return Source(project=other)
        if not other.is_dir():
            raise BadInput(f"--against {other}: no such project or folder")
        if self.folder is None:
            raise BadInput(f"--against {other}: not a cinema project (no {CONFIG_FILE}); to compare folders of "
                           "videos, measure one with --folder and --captions")
        return Source(folder=other, captions=self.captions)


@dataclass
class Models:
    """Which feature models to use; None: the project's memory CLIP, else the defaults."""

    clip_model: str | None = None
    clip_weights: str | None = None
    dino: str = DEFAULT_DINO
    aesthetic: str | None = None
    device: str = "auto"
    faces: str | None = None  # a YuNet .onnx; None: OpenCV's bundled cascade, if any
    judge: dict = field(default_factory=dict)  # judge options (model, retries, ...)


class Tools:
    """The feature models of one film, each built on first use; vectors cached per film."""

    def __init__(self, film: Film, models: Models) -> None:
        self.film = film
        self.models = models
        project = film.project
        self.root = project.root if project else Path.cwd()
        self.cache = Cache(project.cache_dir / "eval" if project else None, project.tmp_dir if project else None)

    @cached_property
    def clip(self):
        m = self.models
        model, weights = m.clip_model, m.clip_weights
        if model is None and weights is None and self.film.project is not None:
            memory = self.film.project.config.memory
            if memory.weights is not None or memory.model.startswith("hf-hub:"):
                model, weights = memory.model, memory.weights
        if model is not None and weights is None and not model.startswith("hf-hub:"):
            raise BadInput(f"--clip-model {model} needs --clip-weights (an open_clip pretrained tag, a file, "
                           "or `random` for plumbing tests)")
        return load_clip(model, weights, self.root, m.device, self.cache)

    @cached_property
    def dino(self):
        return Dino(self.models.dino, self.models.device, self.cache)

    @cached_property
    def faces(self):
        from cinema_cli.eval.features import Faces

        return Faces(self.models.faces)

    @cached_property
    def aesthetic(self):
        from cinema_cli.eval.aesthetic import AestheticPredictor

        if self.models.aesthetic is None:
            raise BadInput("eval aesthetic needs the LAION aesthetic predictor's weights: --aesthetic FILE "
                           "(or ORG/REPO/FILE in the Hugging Face cache, e.g. fetched with `huggingface-cli "
                           "download camenduru/improved-aesthetic-predictor sac+logos+ava1-l14-linearMSE.pth`)")
        return AestheticPredictor(self.models.aesthetic)


def metric_module(name: str):
    if name not in METRICS:
        raise BadInput(f"unknown metric {name!r}; metrics: {', '.join(METRICS)}")
    return importlib.import_module(METRICS[name])


def run_metric(name: str, source: Source, models: Models, *, frames: int = FRAMES_PER_SHOT,
               against: Path | None = None) -> dict:
    """Measure `source` (and `against`, compared), and save a project's result."""
    module = metric_module(name)
    keyframes_only = getattr(module, "KEYFRAMES_ONLY", False)
    # Every input is opened and checked before anything is measured or written.
    film = source.open(frames, keyframes_only)
    other = source.against(against).open(frames, keyframes_only) if against is not None else None
    with contextlib.ExitStack() as locks:  # the feature caches and the result are written
        for project in {f.project.root: f.project for f in (film, other) if f and f.project}.values():
            locks.enter_context(project.lock())
        result = _measure(module, film, models)
        if other is not None:
            result["against"] = results.compare(result, _measure(module, other, models))
        if film.project is not None:
            result["saved"] = str(results.save(film.project, result))
    return result


def _measure(module, film: Film, models: Models) -> dict:
    tools = Tools(film, models)
    result = module.measure(film, tools)
    result = {"metric": module.NAME, "film": film.name, "source": "project" if film.project else "folder",
              **result, "notices": film.notices + result.get("notices", [])}
    result["embedded"] = tools.cache.computed
    return result


def run_stress_test(project_dir: Path | None, models: Models, *, pairs: tuple[int, ...], frames: int,
                    judge: bool | None = None) -> dict:
    """`eval stress` on a project; the judge scores each row when a Gemini key is set
    (`judge` None), or as `judge` says."""
    import os

    from cinema_cli.eval.stress import run_stress

    project = Project.open(project_dir)
    if judge is None:
        from cinema_cli.story.gemini_transport import KEY_VARS

        judge = any(os.environ.get(var, "").strip() for var in KEY_VARS)
    judging = None
    if judge:
        from cinema_cli.eval.judge import Judge

        judging = Judge(models.judge)
    tools = Tools(Film(project.root.name, [], "", project), models)
    with project.lock():
        result = run_stress(project, tools, pairs=pairs, frames=frames, judge=judging)
        result["saved"] = str(results.save(project, result))
    return result
