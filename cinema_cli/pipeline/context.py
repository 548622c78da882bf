"""What every stage of one command shares, built once per command: the project, its
settings (with this run's overrides), the file hasher, the manifest, the reporter, the
notices for the user, and the backend chosen for each stage.

Everything the run will read is validated here, before anything is written. Backends
are chosen and their options validated, but an instance is made only when a stage asks
for one (`BackendChoice.instance`), and the memory planner only when keyframes are
judged: a command that only reads builds no model.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from cinema_cli.assemble.music import MusicBed
from cinema_cli.assemble.probe import probe_audio
from cinema_cli.errors import BadInput, CinemaError
from cinema_cli.keyframes.base import keyframe_backends
from cinema_cli.pipeline.state import Reporter, SilentReporter
from cinema_cli.project.files import inside
from cinema_cli.project.manifest import FileHasher, Manifest, Record
from cinema_cli.project.project import Project
from cinema_cli.project.schema import AssembleSettings, CinemaConfig, StorySettings
from cinema_cli.project.yamlio import dotted, file_error, message_of
from cinema_cli.registry import Registry
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.runtime.inputs import InputHasher, declared_inputs, resolve_file_options
from cinema_cli.story.base import storyboarders
from cinema_cli.video.base import EncodeSettings, shot_backends


@dataclass
class BackendChoice:
    """A stage's backend as cinema.yaml (or this run) chose it: its class and validated
    options. What a recipe records of it needs no instance."""

    cls: type
    options: BaseModel  # as cinema.yaml wrote them: what recipes record
    root: Path  # the project's: where relative file options lie

    @cached_property
    def resolved(self) -> BaseModel:
        """The options the backend reads and whose files are hashed: file and model
        options (FileOption, ModelOption) resolved inside the project, so both are the
        same file or folder whatever the working directory."""
        return resolve_file_options(self.options, self.root)

    @property
    def name(self) -> str:
        return self.cls.name

    @property
    def version(self) -> str:
        return self.cls.version

    @cached_property
    def instance(self) -> Any:
        return self.cls(self.resolved)


@dataclass
class Context:
    project: Project
    config: CinemaConfig
    reporter: Reporter
    story: BackendChoice
    keyframes: BackendChoice
    video: BackendChoice
    music: MusicBed | None
    # True when `cinema story --llm NAME` chose the storyboarder for this run only.
    story_chosen: bool = False
    hasher: FileHasher = field(default_factory=FileHasher)
    notices: list[str] = field(default_factory=list)

    @cached_property
    def manifest(self) -> Manifest:
        return Manifest(self.project.state_dir / "manifest", self.project.tmp_dir)

    @cached_property
    def script(self):
        return self.project.script

    @cached_property
    def encode(self) -> EncodeSettings:
        return EncodeSettings(crf=self.config.assemble.crf, preset=self.config.assemble.preset)

    @cached_property
    def memory(self):
        from cinema_cli.memory.planner import MemoryPlanner

        return MemoryPlanner(self.project, self.config.memory, self.hasher)

    @cached_property
    def input_hasher(self) -> InputHasher:
        return InputHasher(self.project.cache_dir / "input-hashes.json", self.project.tmp_dir)

    def backend_inputs(self, choice: BackendChoice) -> dict[str, str] | None:
        """Content hashes of the files `choice` declares it reads; None when it reads none."""
        return declared_inputs(choice.cls, choice.options, choice.resolved, self.input_hasher)

    def record(self, stage: str, key: str, record: Record) -> None:
        """Record an artifact in the manifest, and save the input hashes judged so far
        with it: a run refused before it makes anything changes nothing on disk."""
        self.manifest.put(stage, key, record)
        self.input_hasher.save()

    @property
    def backend_names(self) -> dict[str, str]:
        return {"story": self.story.name, "keyframes": self.keyframes.name, "video": self.video.name}

    def check_music(self) -> None:
        """Refuse music that ffmpeg cannot read as audio, before a run writes anything."""
        if self.music is None:
            return
        try:
            probe_audio(self.music.path)
        except CinemaError:
            raise BadInput(f"{self.music.label}: {self.music.path.name} is not a readable audio file") from None


def build_context(project: Project, reporter: Reporter | None = None, story_backend: str | None = None,
                  assemble_overrides: dict[str, Any] | None = None) -> Context:
    """`assemble_overrides`: `assemble:` settings of cinema.yaml replaced for this run
    only (`cinema assemble --subtitles/--music...`), by field name. `story_backend`: the
    storyboarder of `cinema story --llm NAME`, which runs with its own defaults."""
    config = project.config
    if assemble_overrides:
        config = config.model_copy(update={"assemble": override_assemble(config.assemble, assemble_overrides)})
    music = music_bed(project, config.assemble, from_flag="music" in (assemble_overrides or {}))
    project.script  # noqa: B018 - validated now, before anything is written
    story = config.story
    if story_backend is not None and story_backend != story.backend:
        story = StorySettings(backend=story_backend)
    notices: list[str] = []
    choices = {}
    for stage, registry, settings in (("keyframes", keyframe_backends, config.keyframes),
                                      ("video", shot_backends, config.video)):
        name, notice = resolve_backend(stage, settings.backend)
        if notice:
            notices.append(notice)
        choices[stage] = choose(project, stage, registry, settings, name)
    return Context(
        project=project, config=config, reporter=reporter or SilentReporter(),
        story=choose(project, "story", storyboarders, story), keyframes=choices["keyframes"],
        video=choices["video"], music=music, story_chosen=story is not config.story, notices=notices,
    )


def choose(project: Project, stage: str, registry: Registry, settings: Any, name: str | None = None) -> BackendChoice:
    """The backend class `settings` names and its options, validated; a mistake in
    cinema.yaml is reported at its line."""
    try:
        cls = registry.get(name or settings.backend)
    except BadInput as err:
        if settings is not getattr(project.config, stage, None):
            raise  # a backend named for this run (`--llm NAME`), not by cinema.yaml
        raise file_error(project.config_path, [((stage, "backend"), f"{stage}.backend", str(err))]) from None
    try:
        options = cls.Options.model_validate(settings.options)
    except ValidationError as err:
        raise file_error(project.config_path, [
            ((stage, "options", *map(str, e["loc"])), f"{stage}.options.{dotted(e['loc'])}", message_of(e))
            for e in err.errors()
        ]) from None
    return BackendChoice(cls, options, project.root)


def music_bed(project: Project, settings: AssembleSettings, *, from_flag: bool) -> MusicBed | None:
    """The configured music, checked to be a file inside the project."""
    if settings.music is None:
        return None
    label = "--music" if from_flag else f"{project.config_path.name}: assemble.music"
    try:
        path = inside(project.root, settings.music, label)
        if not path.is_file():
            raise BadInput(f"{label}: music file {settings.music!r} not found")
    except BadInput as err:
        if from_flag:
            raise
        message = str(err).removeprefix(f"{label}: ")
        raise file_error(project.config_path, [(("assemble", "music"), "assemble.music", message)]) from None
    return MusicBed(path, settings.music_loudness, settings.music_fade_seconds, label)


def override_assemble(settings: AssembleSettings, overrides: dict[str, Any]) -> AssembleSettings:
    try:
        return AssembleSettings.model_validate({**settings.model_dump(), **overrides})
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in err.errors())
        raise BadInput(f"assemble options: {problems}") from None
