"""Context parallelism: the scene processors split over 2 CPU processes (gloo, launched by
torchrun as a render is) give the single-process answer, float32, atol 1e-5."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from conftest import manifest_records

from cinema_cli.attention.context_parallel import _merge, attend_with_lse, cut_keys, split_sizes
from cinema_cli.attention.kernels import dispatch_attend
from cinema_cli.attention.layout import Segment, ShotLayout
from cinema_cli.attention.sparse import packed_attention
from cinema_cli.errors import BadInput
from cinema_cli.project.schema import ContextParallelSettings
from cinema_cli.runtime.parallel import check_launch, check_tokens

ATOL = 1e-5
WORKER = Path(__file__).with_name("context_parallel_worker.py")


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> dict:
    """The one 2-process launch: the attention checks, then `render --cp 2` of a tiny HoloCine
    project, while this process renders a copy of it alone."""
    from cinema_cli.pipeline import Pipeline
    from cinema_cli.project.project import Project

    folder = tmp_path_factory.mktemp("cp")
    root = tiny_holocine_project(folder)
    single = folder / "single"
    shutil.copytree(root, single)
    out = folder / "results.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "OMP_NUM_THREADS": "1",
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
         str(WORKER), str(out), str(root)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    try:
        Pipeline(Project.open(single)).run()
        stdout, stderr = proc.communicate(timeout=240)
    finally:
        proc.kill()
    assert proc.returncode == 0, stderr[-4000:]
    reports = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    return {**json.loads(out.read_text()), "render": reports, "root": root, "single": single}


@pytest.mark.parametrize("mode", ["ulysses", "ring"])
def test_two_processes_equal_one(two_processes, mode):
    """Sparse inter-shot self-attention and window cross-attention, on the even split and
    diffusers' uneven (tensor_split) one, each cutting through a shot; and a whole tiny Wan
    transformer, sparse and full, split by its own _cp_plan hooks."""
    checks = [f"{kind} {mode}-{split}" for kind in ("self", "cross") for split in ("even", "uneven")]
    if mode == "ring":
        checks += ["transformer ring sparse", "transformer ring full"]
    if mode == "ulysses":  # the all-to-all is differentiable: input gradients equal too
        checks += ["grad ulysses-even", "grad ulysses-uneven"]
    for check in checks:
        assert two_processes[check] <= ATOL, (check, two_processes[check])


def test_a_ring_that_does_not_pass_kv_is_caught(two_processes):
    # Each process keeping its own K/V slice must be far off, else the equality above proves nothing.
    assert two_processes["no-exchange ring-even"] > 0.05
    assert two_processes["ring refuses backward"] is True


def test_ring_pieces_merge_to_the_whole_pattern():
    """The ring's arithmetic in one process: the pattern solved against each K/V slice (key
    runs cut to it) and merged by log-sum-exp is the pattern against all keys."""
    layout = ShotLayout.from_frames([3, 1, 4], tokens_per_frame=2, own_summary_again=True)
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, layout.length, 2, 8, generator=g) for _ in range(3))
    expected = packed_attention(q, k, v, layout.self_segments(), dispatch_attend())
    acc = torch.zeros(*q.shape[:3], 9)
    acc[..., -1] = float("-inf")
    for start, end in ((0, 5), (5, 6), (6, 16)):  # the middle slice: only summary tokens of shot 0
        part = torch.zeros_like(acc)
        part[..., -1] = float("-inf")
        cut = cut_keys(layout.self_segments(), start, end)
        packed_attention(q, k[:, start:end], v[:, start:end], cut, attend_with_lse, out=part)
        _merge(acc, part)
    torch.testing.assert_close(acc[..., :-1], expected, rtol=ATOL, atol=ATOL)


def test_cut_keys_drops_segments_without_keys_there():
    segments = [Segment((0, 4), ((0, 4), (10, 12))), Segment((4, 8), ((4, 8),))]
    assert cut_keys(segments, 8, 16) == [Segment((0, 4), ((2, 4),))]


def test_split_sizes_follow_diffusers_sharders():
    assert split_sizes(27, 2, uneven=True) == (14, 13)
    assert split_sizes(30, 3, uneven=False) == (10, 10, 10)
    with pytest.raises(ValueError, match="divisible"):
        split_sizes(27, 2, uneven=False)


def test_settings_that_cannot_run_are_bad_input(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "1")
    with pytest.raises(BadInput, match="torchrun --nproc_per_node 2"):
        check_launch(ContextParallelSettings(degree=2), "wan")
    with pytest.raises(BadInput, match="tokens per latent frame"):
        check_tokens(ContextParallelSettings(degree=4), 1558, 40, "wan")
    with pytest.raises(BadInput, match="mode: ring"):
        check_tokens(ContextParallelSettings(degree=3), 1560, 40, "wan")
    check_tokens(ContextParallelSettings(degree=3, mode="ring"), 1560, 40, "wan")


def test_preflight_splits_a_long_scene_over_the_gpus_it_has():
    """A HoloCine-size scene (241 frames at 480x832) on GPUs with a little too little free for
    it: the preflight names the smallest split that fits; with it set, each GPU's share fits."""
    from cinema_cli.errors import BackendError
    from cinema_cli.runtime.memory import check_fits, need_bytes
    from cinema_cli.runtime.parallel import possible_degrees

    scene = wan_a14b_scene()
    wan_a14b, runtime, tokens, pixels = scene.size, scene.runtime, scene.tokens, scene.pixels
    one, two = need_bytes(wan_a14b, runtime, tokens, pixels), need_bytes(wan_a14b, runtime, tokens, pixels, cp=2)
    assert two < one  # the weights on both GPUs, the block activations halved
    free = (one + two) // 2
    degrees = possible_degrees(ContextParallelSettings(), 30 * 52, 40, gpus=8)
    assert degrees == (2, 4, 5, 8)  # 40 heads, 1560 tokens a frame: Ulysses over 3, 6 or 7 cannot split them
    with pytest.raises(BackendError, match=r"split over 2 GPUs it needs about .* GiB on each .*cinema render --cp 2"):
        check_fits(wan_a14b, runtime, tokens, pixels, free, "holocine", 1, degrees)
    check_fits(wan_a14b, runtime, tokens, pixels, free, "holocine", 2, degrees)  # the split fits
    with pytest.raises(BackendError, match="runtime: {offload: group"):  # one GPU: a leaner profile instead
        check_fits(wan_a14b, runtime, tokens, pixels, free, "holocine", 1, ())


def wan_a14b_scene(label: str = "scene pier (s01-s04, 240 frames)"):
    """HoloCine's scene (241 frames at 480x832) on Wan2.2 A14B's shape, bf16, offload: model."""
    from cinema_cli.runtime.memory import ModelSize, SceneMemory
    from cinema_cli.runtime.profiles import Runtime

    size = ModelSize(params={"transformer": 14_300_000_000, "transformer_2": 14_300_000_000,
                             "text_encoder": 5_700_000_000, "vae": 127_000_000},
                     quantizable=("transformer", "transformer_2", "text_encoder"),
                     hidden=5120, ffn=13824, layers=40, vae_channels=96)
    return SceneMemory(label, size, Runtime("cuda", "bfloat16", offload="model"), 61 * 30 * 52, 480 * 832, 30 * 52, 40)


def test_auto_split_picks_the_smallest_degree_that_fits():
    """`render` on several GPUs: a scene that fits one GPU is not split; one that does not is
    split over the smallest degree whose share fits (of those the heads and tokens allow),
    with a notice of the numbers; when even every GPU is too few, bad input naming them."""
    from cinema_cli.runtime.memory import GiB, split_degree
    from cinema_cli.runtime.parallel import possible_degrees

    scene = wan_a14b_scene()
    one, two, four, eight = (scene.need(d) for d in (1, 2, 4, 8))
    assert one > two > four > eight  # the weights stay on every GPU, the activations split
    degrees = possible_degrees(ContextParallelSettings(), scene.tokens_per_frame, scene.heads, gpus=8)
    assert degrees == (2, 4, 5, 8)  # Ulysses: 40 heads do not split 3, 6 or 7 ways
    assert split_degree(scene, one, degrees) == (1, None)
    degree, notice = split_degree(scene, (one + two) // 2, degrees)
    assert degree == 2
    assert notice.startswith(f"scene pier (s01-s04, 240 frames) needs ~{one / GiB:.1f} GiB of GPU memory")
    assert f"split over 2 GPUs: ~{two / GiB:.1f} GiB each" in notice
    assert split_degree(scene, (two + four) // 2, degrees)[0] == 4  # 5 and 8 fit too: the smallest
    assert split_degree(scene, eight, degrees)[0] == 8
    assert split_degree(scene, (two + four) // 2, (2, 5, 8))[0] == 5  # only what the model can be split over
    with pytest.raises(BadInput, match=rf"needs ~{one / GiB:.1f} GiB .* split over 8 GPUs it still needs "
                                       rf"~{eight / GiB:.1f} GiB on each"):
        split_degree(scene, eight - 1, degrees)
    with pytest.raises(BadInput, match="cannot be split over these GPUs"):
        split_degree(scene, two, ())  # e.g. Ulysses over 3 GPUs of a 40-head model


def test_gpus_and_cp_that_cannot_combine_are_refused(tmp_path):
    """`--gpus N --cp C` needs C to divide N (N/C groups), and one project; checked before any
    process starts, with the ranks it means when it is right."""
    from cinema_cli.cli import ranks

    root = tiny_holocine_project(tmp_path)
    both = ranks.check([root], "2", 2, None)
    assert (both.processes, both.cp.degree) == (2, 2)
    assert ranks.check([root], "2", None, None).cp.degree == 1  # no CUDA: no memory to split for
    with pytest.raises(BadInput, match="groups of 2; choose a degree that divides 1"):
        ranks.check([root], "1", 2, None)
    with pytest.raises(BadInput, match="one project at a time"):
        ranks.check([root, root], "2", 2, None)


def test_render_gpus_splits_a_scene_too_big_for_one(tmp_path, monkeypatch):
    """`--gpus N` on CUDA with the longest scene too big for one GPU: the ranks become groups
    of the smallest degree that fits, GPUs left over idle, and the user is told. (No GPU
    here: the GPU count, the estimate of the real model and the free memory stand in.)"""
    from cinema_cli.cli import ranks
    from cinema_cli.pipeline.shots import ShotStage
    from cinema_cli.runtime import distributed

    root = tiny_holocine_project(tmp_path)
    scene = wan_a14b_scene()
    monkeypatch.setattr(distributed, "cuda_devices", lambda: 4)
    monkeypatch.setattr(ShotStage, "memory", lambda self: scene)
    monkeypatch.setattr(ranks, "free_gpu_bytes_each", lambda gpus: (scene.need(1) + scene.need(2)) // 2)
    split = ranks.check([root], "3", None, None)
    assert (split.processes, split.cp.degree) == (2, 2)
    assert "split over 2 GPUs" in split.notices[0] and "1 GPU(s) stay idle" in split.notices[0]
    every = ranks.check([root], "all", None, None)
    assert (every.processes, every.cp.degree) == (4, 2)
    assert ranks.plain_split(root)[0] == 2  # a plain `cinema render` on the 4 GPUs: `--cp 2`
    monkeypatch.setattr(ranks, "free_gpu_bytes_each", lambda gpus: scene.need(4) - 1)
    with pytest.raises(BadInput, match="split over 4 GPUs it still needs"):  # 4 GPUs: 2 or 4 (40 heads)
        ranks.check([root], "4", None, None)


# ---------------------------------------------------------------- cinema render --cp


def tiny_holocine_project(parent: Path) -> Path:
    """One scene of two shots for the tiny HoloCine preset (64x64: 16 tokens a latent frame)."""
    from test_render import cinema

    cinema("new", "film", cwd=parent)
    root = parent / "film"
    script = {"title": "Pier", "style": "flat colours", "characters": [{"name": "Ada", "description": "a red coat"}],
              "scenes": [{"id": "pier", "location": "a pier", "time": "dawn", "beats": [
                  {"text": "<Ada> waves", "duration": 1.0}, {"text": "<Ada> runs", "duration": 0.5}]}]}
    (root / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": 64, "height": 64}, fps=8, shot_seconds=1.0, keyframes={"backend": "sketch"},
                  video={"backend": "holocine", "options": {"model": "tiny", "dit": None, "variant": "sparse",
                                                            "steps": 1, "guidance": 1.0}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def test_render_cp_2_makes_the_single_process_shots(two_processes):
    """`-m cinema_cli render --cp 2` in 2 torchrun processes (Ulysses, gloo): one report (rank
    0's), and shots byte-identical to a one-process render (the same kernel per head); only
    rank 0 wrote the project."""
    root, single = two_processes["root"], two_processes["single"]
    assert len(two_processes["render"]) == 1, two_processes["render"]
    report = two_processes["render"][0]
    assert report["ok"] and report["rebuilt"]["shots"] == ["s01", "s02"], report
    for shot in ("s01", "s02"):
        assert (root / "shots" / f"{shot}.mp4").read_bytes() == (single / "shots" / f"{shot}.mp4").read_bytes()
    assert manifest_records(root)["shots"].keys() == manifest_records(single)["shots"].keys()
    assert sorted(p.name for p in (root / "shots").iterdir()) == ["s01.mp4", "s02.mp4"]


def test_render_gpus_2_cp_2_equals_one_process(two_processes, tmp_path):
    """`cinema render --gpus 2 --cp 2`: the 2 ranks are one context-parallel group, one builder
    of the scheduler (rank 0's thread leads the scene, rank 1 follows it); the shots, the film
    and the manifest equal a one-process render's byte for byte (Ulysses: the same kernel per head)."""
    root, single = tiny_holocine_project(tmp_path), two_processes["single"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[1]), "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run([sys.executable, "-m", "cinema_cli", "render", "--gpus", "2", "--cp", "2", "--json",
                             "-p", str(root)], capture_output=True, text=True, timeout=240, env=env)
    assert result.returncode == 0, result.stderr[-4000:]
    [report] = [json.loads(line) for line in result.stdout.splitlines() if line.startswith("{")]
    assert report["ok"] and report["rebuilt"]["shots"] == ["s01", "s02"], report
    assert report["ranks"] == 2 and report["cp_groups"] == [[0, 1]]
    assert [(b["key"], b["rank"]) for b in report["builds"] if b["stage"] == "shots"] == [("scene pier (s01, s02)", 0)]
    for path in ("shots/s01.mp4", "shots/s02.mp4", "film.mp4"):
        assert (root / path).read_bytes() == (single / path).read_bytes(), path
    assert manifest_records(root) == manifest_records(single)


def test_bad_cp_settings_are_refused_and_change_nothing(tmp_path):
    from test_render import cinema

    from cinema_cli.project.project import Project

    root = tiny_holocine_project(tmp_path)
    before = sorted(p.relative_to(root) for p in root.rglob("*"))
    result = cinema("render", "--cp", "2", "--cp-mode", "sideways", cwd=root, rc=2)
    assert "--cp-mode: Input should be 'ulysses' or 'ring'" in result.stderr, result.stderr
    result = cinema("render", "--gpus", "2", "--cp", "3", cwd=root, rc=2)  # 2 ranks are no groups of 3
    assert "into groups of 3; choose a degree that divides 2" in result.stderr, result.stderr
    assert sorted(p.relative_to(root) for p in root.rglob("*")) == before
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["runtime"] = {"cp": {"degree": 0}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    with pytest.raises(BadInput, match=r"cinema.yaml:\d+: runtime.cp.degree"):
        Project.open(root).config  # noqa: B018
