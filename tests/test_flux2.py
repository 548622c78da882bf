"""The flux2 keyframe backend on the tiny preset, offline, on the CPU: a six-shot project
plans six keyframes whose references reach the model at exactly their GoldenMem sizes
(some under 64 px a side) and are recorded in the sidecars; a caption edit replans just
what depends on it; the same seed draws the same image; the reference K/V cache gives the
image that recomputing the references at every step gives; missing weights, a missing
quantization package, a profile that will not fit and running out of memory are messages
that leave the project as it was; `cinema doctor` and `cinema bench keyframes` work.

The CLI runs in-process (typer's CliRunner): the model stack is imported once per worker.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from PIL import Image
from typer.testing import CliRunner

from cinema_cli.bench.keyframes import memory_schedule
from cinema_cli.cli.app import app
from cinema_cli.errors import BackendError
from cinema_cli.keyframes.base import CharacterLook, ContextFrame, KeyframeRequest
from cinema_cli.keyframes.flux2 import Flux2Keyframes, Flux2Options
from cinema_cli.keyframes.flux2_denoise import Job, encode_references, generate, use_kv_processors
from cinema_cli.keyframes.prompting import keyframe_prompt
from cinema_cli.memory.goldenmem import schedule
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.project import Project
from cinema_cli.project.schema import Framing, MemorySettings, Move
from cinema_cli.runtime import backends
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.runtime.torch_compat import prepare_torch

prepare_torch()  # before diffusers is imported (the spies below import it)

WIDTH, HEIGHT, STEPS = 256, 128, 2
RUNNER = CliRunner()
# The hall, the yard, then back in the hall: the last two remember the hall, not the yard.
SCENES = [
    ("hall", "the hall", ["<Ada> walks into the hall", "<Bo> turns to the door"]),
    ("yard", "the yard", ["<Bo> throws a snowball in the yard", "<Ada> ducks behind the yard fence"]),
    ("return", "the hall", ["<Ada> and <Bo> shake hands in the hall", "snow melts on the hall floor"]),
]
SHOTS = ["s01", "s02", "s03", "s04", "s05", "s06"]
TINY = {"backend": "flux2", "options": {"model": "tiny", "steps": STEPS}}


@pytest.fixture(autouse=True)
def always_offline(offline):
    """Every test here runs offline (conftest.offline)."""


# ---------------------------------------------------------------- helpers


def cli(*args: str, rc: int = 0):
    result = RUNNER.invoke(app, list(args))
    assert isinstance(result.exception, SystemExit) or result.exception is None, result.exception
    assert result.exit_code == rc, f"exit {result.exit_code}, expected {rc}\n{result.output}"
    return result


def cli_json(*args: str, rc: int = 0) -> dict:
    lines = [line for line in cli(*args, "--json", rc=rc).stdout.splitlines() if line.startswith("{")]
    return json.loads(lines[-1])


def new_project(parent: Path, keyframes: dict, runtime: dict | None = None, size=(WIDTH, HEIGHT)) -> Path:
    root = parent / "film"
    cli("new", str(root))
    scenes = [{"id": scene, "location": location, "time": "day", "beats": beats}
              for scene, location, beats in SCENES]
    script = {"title": "Snow day", "style": "flat colours, thick outlines", "scenes": scenes, "characters": [
        {"name": "Ada", "description": "woman in a red coat", "references": ["characters/ada.png"]},
        {"name": "Bo", "description": "man in a blue hat"}]}
    (root / "characters").mkdir(exist_ok=True)
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (80, 80, 3), dtype=np.uint8)).save(
        root / "characters" / "ada.png")
    (root / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": size[0], "height": size[1]}, fps=8, keyframes=keyframes,
                  video={"backend": "animatic"}, runtime=runtime or {"device": "auto"})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def sidecar(root: Path, shot: str) -> dict:
    return json.loads((root / "keyframes" / f"{shot}.json").read_text())


def snapshot(root: Path) -> dict[str, bytes]:
    """Every file's bytes, but the lock's (taking the lock creates the empty lock file)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p != root / ".cinema" / "lock")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


class EncodeSpy:
    """Records the (height, width) of every image the FLUX.2 VAE encodes: the references."""

    def __init__(self, monkeypatch):
        from diffusers import AutoencoderKLFlux2

        self.sizes: list[tuple[int, int]] = []
        original = AutoencoderKLFlux2.encode

        def encode(vae, x, *args, **kwargs):
            self.sizes.append(tuple(x.shape[-2:]))
            return original(vae, x, *args, **kwargs)

        monkeypatch.setattr(AutoencoderKLFlux2, "encode", encode)


def golden_slots() -> list:
    """The GoldenMem sizes the memory library gives context frames at the test resolution."""
    return list(memory_schedule(MemorySettings(), WIDTH, HEIGHT, MemorySettings().max_context).context)


@pytest.fixture(scope="module")
def planned(tmp_path_factory) -> tuple[Path, list]:
    """A six-shot project planned with flux2 tiny (shared read-only; copy it to edit), and
    the sizes its VAE encoded."""
    root = new_project(tmp_path_factory.mktemp("planned"), TINY)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HF_HUB_OFFLINE", "1")
        spy = EncodeSpy(patch)
        report = cli_json("plan", "-p", str(root))
    assert report["ok"] and report["rebuilt"]["keyframes"] == SHOTS, report
    return root, spy.sizes


# ---------------------------------------------------------------- planning


def test_plan_draws_six_keyframes_with_goldenmem_references(planned):
    planned, encoded = planned
    for shot in SHOTS:
        with Image.open(planned / "keyframes" / f"{shot}.png") as image:
            assert (image.size, image.mode) == ((WIDTH, HEIGHT), "RGB")
    slots = golden_slots()
    recorded = []
    for shot in SHOTS:
        context = sidecar(planned, shot)["context"]
        # Largest first, each at its GoldenMem size and token count.
        assert [c["size"] for c in context] == [list(s.pixels) for s in slots[: len(context)]], shot
        assert [c["tokens"] for c in context] == [s.tokens for s in slots[: len(context)]], shot
        recorded += [tuple(c["size"]) for c in context]
    # What reached the model's VAE is exactly what the sidecars record, in order...
    assert encoded == recorded
    # ...including frames diffusers' own reference path refuses, and the identity anchor.
    assert any(min(size) < 64 for size in recorded)
    assert any(c["shot"] == "@Ada" for shot in SHOTS for c in sidecar(planned, shot)["context"])
    assert sum(1 for shot in SHOTS if sidecar(planned, shot)["context"]) >= 4


def test_editing_a_caption_replans_only_what_depends_on_it(planned, tmp_path):
    root = tmp_path / "film"
    shutil.copytree(planned[0], root)
    contexts = {shot: {c["shot"] for c in sidecar(root, shot)["context"]} for shot in SHOTS}
    cli_json("shot", "s03", "--caption", "<Bo> throws a snowball at the yard gate", "-p", str(root))
    redo = {"s03"}
    for shot in SHOTS[3:]:  # a keyframe conditioned on a redrawn one is redrawn too
        if contexts[shot] & redo:
            redo.add(shot)
    assert redo < set(SHOTS[2:])  # back in the hall, the film remembers the hall, not the yard
    status = {s["id"]: s for s in cli_json("status", "-p", str(root))["shots"]}
    assert {s for s in SHOTS if status[s]["keyframe"] != "done"} == redo
    report = cli_json("plan", "-p", str(root))
    assert report["rebuilt"]["keyframes"] == [s for s in SHOTS if s in redo]
    assert cli_json("plan", "-p", str(root))["rebuilt"]["keyframes"] == []


# ---------------------------------------------------------------- the backend


def request(tmp_path: Path, seed: int = 5) -> KeyframeRequest:
    """A 128x64 request with an earlier keyframe and an identity anchor at GoldenMem sizes."""
    rng = np.random.default_rng(0)
    earlier, face = tmp_path / "earlier.png", tmp_path / "face.png"
    Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)).save(earlier)
    Image.fromarray(rng.integers(0, 256, (90, 70, 3), dtype=np.uint8)).save(face)
    slots = schedule(64, 128, 2).context
    return KeyframeRequest(
        shot_id="s01", scene_id="hall", caption="<Ada> waves", framing=Framing.close_up, move=Move.static,
        location="the hall", time_of_day="day", style="ink", width=128, height=64, seed=seed,
        characters=(CharacterLook("Ada", "woman in a red coat", (face,)),),
        context=(ContextFrame("s00", earlier, 0.9, slots[0].pixels, slots[0].tokens),
                 ContextFrame("@Ada", face, 0.8, slots[1].pixels, slots[1].tokens)),
    )


def test_same_seed_same_image_and_a_bar_of_steps(tmp_path):
    backend = Flux2Keyframes(Flux2Options(model="tiny", steps=3))
    steps: list[tuple[int, int]] = []
    first = np.asarray(backend.render(request(tmp_path), lambda done, total: steps.append((done, total))))
    again = np.asarray(backend.render(request(tmp_path), lambda done, total: None))
    other = np.asarray(backend.render(request(tmp_path, seed=6), lambda done, total: None))
    assert first.shape == (64, 128, 3)
    assert np.array_equal(first, again)
    assert not np.array_equal(first, other)
    assert steps == [(1, 3), (2, 3), (3, 3)]


def test_prompt_writes_out_the_cast_and_the_style(tmp_path):
    req = replace(request(tmp_path), caption="<Ada> waves at <Bo>; <Ada> smiles",
                  characters=(CharacterLook("Ada", "woman in a red coat"), CharacterLook("Bo", "")))
    assert keyframe_prompt(req) == "Close-up. Ada (woman in a red coat) waves at Bo; Ada smiles. Style: ink."


@pytest.fixture(scope="module")
def pipe():
    pipe = build_tiny("flux2")
    use_kv_processors(pipe.transformer)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def references(sizes) -> tuple:
    rng = np.random.default_rng(2)
    return tuple((Image.fromarray(rng.integers(0, 256, (64, 128, 3), dtype=np.uint8)), size) for size in sizes)


def test_references_are_encoded_at_exactly_their_size(pipe, monkeypatch):
    slots = schedule(128, 256, 4).context  # 72x144, 40x80, 24x48: odd latent sides, one under 64 px
    spy = EncodeSpy(monkeypatch)
    latents, ids = encode_references(pipe, references([s.pixels for s in slots]), "cpu")
    assert spy.sizes == [s.pixels for s in slots]
    # GoldenMem's token count: floor(side / patch) whole 2x2 patches, one time offset each.
    assert latents.shape[1] == ids.shape[1] == sum(s.tokens for s in slots)
    assert ids[0, :, 0].unique().tolist() == [10, 20, 30][: len(slots)]


@pytest.mark.parametrize("guided", [False, True], ids=["distilled", "guided"])
def test_reference_cache_gives_the_uncached_image(pipe, monkeypatch, guided):
    monkeypatch.setattr("cinema_cli.keyframes.flux2_denoise.distilled", lambda pipe: not guided)
    calls: list[str | None] = []
    forward = type(pipe.transformer).forward

    def counting(model, *args, **kwargs):
        calls.append(kwargs.get("kv_cache_mode"))
        return forward(model, *args, **kwargs)

    monkeypatch.setattr(type(pipe.transformer), "forward", counting)
    steps = 2
    job = Job(prompt="Medium shot. Ada waves.", references=references([(40, 80), (24, 48)]), width=128, height=64,
              steps=steps, guidance=3.0 if guided else 1.0, seed=1, mode="kv")
    cached = generate(pipe, job, lambda done, total: None)
    calls_cached, calls[:] = list(calls), []
    uncached = generate(pipe, replace(job, cache=False), lambda done, total: None)
    branches = 2 if guided else 1
    # Cached: the references go through the model once per keyframe; uncached: every call.
    assert calls_cached.count("extract") == 1 and len(calls_cached) == steps * branches
    assert calls.count("extract") == steps * branches
    np.testing.assert_allclose(cached, uncached, atol=1e-5)
    # ...and the references do change the picture, so the equality says something.
    alone = generate(pipe, replace(job, references=()), lambda done, total: None)
    assert np.abs(cached - alone).max() > 1e-2  # a thousand times the tolerance above
    joint = generate(pipe, replace(job, mode="joint"), lambda done, total: None)
    assert joint.shape == cached.shape and np.abs(joint - cached).max() > 1e-3


def test_a_saved_pipeline_folder_is_sized_checked_and_loaded(pipe, tmp_path):
    """A diffusers folder (the tiny pipeline saved): its size from configs alone, its class
    checked before loading, and it loads through from_pretrained offline."""
    from cinema_cli.keyframes.base import KeyframePlan
    from cinema_cli.keyframes.flux2 import flux2_size
    from cinema_cli.project.schema import RuntimeSettings

    pipe.save_pretrained(tmp_path / "klein")
    size = flux2_size(tmp_path / "klein")
    assert size.params == {n: sum(p.numel() for p in getattr(pipe, n).parameters())
                           for n in ("text_encoder", "transformer", "vae")}
    assert (size.hidden, size.layers, size.vae_frames) == (32, 3, 1)
    backend = Flux2Keyframes(Flux2Options(model=str(tmp_path / "klein")))
    assert backend.preflight(KeyframePlan(128, 64, RuntimeSettings())) == [
        "flux2: no CUDA GPU, so it runs on the CPU (float32; very slow for real models); "
        "keyframes.backend: sketch is the fast CPU previz"]
    if importlib.util.find_spec("accelerate") is None:  # diffusers loads weights through it
        with pytest.raises(BackendError, match="pip install accelerate"):
            backend.render(request(tmp_path), lambda done, total: None)
        return
    assert backend.render(request(tmp_path), lambda done, total: None).size == (128, 64)


@pytest.mark.skipif(importlib.util.find_spec("accelerate") is None, reason="diffusers loads weights through it")
def test_a_model_folder_named_in_the_project_is_the_projects_whatever_the_working_directory(pipe, tmp_path,
                                                                                            monkeypatch):
    """`model: models/klein` is the project's folder, from wherever cinema runs (here, a
    folder holding an empty models/klein): it is loaded and hashed, its content recorded
    under the name as written, so the project moved elsewhere is still current."""
    from conftest import manifest_records

    root = new_project(tmp_path, {"backend": "flux2", "options": {"model": "models/klein", "steps": 1}},
                       size=(64, 64))
    pipe.save_pretrained(root / "models" / "klein")
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "models" / "klein").mkdir(parents=True)
    monkeypatch.chdir(elsewhere)
    assert cli_json("plan", "-p", str(root))["rebuilt"]["keyframes"] == SHOTS
    recipe = manifest_records(root)["keyframes"]["s01"]["recipe"]
    assert recipe["backend options"]["model"] == "models/klein" and list(recipe["backend inputs"]) == \
        ["model models/klein"]

    moved = tmp_path / "moved"
    shutil.move(root, moved)
    monkeypatch.chdir(moved)
    assert {s["keyframe"] for s in cli_json("status")["shots"]} == {"done"}
    (moved / "models" / "klein" / "notes.txt").write_text("fine-tuned again")
    monkeypatch.chdir(tmp_path)
    assert {s["keyframe"] for s in cli_json("status", "-p", str(moved))["shots"]} == {"stale"}
    folder = str(moved / "models" / "klein")
    assert {"stage": "keyframes", "backend": "flux2", "model": folder, "present": True, "folder": folder} in \
        json.loads(cli("doctor", "-p", str(moved), "--json").stdout)["weights"]


def test_a_model_folder_that_is_not_there_is_refused_not_downloaded(tmp_path, monkeypatch):
    from cinema_cli.errors import BadInput
    from cinema_cli.keyframes.base import KeyframePlan
    from cinema_cli.project.schema import RuntimeSettings

    monkeypatch.delenv("HF_HUB_OFFLINE")  # online, a Hub id would be fetched; a path is not one
    backend = Flux2Keyframes(Flux2Options(model=str(tmp_path / "klein")))
    with pytest.raises(BadInput, match=f"the model folder {tmp_path / 'klein'} does not exist"):
        backend.preflight(KeyframePlan(128, 64, RuntimeSettings()))


def test_a_folder_that_is_not_klein_is_refused(tmp_path):
    from cinema_cli.errors import BadInput
    from cinema_cli.keyframes.base import KeyframePlan
    from cinema_cli.project.schema import RuntimeSettings

    (tmp_path / "model_index.json").write_text(json.dumps({"_class_name": "FluxPipeline"}))
    backend = Flux2Keyframes(Flux2Options(model=str(tmp_path)))
    with pytest.raises(BadInput, match="names FluxPipeline, flux2 needs Flux2KleinPipeline or Flux2KleinKVPipeline"):
        backend.preflight(KeyframePlan(128, 64, RuntimeSettings()))


# ---------------------------------------------------------------- failures are messages


def test_missing_weights_stop_before_anything_is_written(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    root = new_project(tmp_path, {"backend": "flux2"})
    before = snapshot(root)
    report = cli_json("plan", "-p", str(root), rc=1)
    assert "black-forest-labs/FLUX.2-klein-4B" in report["error"]
    assert "huggingface-cli download black-forest-labs/FLUX.2-klein-4B" in report["error"]
    assert snapshot(root) == before


def test_a_missing_quantization_package_is_named(tmp_path, monkeypatch):
    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "bitsandbytes" else find_spec(name, *a))
    root = new_project(tmp_path, TINY, runtime={"quantize": "int8"})
    before = snapshot(root)
    report = cli_json("render", "-p", str(root), rc=1)
    assert "runtime.quantize: int8 needs the bitsandbytes package" in report["error"]
    assert "pip install bitsandbytes" in report["error"]
    assert snapshot(root) == before


KLEIN_4B = {
    "model_index.json": {"_class_name": "Flux2KleinPipeline", "is_distilled": True,
                         "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                         "text_encoder": ["transformers", "Qwen3ForCausalLM"],
                         "tokenizer": ["transformers", "Qwen2TokenizerFast"],
                         "transformer": ["diffusers", "Flux2Transformer2DModel"],
                         "vae": ["diffusers", "AutoencoderKLFlux2"]},
    "transformer/config.json": {"_class_name": "Flux2Transformer2DModel", "in_channels": 128, "num_layers": 5,
                                "num_single_layers": 20, "attention_head_dim": 128, "num_attention_heads": 24,
                                "joint_attention_dim": 7680, "mlp_ratio": 3.0, "guidance_embeds": False},
    "vae/config.json": {"_class_name": "AutoencoderKLFlux2", "block_out_channels": [128, 256, 512, 512],
                        "latent_channels": 32, "layers_per_block": 2},
    "text_encoder/config.json": {"model_type": "qwen3", "architectures": ["Qwen3ForCausalLM"], "hidden_size": 2560,
                                 "intermediate_size": 9728, "num_hidden_layers": 36, "num_attention_heads": 32,
                                 "num_key_value_heads": 8, "head_dim": 128, "vocab_size": 151936},
}


def test_a_profile_that_will_not_fit_stops_before_loading_and_names_one_that_would(tmp_path, monkeypatch):
    """The real klein 4B configs (no weights): 7.8 GB of transformer and 8 GB of text
    encoder in bf16 cannot all sit on a 12 GiB GPU; one component at a time can."""
    from cinema_cli.runtime import profiles

    model = tmp_path / "klein-4b"
    for name, config in KLEIN_4B.items():
        (model / name).parent.mkdir(parents=True, exist_ok=True)
        (model / name).write_text(json.dumps(config))
    monkeypatch.setattr(profiles, "cuda_available", lambda: True)
    monkeypatch.setattr("cinema_cli.keyframes.flux2.free_gpu_bytes", lambda: 12 * 1024**3)
    root = new_project(tmp_path, {"backend": "flux2", "options": {"model": str(model)}}, runtime={"device": "cuda"})
    before = snapshot(root)
    report = cli_json("plan", "-p", str(root), rc=1)
    assert "flux2: needs about" in report["error"] and "12.0 GiB is free" in report["error"]
    assert "set runtime: {offload: model} in cinema.yaml" in report["error"]
    assert snapshot(root) == before


def test_no_gpu_names_what_runs_instead(tmp_path):
    root = new_project(tmp_path, TINY, runtime={"device": "cuda"})
    report = cli_json("plan", "-p", str(root), rc=1)
    assert "runtime.device is cuda but torch sees no CUDA GPU" in report["error"]
    assert "keyframes.backend: sketch" in report["error"]


def test_out_of_memory_is_a_message_and_keeps_what_was_drawn(tmp_path, monkeypatch):
    from diffusers import Flux2Transformer2DModel

    root = new_project(tmp_path, TINY, size=(128, 64))
    forward, calls = Flux2Transformer2DModel.forward, []

    def exhausted(*args, **kwargs):  # runs out during the third keyframe
        calls.append(1)
        if len(calls) > 2 * STEPS:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")
        return forward(*args, **kwargs)

    monkeypatch.setattr(Flux2Transformer2DModel, "forward", exhausted)
    with pytest.raises(BackendError, match=r"out of GPU memory while rendering keyframe s03.*try runtime: \{offload"):
        Pipeline(Project.open(root)).run(until="keyframes")
    assert sorted(p.name for p in (root / "keyframes").glob("*.png")) == ["s01.png", "s02.png"]
    assert list((root / ".cinema" / "tmp").iterdir()) == []
    monkeypatch.setattr(Flux2Transformer2DModel, "forward", forward)
    assert Pipeline(Project.open(root)).run(until="keyframes").rebuilt.keyframes == SHOTS[2:]


# ---------------------------------------------------------------- auto, doctor, bench


def test_auto_picks_flux2_only_with_a_gpu_and_its_weights(monkeypatch, tmp_path):
    monkeypatch.setattr(backends, "nvidia_gpu_visible", lambda: False)
    assert backends.resolve_backend("keyframes", "auto") == (
        "sketch", "keyframes: auto -> sketch (CPU previz; no CUDA GPU)")
    monkeypatch.setattr(backends, "nvidia_gpu_visible", lambda: True)
    monkeypatch.setattr("cinema_cli.runtime.loading.local_folder", lambda model: None)
    name, notice = backends.resolve_backend("keyframes", "auto")
    assert name == "sketch" and "huggingface-cli download black-forest-labs/FLUX.2-klein-4B" in notice
    monkeypatch.setattr("cinema_cli.runtime.loading.local_folder", lambda model: tmp_path)
    assert backends.resolve_backend("keyframes", "auto")[0] == "flux2"


def test_doctor_reports_without_revealing_keys(tmp_path, monkeypatch):
    monkeypatch.setenv("GEMINI_API_KEY", "sk-not-for-printing")
    monkeypatch.delenv("GOOGLE_API_KEY", raising=False)
    root = new_project(tmp_path, {"backend": "flux2", "options": {"model": "cinema-tests/no-such-klein"}})
    result = cli("doctor", "-p", str(root), "--json")
    assert "sk-not-for-printing" not in result.output
    data = json.loads(result.stdout)
    assert data["ok"] and data["api_keys"] == {"GEMINI_API_KEY": True, "GOOGLE_API_KEY": False}
    assert data["ffmpeg"]["version"] and isinstance(data["gpus"], list) and "bitsandbytes" in data["packages"]
    assert {"stage": "keyframes", "backend": "flux2", "model": "cinema-tests/no-such-klein", "present": False,
            "folder": None} in data["weights"]
    assert "sk-not-for-printing" not in cli("doctor", "-p", str(root)).output


def test_doctor_smoke_runs_the_tiny_pipelines(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # outside any project: the defaults
    data = json.loads(cli("doctor", "--smoke", "--json").stdout)
    assert data["ok"] and data["project"] is None
    assert [s["name"] for s in data["smoke"]] == ["flux2 keyframe (tiny)", "interleaved keyframes (tiny)",
                                                  "wan shot (tiny)"]
    assert all(s["ok"] for s in data["smoke"]), data["smoke"]


def test_bench_keyframes_reports_history_and_cache(monkeypatch):
    from cinema_cli.bench import keyframes as bench

    # The bench's own shape is minutes on a CPU; the code path is the same on a small one.
    monkeypatch.setattr(bench, "KLEIN_4B", {**bench.KLEIN_4B, "num_layers": 1, "num_single_layers": 1,
                                            "attention_head_dim": 16, "axes_dims_rope": (4, 4, 4, 4)})
    monkeypatch.setattr(bench, "CPU_FRAME", (128, 64))
    report = cli_json("bench", "keyframes", "--histories", "0,4", "--steps", "2", "--repeats", "1")
    assert report["device"] == "cpu" and report["resolution"] == "128x64"
    rows = {(r["history"], r["cache"]): r for r in report["runs"]}
    assert set(rows) == {(0, True), (4, True), (4, False)}
    assert rows[(4, True)]["context_frames"] == 1 and rows[(4, True)]["context_tokens"] == 8
    assert set(report["ratio_vs_history_0"]["float32"]) == {"cache", "no_cache"}
