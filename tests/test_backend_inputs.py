"""Backends declare the files they read (weights, LoRAs): their content is in the recipe,
so a LoRA retrained at the same path makes exactly the artifacts made with it stale,
and the hash is remembered with what a run makes (a refused run writes nothing), so
judging it again reads nothing. A model option names a folder of the project, whatever
the working directory, or a Hub id.

Two small backends declared here read a LoRA-like file and let its bytes change what
they draw, as an adapter does; they run through the real pipeline."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import yaml
from finishing_support import small_project
from PIL import Image

from cinema_cli.errors import BadInput
from cinema_cli.keyframes.base import keyframe_backends
from cinema_cli.keyframes.sketch import SketchKeyframes, SketchOptions
from cinema_cli.pipeline import DONE, STALE, Pipeline
from cinema_cli.project.project import Project
from cinema_cli.runtime import inputs
from cinema_cli.video.animatic import AnimaticOptions, AnimaticShots
from cinema_cli.video.base import shot_backends


def _tint(lora: str) -> int:
    return Path(lora).read_bytes()[0]


class LoraSketchOptions(SketchOptions):
    lora: str


@keyframe_backends.register
class LoraSketch(SketchKeyframes):
    name = "test-lora-sketch"
    Options = LoraSketchOptions

    @classmethod
    def weights(cls, options) -> list[str]:
        return []

    @classmethod
    def input_files(cls, options) -> dict[str, Path]:
        return {"lora": Path(options.lora)}

    def render(self, request, progress):
        image = np.asarray(super().render(request, progress)).copy()
        image[..., 2] = _tint(self.options.lora)
        return Image.fromarray(image)


class LoraAnimaticOptions(AnimaticOptions):
    lora: str


@shot_backends.register
class LoraAnimatic(AnimaticShots):
    name = "test-lora-animatic"
    Options = LoraAnimaticOptions

    @classmethod
    def weights(cls, options) -> list[str]:
        return []

    @classmethod
    def input_files(cls, options) -> dict[str, Path]:
        return {"lora": Path(options.lora)}


def project_with_loras(tmp_path: Path) -> Path:
    root = small_project(tmp_path, "heist", 128, 64, 4)
    (root / "adapters").mkdir()
    (root / "adapters" / "look.safetensors").write_bytes(b"\x10look")
    (root / "adapters" / "motion.safetensors").write_bytes(b"\x20motion")
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["keyframes"] = {"backend": LoraSketch.name, "options": {"lora": str(root / "adapters/look.safetensors")}}
    config["video"] = {"backend": LoraAnimatic.name, "options": {"lora": str(root / "adapters/motion.safetensors")}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config))
    return root


def states(root: Path) -> tuple[set, set, str, list]:
    status = Pipeline(Project.open(root)).status()
    keyframes = {r.id for r in status.shots if r.keyframe.state == STALE}
    shots = {r.id for r in status.shots if r.shot.state == STALE}
    reasons = [reason for r in status.shots for reason in r.keyframe.reasons + r.shot.reasons]
    return keyframes, shots, status.film.state, reasons


def test_a_retrained_lora_makes_exactly_its_artifacts_stale(tmp_path, monkeypatch):
    root = project_with_loras(tmp_path)
    first = Pipeline(Project.open(root)).run()
    ids = first.rebuilt.keyframes
    assert first.rebuilt.film and len(ids) > 2
    assert states(root)[:3] == (set(), set(), DONE)

    # Touched but the same bytes: still current.
    lora = root / "adapters" / "motion.safetensors"
    os.utime(lora, ns=(lora.stat().st_atime_ns, lora.stat().st_mtime_ns + 10**9))
    assert states(root)[:3] == (set(), set(), DONE)

    # The motion LoRA retrained at the same path: every shot, no keyframe.
    lora.write_bytes(b"\x21motion, retrained")
    keyframes, shots, film, reasons = states(root)
    assert (keyframes, shots, film) == (set(), set(ids), STALE)
    assert "backend input lora changed" in reasons
    again = Pipeline(Project.open(root)).run()
    assert again.rebuilt.keyframes == [] and again.rebuilt.shots == ids
    # This animatic's frames do not depend on the file, so the shots came out the same
    # and the film, made from their content, is current (as make would have it).
    assert not again.rebuilt.film

    # The keyframe LoRA: every keyframe, and the shots made from them.
    (root / "adapters" / "look.safetensors").write_bytes(b"\x90look, retrained")
    keyframes, shots, film, _ = states(root)
    assert keyframes == set(ids)
    before = {i: (root / "keyframes" / f"{i}.png").read_bytes() for i in ids}
    third = Pipeline(Project.open(root)).run()
    assert third.rebuilt.keyframes == ids and third.rebuilt.shots == ids
    assert all((root / "keyframes" / f"{i}.png").read_bytes() != before[i] for i in ids)

    # Judged again, the hashes come from the cache: no input file is read.
    def no_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(inputs, "file_sha256", no_reading)
    assert states(root)[:3] == (set(), set(), DONE)


def test_a_missing_input_file_is_bad_input_and_writes_nothing(tmp_path):
    root = project_with_loras(tmp_path)
    (root / "adapters" / "look.safetensors").unlink()
    with pytest.raises(BadInput, match="lora .*look.safetensors not found"):
        Pipeline(Project.open(root)).run()
    assert not (root / "keyframes").exists() or not list((root / "keyframes").iterdir())


@shot_backends.register
class RefusingAnimatic(LoraAnimatic):
    """Refuses every render in its preflight, after the run has hashed its inputs."""

    name = "test-refusing-animatic"

    def preflight(self, plan) -> list[str]:
        raise BadInput(f"{self.name}: its weights are not on this machine")


def use_video_backend(root: Path, name: str) -> None:
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["video"]["backend"] = name
    (root / "cinema.yaml").write_text(yaml.safe_dump(config))


def test_a_refused_run_writes_no_input_hashes_and_a_finished_one_remembers_them(tmp_path, monkeypatch):
    from test_bad_input import snapshot, snapshot_diff

    root = project_with_loras(tmp_path)
    Pipeline(Project.open(root)).run(until="story")
    use_video_backend(root, RefusingAnimatic.name)
    memo = root / ".cinema" / "cache" / "input-hashes.json"
    before = snapshot(root)
    # Refused by the shot backend's preflight, once both LoRAs are hashed for the status.
    with pytest.raises(BadInput, match="weights are not on this machine"):
        Pipeline(Project.open(root)).run()
    assert snapshot_diff(before, snapshot(root)) == [] and not memo.exists()

    use_video_backend(root, LoraAnimatic.name)
    assert Pipeline(Project.open(root)).run().rebuilt.film
    assert memo.is_file()

    # The next command reads no input file: their hashes were saved with the artifacts.
    def no_reading(path):
        raise AssertionError(f"{path} read again")

    monkeypatch.setattr(inputs, "file_sha256", no_reading)
    assert states(root)[:3] == (set(), set(), DONE)


# ---------------------------------------------------------------- model folders


def test_a_model_option_names_a_folder_of_the_project_or_a_hub_id(tmp_path, monkeypatch):
    """A path, or a folder that is in the project, is the project's whatever the working
    directory; anything else is a Hub id (or a tiny preset), even where the working
    directory holds a folder of that name."""
    from cinema_cli.runtime.inputs import resolve_file_options
    from cinema_cli.video.holocine import HolocineOptions

    root = tmp_path / "film"
    (root / "models" / "wan").mkdir(parents=True)
    (tmp_path / "models" / "other").mkdir(parents=True)
    (tmp_path / "Wan-AI" / "Wan2.2-T2V-A14B-Diffusers").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)

    def where(model: str, dit: str | None) -> tuple[str, str | None]:
        resolved = resolve_file_options(HolocineOptions(model=model, dit=dit), root)
        return resolved.model, resolved.dit

    assert where("models/wan", "./dits") == (str(root / "models" / "wan"), str(root / "dits"))
    assert where("Wan-AI/Wan2.2-T2V-A14B-Diffusers", "../dits") == \
        ("Wan-AI/Wan2.2-T2V-A14B-Diffusers", str(root / ".." / "dits"))
    assert where("models/other", "hlwang06/HoloCine") == ("models/other", "hlwang06/HoloCine")
    assert where("~/wan", str(tmp_path / "dits")) == (str(Path("~/wan").expanduser()), str(tmp_path / "dits"))
    assert where("tiny", None) == ("tiny", None)


@pytest.mark.parametrize("stage", ["keyframes", "video"])
def test_every_option_naming_weights_is_a_model_option(stage, tmp_path):
    """Whichever option of a built-in backend names weights it loads, a folder of the
    project named there is where it loads them from."""
    from conftest import registered
    from pydantic import ValidationError

    from cinema_cli.runtime.inputs import resolve_file_options, weights_of

    registry = keyframe_backends if stage == "keyframes" else shot_backends
    (tmp_path / "weights").mkdir()
    found = []
    for name in registered(stage):
        cls = registry.get(name)
        for option in cls.Options.model_fields:
            try:
                options = cls.Options.model_validate({option: "weights"})
            except ValidationError:
                continue
            if "weights" in weights_of(cls, options):
                found.append((name, option))
                assert str(tmp_path / "weights") in weights_of(cls, resolve_file_options(options, tmp_path)), \
                    f"{name}: {option}"
    assert found and {name for name, _ in found} >= {"flux2", "wan", "holocine", "helios"} & set(registered(stage))
