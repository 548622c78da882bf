"""`cinema train video` on the tiny Wan presets (two-expert T2V for scene mode, I2V for
keyframes mode), on a dataset written by the real `cinema data prepare` from an
ffmpeg-generated film. Frames are 32x32 (4 tokens a latent frame), shots 2 latent frames."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from test_train import cinema, losses, snapshot, write_yaml
from train_support import make_shots_film, prepare_dataset

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--base", "tiny", "--size", "32x32", "--rank", "16", "--lr", "0.02", "--batch-size", "1"]


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    film = make_shots_film(tmp_path_factory.mktemp("films") / "a.mp4", 7)
    return prepare_dataset(tmp_path_factory.mktemp("ds") / "ds", [film])


@pytest.fixture()
def small(tmp_path) -> Path:
    return write_yaml(tmp_path / "train.yaml", "optimizer: {warmup_steps: 0}\nvalidation_steps: 4\n")


def fell(values: list[float]) -> bool:
    third = len(values) // 3
    return sum(values[-third:]) / third < 0.9 * sum(values[:third]) / third


def family_for(config, dataset: Path):
    import torch

    from cinema_cli.train.video import VideoTraining

    torch.manual_seed(config.seed)
    family = VideoTraining(config, dataset)
    return family, family.build(torch.device("cpu"))


def test_scene_mode_learns_resumes_exactly_and_its_loras_load_in_diffusers(dataset, small, tmp_path):
    whole = tmp_path / "whole"
    cinema("train", "video", dataset, "--mode", "scene", *FAST, "--config", small, "--shot-frames", "8",
           "--steps", "60", "--checkpoint-every", "25", "--validate-every", "30", "-o", whole)
    values = losses(whole)
    assert len(values) == 60 and fell(values), values
    assert sorted(p.name for p in (whole / "lora").iterdir()) == ["lora_high.safetensors", "lora_low.safetensors"]
    clips = sorted(p.name for p in (whole / "samples").glob("*.mp4"))
    assert clips == ["step-00000030.mp4", "step-00000060.mp4"]

    # Resume from the step-50 checkpoint: steps 51..60 again, to the same losses.
    cut = tmp_path / "cut"
    shutil.copytree(whole, cut)
    shutil.rmtree(cut / "checkpoints" / "step-00000060")
    shutil.rmtree(cut / "lora")
    resumed = json.loads(cinema("train", "video", dataset, "-o", cut, "--resume", "--json").stdout.splitlines()[-1])
    assert resumed["first_step"] == 51
    assert losses(cut) == losses(whole)

    # The adapters load into a diffusers Wan pipeline (high into transformer, low into
    # transformer_2), change what it renders, and render the training clip better than the base.
    assert_adapter_reproduces_its_training_clip(whole, dataset, ["high", "low"])


def assert_adapter_reproduces_its_training_clip(run: Path, dataset: Path, experts: list[str]) -> None:
    """The run's LoRA files, loaded with diffusers' load_lora_weights into the base pipeline
    (high into transformer, low into transformer_2), change what it renders from the same
    noise, and bring a training sample's clip closer to the real one than the base does."""
    from cinema_cli.train import config as train_config
    from cinema_cli.train.video_config import VideoTrainConfig

    config = train_config.load(run, VideoTrainConfig).model_copy(update={"method": "full", "validate_every": 0})
    family, _ = family_for(config, dataset)  # the base model with the mode's processors and conditioning
    sample = family.step_samples(0, 0, 1)[0]
    clean = family.prepared(sample).latents
    base = family.render(sample, steps=8)
    for expert in experts:
        family.pipe.load_lora_weights(str(run / "lora"), weight_name=f"lora_{expert}.safetensors",
                                      load_into_transformer_2=expert == "low")
    adapted = family.render(sample, steps=8)
    assert (adapted - base).abs().mean() > 1e-2
    before, after = (base - clean).square().mean().item(), (adapted - clean).square().mean().item()
    print(f"{config.mode}: error vs the training clip (latent MSE): base {before:.4f}, adapted {after:.4f}")
    assert after < 0.8 * before


def test_keyframes_mode_learns_and_two_processes_match_one(dataset, small, tmp_path):
    args = ["train", "video", str(dataset), "--mode", "keyframes", *FAST[:-2], "--batch-size", "2", "--config",
            str(small), "--shot-frames", "5", "--checkpoint-every", "100"]
    one, two = tmp_path / "one", tmp_path / "two"
    result = cinema(*args, "--steps", "40", "-o", one, "--json")
    summary = json.loads(result.stdout.splitlines()[-1])
    assert summary["experts"] == ["high"] and summary["mode"] == "keyframes"
    assert fell(losses(one)), losses(one)
    assert_adapter_reproduces_its_training_clip(one, dataset, ["high"])
    result = accelerate_launch(2, 29527, [*args, "--steps", "3", "-o", two, "--json"])
    assert json.loads(result.stdout.strip().splitlines()[-1])["processes"] == 2
    # A constant LR (Captain Cinema's recipe): the first 3 steps are the same in a longer run.
    assert losses(two) == pytest.approx(losses(one)[:3], rel=1e-4, abs=1e-6)


def accelerate_launch(processes: int, port: int, args: list) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes),
              "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port",
              str(port), "-m", "cinema_cli", *map(str, args)]
    result = subprocess.run(launch, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result


def test_context_parallel_training_equals_one_process(dataset, small, tmp_path):
    """`--cp 2` over 2 processes (gloo): each sample's tokens split in two (Ulysses), both
    experts, a validation clip rendered by the group: the same losses and gradient norms
    (rel 1e-5) and the same LoRAs as one process. Adam normalises each weight's step, so
    float32 rounding in gradients near its eps moves a weight by up to ~6.4e-5 at this LR
    (the CPU sparse kernel sums in another order under the split), against trained weights
    above 1e-3;
    a group whose gradients are not summed (DDP's mean alone) gives half the norm."""
    from safetensors.torch import load_file

    args = ["train", "video", dataset, "--mode", "scene", *FAST[:-3], "0.002", "--batch-size", "1", "--config",
            small, "--shot-frames", "8", "--steps", "3", "--checkpoint-every", "100", "--validate-every", "3"]
    one, two = tmp_path / "one", tmp_path / "two"
    cinema(*args, "-o", one)
    result = accelerate_launch(2, 29529, [*args, "--cp", "2", "-o", two, "--json"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert (summary["processes"], summary["cp"]) == (2, 2)

    def metric(run: Path, name: str) -> list[float]:
        return [json.loads(line)[name] for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert metric(two, "loss") == pytest.approx(metric(one, "loss"), rel=1e-5)
    assert metric(two, "grad_norm") == pytest.approx(metric(one, "grad_norm"), rel=1e-5)
    for expert in ("high", "low"):
        a, b = (load_file(run / "lora" / f"lora_{expert}.safetensors") for run in (one, two))
        assert a.keys() == b.keys()
        assert max((a[k] - b[k]).abs().max().item() for k in a) < 2e-4
        assert max(a[k].abs().max().item() for k in a if "lora_B" in k) > 1e-3  # it trained
    assert (two / "samples" / "step-00000003.mp4").is_file()


def test_scene_gradients_follow_the_sparse_pattern(dataset):
    """In one block, the loss on shot i's frames has zero gradient through shot j's
    non-summary latent frames and through shot j's caption tokens (and a non-zero one
    through j's summary frame and i's own caption); dense self-attention breaks the first."""
    import torch

    from cinema_cli.train.video_config import VideoTrainConfig

    config = VideoTrainConfig(base="tiny", mode="scene", height=32, width=32, shot_frames=8, expert="high",
                              gradient_checkpointing=False)
    family, model = family_for(config, dataset)
    transformer = model.experts["high"]
    transformer.blocks = transformer.blocks[:1]
    prepared = family.prepared(family.samples[0])
    job = family.job(prepared, "high", 0.5, torch.randn(prepared.latents.shape, generator=torch.Generator().manual_seed(0)))
    per_frame = prepared.shots.summary[0]  # tokens per latent frame: a summary is one frame
    frames = [(a // per_frame, b // per_frame) for a, b in zip(prepared.shots.bounds[:-1], prepared.shots.bounds[1:])]
    windows = prepared.prompts.window_segments(prepared.shots)
    assert len(frames) >= 3

    def grads(i: int, sparse: bool):
        inputs = job.inputs.clone().requires_grad_(True)
        prompt = job.prompt.clone().requires_grad_(True)
        family.scene.sparse_self = sparse
        family.scene.shots, family.scene.prompts = prepared.shots, prepared.prompts
        out = transformer(hidden_states=inputs, timestep=job.timestep, encoder_hidden_states=prompt, return_dict=False)[0]
        out[:, :, frames[i][0]:frames[i][1]].square().sum().backward()
        return inputs.grad.abs().sum(dim=(0, 1, 3, 4)), prompt.grad.abs().sum(dim=(0, 2))

    def tokens(i: int) -> set[int]:
        return {t for a, b in windows[i].keys for t in range(a, b)}

    for i, j in ((0, 2), (2, 0), (1, 2)):
        video, text = grads(i, sparse=True)
        first, end = frames[j]
        assert video[first] > 0  # j's summary frame reaches shot i
        assert video[first + 1:end].abs().max() == 0  # j's other frames do not
        theirs = sorted(tokens(j) - tokens(i))
        assert theirs and text[theirs].abs().max() == 0  # nor does j's caption
        assert text[sorted(tokens(i))].abs().max() > 0
        dense, _ = grads(i, sparse=False)
        assert dense[first + 1:end].abs().max() > 0  # the check can fail: dense attention leaks
    family.scene.sparse_self = True


def test_gradient_checkpointing_recomputes_each_sample_under_its_own_layout(dataset):
    """Two samples of one step with different layouts (a scene, and the same latents as one
    plain shot): checkpointed blocks are recomputed in backward after the second sample
    has set its layout, and must still give the gradients of a run without checkpointing."""
    import torch

    from cinema_cli.attention.layout import ShotLayout
    from cinema_cli.train.video_config import VideoTrainConfig

    def gradients(checkpointing: bool):
        config = VideoTrainConfig(base="tiny", mode="scene", height=32, width=32, shot_frames=8, expert="high",
                                  gradient_checkpointing=checkpointing, lora={"rank": 4})
        family, model = family_for(config, dataset)
        prepared = family.prepared(family.samples[0])
        noise = torch.randn(prepared.latents.shape, generator=torch.Generator().manual_seed(0))
        scene = family.job(prepared, "high", 0.7, noise)
        plain = family.job(prepared, "high", 0.3, noise)
        plain.shots, plain.prompts = ShotLayout((0, prepared.shots.length), (prepared.shots.length,)), None
        model([scene, plain]).backward()
        return [p.grad.clone() for p in model.parameters() if p.requires_grad]

    for a, b in zip(gradients(False), gradients(True)):
        assert torch.allclose(a, b, rtol=1e-4, atol=1e-7)


def test_fsdp_shards_a_full_fine_tune_over_two_processes_as_one_process_trains(dataset, small, tmp_path):
    """`--engine fsdp` over 2 gloo processes: each holds half of every weight (FSDP2 splits
    dim 0, the first rank taking the ceiling), and the run is the 1-process full fine-tune
    of the same global batch: losses and gradient norms (global, as unsharded) to rel 1e-5,
    checkpoints (weights, AdamW's moments in the same layout) and the saved transformers
    to 1e-5, where the weights moved by over 1e-3. The two differ only in how the two
    samples' gradients are summed (one backward vs a reduce-scatter), an fp32 rounding
    (seen: under 1e-6). Resuming from the step-2 checkpoint (each process loading its
    shards) reproduces steps 3-4 exactly; the saved experts load with `from_pretrained`."""
    import torch
    from safetensors.torch import load_file

    from cinema_cli.attention.processors import install_scene_attention
    from cinema_cli.train.video_config import VideoTrainConfig
    from cinema_cli.train.video_model import VideoModel

    args = ["train", "video", dataset, "--mode", "scene", *FAST[:-3], "0.002", "--batch-size", "2", "--config", small,
            "--shot-frames", "8", "--steps", "4", "--checkpoint-every", "2", "--method", "full"]
    one, two, cut = tmp_path / "one", tmp_path / "two", tmp_path / "cut"
    cinema(*args, "-o", one)
    result = accelerate_launch(2, 29531, [*args, "--engine", "fsdp", "-o", two, "--json"])
    summary = json.loads(result.stdout.strip().splitlines()[-1])

    def metric(run: Path, name: str) -> list[float]:
        return [json.loads(line)[name] for line in (run / "metrics.jsonl").read_text().splitlines()]

    final = one / "checkpoints" / "step-00000004"
    weights = load_file(final / "trainable.safetensors")
    halves = sum(-(-w.shape[0] // 2) * w[0].numel() for w in weights.values())
    assert summary["processes"] == 2 and summary["parameters"] == sum(w.numel() for w in weights.values())
    assert summary["local_parameters"] == halves < 0.51 * summary["parameters"]  # rank 0's shards
    assert metric(two, "loss") == pytest.approx(metric(one, "loss"), rel=1e-5)
    assert metric(two, "grad_norm") == pytest.approx(metric(one, "grad_norm"), rel=1e-5)
    sharded = load_file(two / "checkpoints" / "step-00000004" / "trainable.safetensors")
    assert sharded.keys() == weights.keys() and max((sharded[k] - weights[k]).abs().max() for k in weights) < 1e-5
    adam = [torch.load(run / "checkpoints" / "step-00000004" / "optimizer.pt", weights_only=True) for run in (one, two)]
    assert adam[0]["param_groups"] == adam[1]["param_groups"] and adam[0]["state"].keys() == adam[1]["state"].keys()
    for i, moments in adam[0]["state"].items():
        for name in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(adam[1]["state"][i][name], moments[name], rtol=1e-4, atol=1e-9)

    shutil.copytree(two, cut)
    shutil.rmtree(cut / "checkpoints" / "step-00000004")
    for folder in ("transformer", "transformer_2"):
        shutil.rmtree(cut / folder)
    resumed = accelerate_launch(2, 29533, ["train", "video", dataset, "-o", cut, "--resume", "--json"])
    assert json.loads(resumed.stdout.strip().splitlines()[-1])["first_step"] == 3
    assert metric(cut, "loss") == metric(two, "loss") and metric(cut, "grad_norm") == metric(two, "grad_norm")

    # The saved experts: diffusers folders, the same weights as the unsharded run's, and
    # better on a training step's samples than the base they started from.
    config = VideoTrainConfig(base="tiny", mode="scene", method="full", height=32, width=32, shot_frames=8,
                              batch_size=2)
    family, base = family_for(config, dataset)
    from diffusers import WanTransformer3DModel  # once the base is loaded (cinema's torch compatibility)

    trained = {}
    for expert, folder in (("high", "transformer"), ("low", "transformer_2")):
        experts = [WanTransformer3DModel.from_pretrained(run / folder) for run in (one, two, cut)]
        for other in experts[1:]:
            got = dict(other.named_parameters())
            assert max((got[n] - p).abs().max() for n, p in experts[0].named_parameters()) < 1e-5
        initial = dict(base.experts[expert].named_parameters())
        assert max((initial[n] - p).abs().max() for n, p in experts[1].named_parameters()) > 1e-3  # it trained
        install_scene_attention(experts[1], family.scene)
        trained[expert] = experts[1].train()
    with torch.no_grad():
        before = family.loss(base, 0, 0, 1).item()
        after = family.loss(VideoModel(trained, family.scene), 0, 0, 1).item()
    assert after < 0.9 * before, (before, after)


def test_fsdp_is_for_full_fine_tuning_only_and_the_recipes(dataset, tmp_path):
    from pydantic import ValidationError

    from cinema_cli.train.video_config import VideoTrainConfig

    assert VideoTrainConfig(base="tiny", mode="scene", method="full", engine="fsdp").engine == "fsdp"
    with pytest.raises(ValidationError, match="fsdp shards full fine-tuning"):
        VideoTrainConfig(base="tiny", mode="scene", engine="fsdp")
    run = tmp_path / "run"
    result = cinema("train", "video", dataset, "--mode", "scene", "--base", "tiny", "--engine", "fsdp", "-o", run, rc=2)
    assert "a LoRA trains with engine: ddp" in result.stderr
    result = cinema("train", "video", dataset, "--mode", "scene", "--base", "tiny", "--engine", "zero", "-o", run, rc=2)
    assert "'ddp' or 'fsdp'" in result.stderr
    assert not run.exists()
    # The recipes: HoloCine warms up linearly, Captain Cinema's video model is constant.
    scene, keyframes = VideoTrainConfig(base="tiny", mode="scene"), VideoTrainConfig(base="tiny", mode="keyframes")
    assert scene.optimizer.lr == keyframes.optimizer.lr == 1e-5
    assert scene.lr_factor(0) < scene.lr_factor(499) == scene.lr_factor(5000) == 1.0
    assert keyframes.lr_factor(0) == 1.0


def test_bad_video_training_inputs_exit_2_and_write_nothing(dataset, tmp_path):
    run = tmp_path / "run"
    no_samples = tmp_path / "no-samples"
    shutil.copytree(dataset, no_samples)
    shutil.rmtree(no_samples / "shards" / "multishot")
    result = cinema("train", "video", no_samples, "--mode", "scene", "--base", "tiny", "-o", run, rc=2)
    assert "no multi-shot samples" in result.stderr

    other = tmp_path / "i2v"  # a Wan image-to-video pipeline's configs, for scene mode
    (other / "transformer").mkdir(parents=True)
    (other / "vae").mkdir()
    (other / "model_index.json").write_text(json.dumps({"_class_name": "WanImageToVideoPipeline"}))
    (other / "transformer" / "config.json").write_text(json.dumps({"in_channels": 36}))
    (other / "vae" / "config.json").write_text(json.dumps({"z_dim": 16}))
    result = cinema("train", "video", dataset, "--mode", "scene", "--base", other, "-o", run, rc=2)
    assert "--mode scene trains a WanPipeline" in result.stderr

    result = cinema("train", "video", dataset, "--mode", "keyframes", "--base", "tiny", "--expert", "low", "-o", run,
                    rc=2)
    assert "no low-noise expert" in result.stderr
    result = cinema("train", "video", dataset, "--base", "tiny", "-o", run, rc=2)
    assert "mode" in result.stderr
    config = write_yaml(tmp_path / "train.yaml", "mode: scene\nshot_frames: 6\n")
    result = cinema("train", "video", dataset, "--base", "tiny", "-o", run, "--config", config, rc=2)
    assert "multiple of 4" in result.stderr and "train.yaml" in result.stderr
    # Context parallelism: a launch that is not a multiple of cp, ring attention (no
    # backward pass), tokens per latent frame (4 at 32x32) or heads (2) not divisible.
    scene = ["train", "video", dataset, "--mode", "scene", "--base", "tiny", "-o", run]
    result = cinema(*scene, "--size", "32x32", "--cp", "2", rc=2)
    assert "needs a multiple of 2 (this is 1 process)" in result.stderr and "--num_processes 2" in result.stderr
    ring = write_yaml(tmp_path / "ring.yaml", "cp: 2\ncp_mode: ring\n")
    result = cinema(*scene, "--config", ring, rc=2)
    assert "cp_mode: ring runs inference only" in result.stderr
    result = cinema(*scene, "--size", "32x32", "--cp", "3", rc=2)
    assert "make 4 tokens per latent frame; choose a cp dividing 4" in result.stderr
    result = cinema(*scene, "--size", "64x64", "--cp", "4", rc=2)
    assert "tiny has 2; choose a cp dividing 2" in result.stderr
    assert not run.exists()

    keyframe_run = tmp_path / "kf"
    keyframe_run.mkdir()
    (keyframe_run / "run.json").write_text(json.dumps({"family": "keyframes", "base": "tiny", "dataset": str(dataset)}))
    before = snapshot(keyframe_run)
    result = cinema("train", "video", dataset, "-o", keyframe_run, "--resume", rc=2)
    assert snapshot(keyframe_run) == before


def test_sparse_attention_under_autograd_matches_dense_masked_attention():
    """The training path of the packed kernel (index gathers, not slices) gives the outputs
    and gradients of dense attention under the pattern's mask (a reference only a test may
    build), and the same outputs as the inference path."""
    import torch

    from cinema_cli.attention.layout import ShotLayout
    from cinema_cli.attention.sparse import packed_attention

    def attend(q, k, v):
        return torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                v.transpose(1, 2)).transpose(1, 2)

    layout = ShotLayout.from_frames([3, 2, 2, 1], 4, 1)
    segments = layout.self_segments()
    generator = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn((2, layout.length, 2, 8), generator=generator, requires_grad=True) for _ in range(3))
    mask = torch.zeros((layout.length, layout.length), dtype=torch.bool)
    for s in segments:
        for a, b in s.keys:
            mask[s.queries[0]:s.queries[1], a:b] = True
    weights = torch.randn((2, layout.length, 2, 8), generator=generator)
    sparse = packed_attention(q, k, v, segments, attend, budget=20)  # several calls per shape
    (sparse * weights).sum().backward()
    got = [t.grad.clone() for t in (q, k, v)]
    for t in (q, k, v):
        t.grad = None
    dense = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                                             attn_mask=mask).transpose(1, 2)
    (dense * weights).sum().backward()
    assert torch.allclose(sparse, dense, atol=1e-5)
    for a, b in zip(got, (q.grad, k.grad, v.grad)):
        assert torch.allclose(a, b, atol=1e-5)
    with torch.no_grad():
        assert torch.allclose(packed_attention(q, k, v, segments, attend, budget=20), sparse, atol=1e-6)


def test_bench_train_video_rows_time_full_and_sparse_steps_against_their_flops():
    import torch

    from cinema_cli.bench.train_video import run_video_bench

    threads = torch.get_num_threads()
    report = run_video_bench(shots=(2, 4), steps=1)
    assert torch.get_num_threads() == threads  # the bench's one thread is its own
    assert report["device"] == "cpu" and report["threads"] == 1
    rows = {(r["shots"], r["attention"]): r for r in report["rows"]}
    assert set(rows) == {(n, a) for n in (2, 4) for a in ("full", "sparse")}
    for (shots, _), row in rows.items():
        assert row["video_tokens"] == shots * 4 * 64 and row["seconds"] > 0
        assert row["tokens_per_s"] == pytest.approx(row["video_tokens"] / row["seconds"], rel=1e-2)
    # Sparse attention drops keys, more of them the more shots: fewer FLOPs, a larger ratio.
    for shots in (2, 4):
        assert rows[(shots, "sparse")]["step_flops_per_block"] < rows[(shots, "full")]["step_flops_per_block"]
    ratios = report["sparse_vs_full"]
    assert 1 < ratios["2"]["theoretical_speedup"] < ratios["4"]["theoretical_speedup"]
    for shots in (2, 4):
        ratio = ratios[str(shots)]
        measured = rows[(shots, "full")]["seconds"] / rows[(shots, "sparse")]["seconds"]
        assert ratio["measured_speedup"] == pytest.approx(measured, rel=1e-2)
        assert ratio["fraction_of_theoretical"] == pytest.approx(measured / ratio["theoretical_speedup"], rel=1e-2)


def test_bench_flop_model_counts_a_wan_blocks_linear_layers_and_its_lora_as_torch_does():
    """The bench's theoretical speedup rests on its FLOP model: its linear and LoRA terms
    must be what torch counts for one more block of a LoRA'd Wan transformer."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from cinema_cli.attention.layout import ShotLayout
    from cinema_cli.bench.train_video import TEXT_TOKENS, block_flops
    from cinema_cli.runtime.tiny import seeded
    from cinema_cli.train.engine import make_trainable
    from cinema_cli.train.video import LORA_TARGETS
    from cinema_cli.train.video_config import VideoTrainConfig
    from diffusers import WanTransformer3DModel

    latents, text = torch.randn(1, 16, 6, 8, 8), torch.randn(1, TEXT_TOKENS, 64)

    def linear_flops(layers: int) -> int:
        with seeded(0):
            model = WanTransformer3DModel(patch_size=(1, 2, 2), num_attention_heads=2, attention_head_dim=32,
                                          in_channels=16, out_channels=16, text_dim=64, freq_dim=256, ffn_dim=96,
                                          num_layers=layers, rope_max_seq_len=1024).requires_grad_(False)
        make_trainable(model, VideoTrainConfig(base="tiny", mode="scene", gradient_checkpointing=False), LORA_TARGETS)
        with FlopCounterMode(display=False) as counter:
            model(hidden_states=latents, timestep=torch.tensor([500.0]), encoder_hidden_states=text, return_dict=False)
        counts = counter.get_flop_counts()["Global"]
        return counts[torch.ops.aten.addmm] + counts[torch.ops.aten.mm]  # biased base layers, the LoRA's A and B

    block = block_flops(ShotLayout.from_frames([2, 2, 2], 16, 1, own_summary_again=True), 10, 64, 96, 64, True)
    assert block["frozen"] + block["lora"] == linear_flops(2) - linear_flops(1)
