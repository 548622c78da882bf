"""`cinema train keyframes` on the tiny FLUX.2 klein preset, on a dataset written by the
real `cinema data prepare` from ffmpeg-generated films."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.train.sequences import film_sequences, sampling_report
from train_support import make_shots_film, prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
# Small and fast: 32x64 frames (8 image tokens for the target), 8-token captions.
FAST = ["--base", "tiny", "--size", "32x64", "--rank", "8", "--lr", "0.003"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("films")
    films = [make_shots_film(folder / "a.mp4", 8), make_shots_film(folder / "b.mp4", 5)]
    return prepare_dataset(tmp_path_factory.mktemp("ds") / "ds", films)


def write_yaml(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.fixture()
def small(tmp_path) -> Path:
    """Settings every run here shares (no warmup, so a few steps learn something)."""
    return write_yaml(tmp_path / "train.yaml", "caption_tokens: 8\noptimizer: {warmup_steps: 0}\n")


def cinema(*args, rc: int = 0):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == rc, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def losses(run: Path) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------- sampling


def test_dynamic_stride_sequences_overlap_at_most_a_quarter_and_outnumber_consecutive():
    length = 8
    sequences = film_sequences("f", 60, length, max_stride=4, max_overlap=0.25)
    for i, a in enumerate(sequences):
        for b in sequences[i + 1:]:
            assert len(set(a.indices) & set(b.indices)) <= 2  # 25 % of 8
    strides = {s.indices[1] - s.indices[0] for s in sequences}
    assert len(strides) > 1 and strides <= {1, 2, 3, 4}
    report = sampling_report({"f": 60, "g": 20}, [1, 8], 4, 0.25)
    assert report["1"]["dynamic_stride"] == report["1"]["consecutive"] == 80
    assert report["8"]["dynamic_stride"] > report["8"]["consecutive"] > 0


# ---------------------------------------------------------------- training


def held_out_noise(config, dataset: Path, trainable: Path | None = None) -> tuple[float, dict]:
    """The loss on the first four steps' sequences with their fixed noise (the same
    batches for every model compared; the per-step training losses draw new noise), and
    the errors of every training sequence drawn jointly from its captions."""
    import torch
    from safetensors.torch import load_file

    from cinema_cli.train.keyframes import KeyframeTraining

    torch.manual_seed(config.seed)
    family = KeyframeTraining(config, dataset)
    model = family.build(torch.device("cpu"))
    if trainable is not None:
        model.load_state_dict(load_file(trainable), strict=False)
    with torch.no_grad():
        loss = sum(family.loss(model, step, 0, 1).item() for step in range(4)) / 4
    errors, _, _ = family.storyboard_error(model, family.pools[0])
    return loss, errors


def test_loss_falls_on_a_tiny_overfit_set_and_its_storyboards_come_closer_to_the_keyframes(dataset, small, tmp_path):
    from cinema_cli.train import config as train_config
    from cinema_cli.train.run import latest_checkpoint

    run = tmp_path / "run"
    cinema("train", "keyframes", dataset, *FAST, "-o", run, "--config", small, "--context", "2",
           "--stage-steps", "24", "--batch-size", "4", "--lr", "0.01", "--checkpoint-every", "100")
    values = losses(run)
    assert len(values) == 24
    assert sum(values[-6:]) / 6 < sum(values[:6]) / 6, values
    config = train_config.load(run)
    before, base = held_out_noise(config, dataset)
    after, trained = held_out_noise(config, dataset, latest_checkpoint(run) / "trainable.safetensors")
    numbers = f"loss: base {before:.4f}, trained {after:.4f}; storyboard error: base {base}, trained {trained}"
    print(numbers)
    assert after < 0.8 * before, numbers
    # Sampled from the captions alone, the overfit model's keyframes land nearer its
    # training keyframes. Measured in the model's latent space: the tiny preset's VAE has
    # random weights, so no latent decodes back to the picture and pixels cannot show it.
    assert trained["latent"] < 0.9 * base["latent"], numbers


def test_validation_storyboards_of_held_out_keyframes_and_metrics_to_accelerate_trackers(dataset, tmp_path,
                                                                                          monkeypatch):
    from accelerate.tracking import GeneralTracker
    from PIL import Image

    from cinema_cli.train import config as train_config
    from cinema_cli.train import engine
    from cinema_cli.train.keyframes import KeyframeTraining

    class Recorder(GeneralTracker):  # a real accelerate tracker, as TensorBoard's is one
        name, requires_logging_directory, main_process_only = "recorder", False, True
        logged: list = []

        @property
        def tracker(self):
            return self

        def store_init_configuration(self, values):
            pass

        def log(self, values, step=None, **kwargs):
            self.logged.append({"step": step, **values})

    monkeypatch.setattr(engine, "trackers", lambda: [Recorder()])
    settings = "caption_tokens: 8\noptimizer: {warmup_steps: 0}\nvalidation: {every: 2, sequences: 2, steps: 2}\n"
    config = write_yaml(tmp_path / "train.yaml", settings)
    run = tmp_path / "run"
    cinema("train", "keyframes", dataset, *FAST, "-o", run, "--config", config, "--context", "1,3",
           "--stage-steps", "2,2", "--batch-size", "2")
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    drawn = [r["step"] for r in records if "validation_latent_mse" in r]
    assert drawn == [2, 4] and all(r["validation_pixel_mse"] > 0 for r in records if r["step"] in drawn)
    assert Recorder.logged == records  # the trackers get exactly what the JSONL holds
    sheets = sorted(p.name for p in (run / "validation").iterdir())
    assert sheets == ["step-00000002.png", "step-00000004.png"]
    # Two held-out sequences of 3 keyframes (the largest context): each row of keyframes over its drawing.
    assert Image.open(run / "validation" / sheets[-1]).size == (3 * 64, 4 * 32)
    family = KeyframeTraining(train_config.load(run), dataset)
    held = {(s.film, i) for s in family.held_out for i in s.indices}
    assert len(held) == 6
    assert not any((s.film, i) in held for pool in family.pools for s in pool for i in s.indices)
    # Holding out more than the films hold is bad input, before anything is written.
    greedy = write_yaml(tmp_path / "greedy.yaml", settings.replace("sequences: 2", "sequences: 5"))
    result = cinema("train", "keyframes", dataset, *FAST, "-o", tmp_path / "greedy", "--config", greedy,
                    "--context", "1,3", "--stage-steps", "2,2", rc=2)
    assert "validation needs 5 held-out sequence(s) of 3 keyframes; the films hold 3" in result.stderr
    assert not (tmp_path / "greedy").exists()


def test_a_killed_run_resumes_to_the_uninterrupted_losses(dataset, small, tmp_path):
    import signal
    import time

    from cinema_cli.train.run import latest_checkpoint

    args = ["train", "keyframes", str(dataset), *FAST, "--config", str(small), "--context", "1,3",
            "--stage-steps", "4,4", "--batch-size", "2", "--checkpoint-every", "2"]
    whole, cut = tmp_path / "whole", tmp_path / "cut"
    cinema(*args, "-o", whole)
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    proc = subprocess.Popen([sys.executable, "-m", "cinema_cli", *args, "-o", str(cut)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = cut / "metrics.jsonl"
    deadline = time.monotonic() + 240
    while not (metrics.is_file() and len(metrics.read_text().splitlines()) >= 3):
        assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL
    trained = len(metrics.read_text().splitlines())
    assert trained < 8
    saved = int(latest_checkpoint(cut).name.split("-")[1])
    assert trained - saved <= 2  # at most the steps since the last checkpoint are lost
    resumed = json.loads(cinema("train", "keyframes", dataset, "-o", cut, "--resume", "--json").stdout.splitlines()[-1])
    assert resumed["first_step"] == saved + 1
    assert losses(cut) == losses(whole)  # exactly: same sequences, noise, weights and moments


def test_two_processes_match_one_with_the_same_global_batch(dataset, small, tmp_path):
    args = ["train", "keyframes", str(dataset), *FAST, "--config", str(small), "--context", "1,2",
            "--stage-steps", "2,2", "--batch-size", "2", "--checkpoint-every", "100", "--json"]
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    one, two = tmp_path / "one", tmp_path / "two"
    cinema(*args[:-1], "-o", one)
    # --multi_gpu is accelerate's DDP launcher (torchrun); with no CUDA the processes join over gloo.
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", "29517",
              "-m", "cinema_cli", *args, "-o", str(two)]
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["processes"] == 2
    # Each process computes half the batch; DDP averages the gradients: the same update up
    # to the order of float additions.
    assert losses(two) == pytest.approx(losses(one), rel=1e-4, abs=1e-6)


@pytest.fixture(scope="module")
def lora_run(dataset, tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("lora")
    small = write_yaml(folder / "train.yaml", "caption_tokens: 8\noptimizer: {warmup_steps: 0}\n")
    run = folder / "run"
    cinema("train", "keyframes", dataset, *FAST, "-o", run, "--config", small, "--context", "1",
           "--stage-steps", "4", "--batch-size", "2", "--lr", "0.01")
    return run


def test_saved_lora_loads_with_diffusers_and_changes_the_output(lora_run):
    import torch

    from cinema_cli.keyframes.flux2_denoise import text_layers
    from cinema_cli.runtime.tiny import build_tiny

    def draw(pipe):
        return pipe(prompt="shot 0 of a, testsrc pattern", height=64, width=64, num_inference_steps=2, output_type="pt",
                    generator=torch.Generator().manual_seed(0), max_sequence_length=8,
                    text_encoder_out_layers=text_layers(pipe)).images

    pipe = build_tiny("flux2")
    base = draw(pipe)
    pipe.load_lora_weights(lora_run / "lora")
    adapted = draw(pipe)
    assert (adapted - base).abs().mean() > 1e-3
    transformer = build_tiny("flux2").transformer
    transformer.load_lora_adapter(lora_run / "lora" / "pytorch_lora_weights.safetensors", prefix="transformer")
    assert any("lora" in name for name, _ in transformer.named_parameters())


def test_interleaved_backend_draws_with_the_trained_lora(lora_run, tmp_path):
    import numpy as np
    from safetensors.torch import save_file
    import torch

    from cinema_cli.errors import BadInput
    from cinema_cli.keyframes.base import KeyframeRequest
    from cinema_cli.keyframes.interleaved import InterleavedKeyframes, InterleavedOptions
    from cinema_cli.project.schema import Framing, Move

    request = KeyframeRequest(shot_id="s01", scene_id="a", caption="shot 0 of a", characters=(), framing=Framing.medium,
                              move=Move.static, location="", time_of_day="day", style="", width=64, height=32,
                              seed=3, context=())

    def draw(**options):
        backend = InterleavedKeyframes(InterleavedOptions(model="tiny", steps=2, **options))
        return np.asarray(backend.render(request, lambda done, total: None), dtype=np.float32)

    base = draw()
    assert np.abs(draw(lora=str(lora_run)) - base).mean() > 0.5  # of 255
    assert np.array_equal(draw(lora=str(lora_run / "lora")), draw(lora=str(lora_run)))
    # An adapter for another architecture (a wider projection) is a clear bad input.
    other = tmp_path / "other.safetensors"
    save_file({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": torch.zeros(4, 96),
               "transformer.transformer_blocks.0.attn.to_q.lora_B.weight": torch.zeros(96, 4)}, other)
    with pytest.raises(BadInput, match="does not fit"):
        draw(lora=str(other))
    with pytest.raises(BadInput, match="neither a training run"):
        InterleavedKeyframes(InterleavedOptions(model="tiny", lora=str(tmp_path / "missing"))).preflight(None)


def test_gradient_checkpointing_trains_the_same_and_full_fine_tune_saves_a_loadable_transformer(dataset, small,
                                                                                              tmp_path):
    from cinema_cli.runtime.tiny import build_tiny
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from diffusers import Flux2Transformer2DModel

    args = [*FAST, "--config", small, "--context", "2", "--stage-steps", "2", "--batch-size", "2"]
    plain, checkpointed, full = tmp_path / "plain", tmp_path / "gc", tmp_path / "full"
    cinema("train", "keyframes", dataset, *args, "-o", plain)
    cinema("train", "keyframes", dataset, *args, "-o", checkpointed, "--gradient-checkpointing")
    assert losses(checkpointed) == pytest.approx(losses(plain), rel=1e-5)
    cinema("train", "keyframes", dataset, *args, "-o", full, "--method", "full", "--lr", "0.001")
    trained = Flux2Transformer2DModel.from_pretrained(full / "transformer")
    base = build_tiny("flux2").transformer
    moved = [(a - b).abs().max().item() for a, b in zip(trained.parameters(), base.parameters())]
    assert max(moved) > 1e-4
    assert not (full / "lora").exists()


# ---------------------------------------------------------------- bad input


def test_a_folder_that_is_not_a_dataset_exits_2_and_writes_nothing(tmp_path):
    (tmp_path / "films").mkdir()
    result = cinema("train", "keyframes", tmp_path / "films", "--base", "tiny", "-o", tmp_path / "run", rc=2)
    assert "not a prepared dataset" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_context_longer_than_the_films_exits_2_and_writes_nothing(dataset, tmp_path):
    result = cinema("train", "keyframes", dataset, *FAST, "-o", tmp_path / "run", "--context", "1,9",
                    "--stage-steps", "1,1", rc=2)
    assert "context of 9 pairs is longer than the films allow" in result.stderr
    assert "8 kept keyframes" in result.stderr
    assert not (tmp_path / "run").exists()


def test_a_run_from_another_base_model_exits_2_and_changes_nothing(dataset, small, tmp_path):
    run = tmp_path / "run"
    cinema("train", "keyframes", dataset, *FAST, "-o", run, "--config", small, "--context", "1", "--stage-steps", "1",
           "--batch-size", "1")
    before = snapshot(run)
    result = cinema("train", "keyframes", dataset, "--base", "black-forest-labs/FLUX.2-klein-4B", "-o", run,
                    "--resume", rc=2)
    assert "trained from base model 'tiny'" in result.stderr
    result = cinema("train", "keyframes", dataset, *FAST, "-o", run, rc=2)  # a new run into it
    assert "pass --resume" in result.stderr
    assert snapshot(run) == before
    from cinema_cli.project.lock import ProjectLock

    with ProjectLock(run / ".lock"):  # a run still training holds it
        result = cinema("train", "keyframes", dataset, "-o", run, "--resume", rc=1)
    assert f"being trained by another process (pid {os.getpid()})" in result.stderr
    assert snapshot(run) == before


@pytest.mark.parametrize("text, message", [
    ("context: [1, 2]\nstage_steps: [5]\n", "context has 2 stages but stage_steps has 1"),
    ("optimizer: {lr: -1}\n", "optimizer.lr"),
    ("context: [1\n", "malformed YAML"),
])
def test_a_bad_training_config_names_the_problem_and_exits_2(dataset, tmp_path, text, message):
    config = write_yaml(tmp_path / "train.yaml", text)
    result = cinema("train", "keyframes", dataset, "--base", "tiny", "-o", tmp_path / "run", "--config", config, rc=2)
    assert message in result.stderr and "train.yaml" in result.stderr
    assert not (tmp_path / "run").exists()


def test_bench_train_reports_throughput_and_memory_against_context_goldenmem_and_naive(monkeypatch):
    from cinema_cli.bench import train as bench

    # Each CPU row runs in a fresh process for its peak memory; here one process measures
    # them (the same code) to keep the suite fast.
    shared = {}

    def in_process(pairs, goldenmem, steps, height, width):
        shared.setdefault("bench", bench.Bench(False, height, width))
        return shared["bench"].row(pairs, goldenmem, steps)

    monkeypatch.setattr(bench, "row_in_worker", in_process)
    report = bench.run_train_bench((1, 4), steps=1, frame=(64, 128))
    rows = {(r["pairs"], r["goldenmem"]): r for r in report["rows"]}
    assert set(rows) == {(1, True), (1, False), (4, True), (4, False)}
    assert rows[(1, True)]["tokens"] == rows[(1, False)]["tokens"] == 32 + 32  # 4x8 image tokens, 32 caption
    assert rows[(4, True)]["tokens"] < rows[(4, False)]["tokens"] == 4 * 64
    assert all(r["samples_per_s"] > 0 for r in rows.values())
    assert report["goldenmem_speedup_at_4_pairs"] > 0 and "MFU" in report["not_measured"]
