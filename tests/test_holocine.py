"""`holocine`: HoloCine's released model on the tiny two-expert T2V preset, CPU, offline.

DiT files are written here in the original Wan/DiffSynth key layout (as HoloCine releases
them), loaded through the backend's conversion, and checked tensor for tensor. The
conditioning is checked against HoloCine's description written out independently here:
the prompt's form, each text window from character positions (the byte tokenizer makes
one token per character), the cuts' latent frames by (f - 1) // 4 + 1, and the whole
transformer with the scene processors against dense masked attention (the sparse variant's
keys: own shot, then the first latent frame of every shot, its own included).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_render import CINEMA, cinema

from cinema_cli.attention.processors import SceneAttention, _apply_rotary, install_scene_attention
from cinema_cli.attention.reference import masked_attention
from cinema_cli.runtime.tiny import build_tiny, seeded
from cinema_cli.runtime.tiny_wan import tiny_transformer

GLOBAL, SHOTS = "A pier at dawn.", ["Close-up. Ada waves.", "Wide shot. Bo runs.", "Medium shot. Both laugh."]

# Original layout <- diffusers layout, as Wan's own checkpoints name the DiT's parts.
TO_ORIGINAL = [
    ("condition_embedder.time_embedder.linear_1", "time_embedding.0"),
    ("condition_embedder.time_embedder.linear_2", "time_embedding.2"),
    ("condition_embedder.text_embedder.linear_1", "text_embedding.0"),
    ("condition_embedder.text_embedder.linear_2", "text_embedding.2"),
    ("condition_embedder.time_proj", "time_projection.1"),
    (".attn1.", ".self_attn."), (".attn2.", ".cross_attn."),
    (".to_q.", ".q."), (".to_k.", ".k."), (".to_v.", ".v."), (".to_out.0.", ".o."),
    (".ffn.net.0.proj.", ".ffn.0."), (".ffn.net.2.", ".ffn.2."), (".norm2.", ".norm3."),
    (".scale_shift_table", ".modulation"),
]


def original_key(key: str) -> str:
    if key == "scale_shift_table":
        return "head.modulation"
    if key.startswith("proj_out."):
        return key.replace("proj_out.", "head.head.")
    for new, old in TO_ORIGINAL:
        key = key.replace(new, old)
    return key


def holocine_files(folder: Path, variant: str = "full", seed: int = 7, drop: str | None = None,
                   in_channels: int = 4) -> dict[str, dict[str, torch.Tensor]]:
    """Two tiny experts saved as HoloCine ships them; returns their diffusers state dicts."""
    folder.mkdir(parents=True, exist_ok=True)
    states = {}
    for offset, expert in enumerate(("high_noise", "low_noise")):
        if expert == drop:
            continue
        with seeded(seed + offset):
            state = tiny_transformer(in_channels).state_dict()
        states[expert] = state
        save_file({original_key(k): v.contiguous() for k, v in state.items()},
                  str(folder / f"{variant}_{expert}.safetensors"))
    return states


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("CINEMA_CACHE", str(tmp_path / "user-cache"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


# ---------------------------------------------------------------- prompt, windows, cuts


def test_the_prompt_is_holocines_and_each_window_is_its_span():
    from cinema_cli.video.holocine_prompt import scene_prompt, text_windows

    text = scene_prompt(GLOBAL, SHOTS[:2])
    assert text == ("[global caption] A pier at dawn. This scene contains 2 shots. [per shot caption] "
                    "Close-up. Ada waves. [shot cut] Wide shot. Bo runs.")
    windows = text_windows(build_tiny("wan", kind="t2v").tokenizer, text, 2)
    shots_at = text.index("[per shot caption]")
    cut_end = text.index("[shot cut]") + len("[shot cut]")
    # One token per character; HoloCine's windows reach one token past each span's last.
    assert windows.global_run == (0, shots_at + 1)
    assert windows.shot_runs == ((shots_at, cut_end + 1), (cut_end, len(text) + 1))
    assert windows.shared == ((len(text) + 1, 512),) and windows.length == 512  # </s> is in the last window


def test_a_prompt_over_512_tokens_is_a_message():
    from cinema_cli.errors import BadInput
    from cinema_cli.video.holocine_prompt import scene_prompt, text_windows

    text = scene_prompt(GLOBAL, ["x" * 300, "y" * 300])
    with pytest.raises(BadInput, match="does not fit the model's 512 tokens"):
        text_windows(build_tiny("wan", kind="t2v").tokenizer, text, 2)


def test_cuts_fall_on_latent_frames_as_holocine_maps_them():
    from cinema_cli.video.holocine_denoise import SceneJob, shot_layout
    from cinema_cli.video.holocine_prompt import cut_frames, latent_cuts, shot_frames

    assert [shot_frames(n) for n in (1, 5, 7, 8, 10)] == [4, 4, 8, 8, 8]
    frames = (8, 4, 12)
    assert cut_frames(frames) == [9, 13]  # 4m+1 frames: shot 1 starts at frame 1 + 8
    video = 1 + sum(frames)
    assert latent_cuts([9, 13], video) == [0, (9 - 1) // 4 + 1, (13 - 1) // 4 + 1] == [0, 3, 4]
    job = SceneJob("g", ("a", "b", "c"), frames, 16, 16, 0, 1, 1.0, "", True)
    layout = shot_layout(job, tokens_per_frame=2)
    assert layout.bounds == (0, 6, 8, 14)  # latent frames 0-2 | 3 | 4-6, two tokens each
    assert layout.summary == (2, 2, 2) and layout.own_summary_again


# ---------------------------------------------------------------- attention vs dense reference


class DenseReference:
    """HoloCine's attention as dense masked attention over the whole score matrix:
    cross-attention masked to each shot's text window (none on a plain prompt); sparse
    self-attention over [all keys, then the summary pool], each shot seeing its own keys
    and the whole pool."""

    def __init__(self, shot_of: torch.Tensor, summaries: list[tuple[int, int]], text_allow, sparse: bool):
        self.shot_of, self.summaries, self.text_allow, self.sparse = shot_of, summaries, text_allow, sparse

    def __call__(self, attn, hidden_states, encoder_hidden_states=None, attention_mask=None, rotary_emb=None):
        from diffusers.models.transformers.transformer_wan import _get_qkv_projections

        q, k, v = _get_qkv_projections(attn, hidden_states, encoder_hidden_states)
        q, k = attn.norm_q(q), attn.norm_k(k)
        q, k, v = (t.unflatten(2, (attn.heads, -1)) for t in (q, k, v))
        length = q.shape[1]
        if encoder_hidden_states is None:
            q, k = _apply_rotary(q, *rotary_emb), _apply_rotary(k, *rotary_emb)
            mask = torch.ones(length, length, dtype=torch.bool)
            if self.sparse:
                own = self.shot_of[:, None] == self.shot_of[None, :]
                pool = torch.cat([torch.arange(a, b) for a, b in self.summaries])
                k, v = torch.cat([k, k[:, pool]], 1), torch.cat([v, v[:, pool]], 1)
                mask = torch.cat([own, torch.ones(length, len(pool), dtype=torch.bool)], 1)
        else:
            mask = self.text_allow if self.text_allow is not None else torch.ones(length, k.shape[1], dtype=torch.bool)
        out = masked_attention(q, k, v, mask).flatten(2, 3).type_as(q)
        return attn.to_out[1](attn.to_out[0](out))


@pytest.mark.parametrize("variant", ["full", "sparse"])
def test_the_transformer_attends_as_holocine_does(variant):
    from diffusers.pipelines.wan.pipeline_wan import prompt_clean

    from cinema_cli.video.holocine_denoise import SceneJob, shot_layout
    from cinema_cli.video.holocine_prompt import scene_prompt, text_windows

    pipe = build_tiny("wan", kind="t2v")
    job = SceneJob(GLOBAL, tuple(SHOTS), (4, 8, 4), 32, 32, 0, 1, 1.0, "", variant == "sparse")
    text = scene_prompt(GLOBAL, SHOTS)
    embeds, _ = pipe.encode_prompt(text, do_classifier_free_guidance=False, max_sequence_length=512)
    windows = text_windows(pipe.tokenizer, prompt_clean(text), 3)
    layout = shot_layout(job, tokens_per_frame=4)  # 32 px: 4x4 latents, 2x2 patches
    gen = torch.Generator().manual_seed(1)
    x = torch.randn((1, 4, 5, 4, 4), generator=gen)  # 17 frames: latent frames 2 | 2 | 1
    timestep = torch.tensor([700.0])

    # The reference masks, from the description: token -> shot by the latent cuts.
    shot_of = torch.repeat_interleave(torch.arange(3), torch.tensor([2, 2, 1]) * 4)
    allow = torch.zeros(len(shot_of), 512, dtype=torch.bool)
    text_len = len(text) + 1  # + </s>
    global_end, starts = text.index("[per shot caption]"), [text.index("[per shot caption]")]
    cut_ends = [m + len("[shot cut]") for m in range(len(text)) if text.startswith("[shot cut]", m)]
    spans = list(zip(starts + cut_ends, cut_ends + [len(text)]))
    for shot, (a, b) in enumerate(spans):
        rows = shot_of == shot
        allow[rows, : global_end + 1] = True
        allow[rows, a:b + 1] = True
    allow[:, text_len:] = True
    summaries = [(0, 4), (8, 12), (16, 20)]
    assert layout.bounds == (0, 8, 16, 20)

    model = pipe.transformer
    with torch.no_grad():
        scene = SceneAttention(shots=layout, prompts=windows, sparse_self=variant == "sparse")
        install_scene_attention(model, scene)
        ours = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        scene.prompts = None  # the negative prompt's pass: whole text
        ours_plain = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        sparse = variant == "sparse"
        model.set_attn_processor(DenseReference(shot_of, summaries, allow, sparse))
        reference = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        model.set_attn_processor(DenseReference(shot_of, summaries, None, sparse))
        reference_plain = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds,
                                return_dict=False)[0]
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=0)
    torch.testing.assert_close(ours_plain, reference_plain, atol=1e-5, rtol=0)
    # The windows (and for sparse, the pattern) change the output: the comparison is not vacuous.
    assert (ours - ours_plain).abs().max() > 1e-3
    if sparse:
        model.set_attn_processor(DenseReference(shot_of, summaries, allow, False))
        dense_self = model(hidden_states=x, timestep=timestep, encoder_hidden_states=embeds, return_dict=False)[0]
        assert (ours - dense_self).abs().max() > 1e-3


# ---------------------------------------------------------------- weights


def test_dit_files_in_the_original_layout_load_exactly_and_are_cached_outside_the_project(tmp_path):
    from cinema_cli.project.schema import RuntimeSettings
    from cinema_cli.video.holocine import HolocineOptions, HolocineShots

    states = holocine_files(tmp_path / "HoloCine_dit" / "full")
    assert "blocks.0.self_attn.q.weight" in json.dumps(list(
        __import__("safetensors").safe_open(str(tmp_path / "HoloCine_dit/full/full_high_noise.safetensors"),
                                            "pt").keys()))
    backend = HolocineShots(HolocineOptions(model="tiny", dit=str(tmp_path / "HoloCine_dit"), variant="full"))
    pipe, _ = backend.pipeline(RuntimeSettings(device="cpu"))
    for name, expert in (("transformer", "high_noise"), ("transformer_2", "low_noise")):
        loaded = getattr(pipe, name).state_dict()
        assert loaded.keys() == states[expert].keys()
        for key, tensor in states[expert].items():
            assert torch.equal(loaded[key], tensor), (name, key)
    cached = list((tmp_path / "user-cache" / "holocine").iterdir())
    assert len(cached) == 2 and all((c / "diffusion_pytorch_model.safetensors").is_file() for c in cached)


# ---------------------------------------------------------------- a project


def new_project(parent: Path, options: dict) -> Path:
    cinema("new", "film", cwd=parent)
    root = parent / "film"
    script = {"title": "Pier", "style": "flat colours", "characters": [
        {"name": "Ada", "description": "woman in a red coat"}, {"name": "Bo", "description": "man in a blue hat"}],
        "scenes": [
            {"id": "pier", "location": "a pier", "time": "dawn", "beats": [
                {"text": "<Ada> waves", "duration": 1.0}, {"text": "<Bo> runs", "duration": 0.5},
                {"text": "<Ada> laughs", "duration": 1.0}]},
            {"id": "road", "location": "a road", "time": "noon", "beats": [{"text": "<Bo> walks", "duration": 1.0}]},
        ]}
    (root / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": 64, "height": 64}, fps=8, shot_seconds=1.0, keyframes={"backend": "sketch"},
                  video={"backend": "holocine", "options": {"model": "tiny", "steps": 2, "guidance": 2.0, **options}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def test_a_project_renders_scene_by_scene_within_the_frame_budget(tmp_path):
    from cinema_cli.assemble.probe import probe
    from cinema_cli.pipeline import Pipeline
    from cinema_cli.project.project import Project

    holocine_files(tmp_path / "dit" / "sparse", variant="sparse")
    # 8 + 4 + 8 frames in the pier scene: 21 frames > 17, so it is split after s02.
    root = new_project(tmp_path, {"dit": str(tmp_path / "dit"), "variant": "sparse", "max_frames": 17})
    pipeline = Pipeline(Project.open(root))
    result = pipeline.run()
    assert result.rebuilt.shots == ["s01", "s02", "s03", "s04"] and result.rebuilt.film
    assert [probe(root / "shots" / f"s0{i}.mp4").frames for i in range(1, 5)] == [8, 4, 8, 8]
    board = Project.open(root).storyboard
    assert pipeline.shot_backend.groups(board, pipeline.frames_of) == [["s01", "s02"], ["s03"], ["s04"]]
    assert not (root / "user-cache").exists() and not list(root.rglob("*.safetensors"))  # cache is the user's


def run_cli(root: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CINEMA_CACHE": str(tmp_path / "user-cache"), "COLUMNS": "200"}
    return subprocess.run([CINEMA, "render", "--json"], cwd=root, capture_output=True, text=True, env=env,
                          timeout=300)


def snapshot(root: Path) -> dict[str, bytes]:
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p != root / ".cinema" / "lock")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


@pytest.mark.parametrize("fault,message", [
    ("keys", r"full_high_noise.safetensors is not a HoloCine/Wan DiT in the original key layout"),
    ("i2v", r"full_high_noise.safetensors is an image-to-video Wan DiT .*reads 12 input channels"),
    ("expert", r"has no full_low_noise.safetensors; .*both experts are needed"),
], ids=["wrong-keys", "i2v-dit", "missing-expert"])
def test_bad_dit_files_are_named_and_change_nothing(tmp_path, fault, message):
    folder = tmp_path / "dit"
    holocine_files(folder, in_channels=12 if fault == "i2v" else 4, drop="low_noise" if fault == "expert" else None)
    if fault == "keys":
        state = {k.replace("self_attn", "attention"): torch.zeros(1) for k in
                 __import__("safetensors.torch", fromlist=["load_file"]).load_file(
                     str(folder / "full_high_noise.safetensors"))}
        save_file(state, str(folder / "full_high_noise.safetensors"))
    root = new_project(tmp_path, {"dit": str(folder)})
    cinema("story", cwd=root)  # the storyboard exists; the render must not write beyond it
    before = snapshot(root)
    result = run_cli(root, tmp_path)
    assert result.returncode == 2, result.stderr
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["exit_code"] == 2 and __import__("re").search(message, report["error"]), report
    assert "Traceback" not in result.stderr
    assert snapshot(root) == before
    assert not (tmp_path / "user-cache").exists()  # nothing converted either


def test_a_t2v_model_for_keyframe_scene_and_an_i2v_base_for_holocine_are_refused(tmp_path):
    from cinema_cli.errors import BadInput
    from cinema_cli.project.schema import RuntimeSettings
    from cinema_cli.video.base import RenderPlan
    from cinema_cli.video.holocine import HolocineOptions, HolocineShots

    i2v = tmp_path / "Wan-I2V"
    build_tiny("wan", kind="i2v").save_pretrained(i2v)
    plan = RenderPlan(width=32, height=32, fps=8, frames=(8,), runtime=RuntimeSettings(device="cpu"))
    with pytest.raises(BadInput, match=r"Wan-I2V is a image-to-video .*holocine needs a text-to-video"):
        HolocineShots(HolocineOptions(model=str(i2v), dit=str(tmp_path))).preflight(plan)


def test_the_old_scene_name_still_works():
    from cinema_cli.video.base import shot_backends

    assert shot_backends.get("scene").__mro__[1] is shot_backends.get("keyframe-scene")


def test_doctor_says_keyframe_scene_without_an_adapter_is_zero_shot_and_checks_holocines_files(tmp_path):
    from test_render import cinema_json

    root = new_project(tmp_path, {"dit": "cinema-tests/no-such-holocine"})
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["video"]["options"]["model"] = "cinema-tests/no-such-wan-t2v"
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    data = cinema_json("doctor", cwd=root)
    assert [(w["backend"], w["model"], w["present"]) for w in data["weights"] if w["stage"] == "video"] == [
        ("holocine", "cinema-tests/no-such-wan-t2v", False), ("holocine", "cinema-tests/no-such-holocine", False)]  # each as the backend declares it
    assert data["experimental"] == []
    config["video"] = {"backend": "scene", "options": {"model": "tiny"}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    data = cinema_json("doctor", cwd=root)
    assert len(data["experimental"]) == 1 and "zero-shot without a trained adapter" in data["experimental"][0]
    assert "old name of keyframe-scene" in cinema("doctor", cwd=root).stdout


def test_bench_video_reports_each_model_and_variant(monkeypatch):
    from cinema_cli.bench import video as bench

    monkeypatch.setattr(bench, "NARROW", {**bench.NARROW, "num_layers": 1, "attention_head_dim": 16, "ffn_dim": 32})
    monkeypatch.setattr(bench, "COMMON", {**bench.COMMON, "text_dim": 32})
    monkeypatch.setattr(bench, "CPU_SIZE", (32, 32))
    monkeypatch.setattr(bench, "SCENES", (2, 3))
    report = bench.run_video_bench(repeats=1, steps=2)
    labels = [(r["model"], r.get("variant"), r.get("shots")) for r in report["runs"]]
    assert labels == [("wan", None, None), ("holocine", "full", 2), ("holocine", "sparse", 2),
                      ("holocine", "full", 3), ("holocine", "sparse", 3)]
    runs = report["runs"]
    assert runs[2]["tflop_per_forward"] < runs[1]["tflop_per_forward"]  # sparse keeps fewer keys
    assert all(r["seconds_per_forward"] > 0 and r["frames"] % 4 == 1 for r in runs)
    assert set(report["sparse_speedup_vs_full"]) == {"2", "3"}
