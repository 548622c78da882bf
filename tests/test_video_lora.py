"""LoRAs in the Wan video backends (`wan`, `keyframe-scene`, `holocine`), on the tiny presets,
CPU, offline.

One adapter is made here for the tiny transformer (random, non-zero lora_B, rank 4,
alpha 8, so alpha/rank = 2 must be honoured) and written as diffusers saves it (its
alpha in the adapter metadata) and, renamed by each trainer's conventions, as musubi-tuner,
ComfyUI, diffusion-pipe and DiffSynth write it. Every file must fuse exactly the update
strength x alpha/rank x B A into exactly its modules (float32, 1e-5) and so make the same
shot; strength 0 is the base model; fused and unfused adapters give the same transformer
output; `lora_2` goes into the second (low-noise) expert only; unknown layouts and
adapters for another architecture are refused before anything is written; a retrained
LoRA makes the shots stale and nothing else.
"""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import save_file
from test_render import CINEMA

from cinema_cli.errors import BadInput
from cinema_cli.project.schema import Framing, Move, RuntimeSettings
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.video.base import EncodeSettings, RenderPlan, SceneRequest, ShotRequest

RANK, ALPHA = 4, 8.0
CPU = RuntimeSettings(device="cpu")
# The modules the adapter trains: every Linear of the blocks, and some outside them.
TARGETS = ("attn1.", "attn2.", "ffn.", "proj_out", "condition_embedder.time_proj",
           "condition_embedder.text_embedder.linear_1")


@pytest.fixture(autouse=True)
def always_offline(offline):
    """Every test here runs offline (conftest.offline)."""


def wan_original(module: str) -> str:
    """Wan's original module name of a diffusers one, as the original code names its layers."""
    whole = {"proj_out": "head.head", "condition_embedder.time_proj": "time_projection.1",
             "condition_embedder.text_embedder.linear_1": "text_embedding.0"}
    if module in whole:
        return whole[module]
    block, index, attention, *rest = module.split(".")
    if attention == "ffn":  # ffn.net.0.proj / ffn.net.2
        return f"{block}.{index}.ffn.{rest[1]}"
    layer = {"to_q": "q", "to_k": "k", "to_v": "v", "to_out": "o"}[rest[0]]
    return f"{block}.{index}.{'self_attn' if attention == 'attn1' else 'cross_attn'}.{layer}"


def make_adapter(transformer, seed: int = 3) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """{module: (A, B)} for the targeted Linear layers of `transformer`."""
    generator = torch.Generator().manual_seed(seed)
    adapter = {}
    for name, layer in transformer.named_modules():
        if isinstance(layer, torch.nn.Linear) and any(name.startswith(t) or f".{t}" in name for t in TARGETS):
            adapter[name] = (torch.randn(RANK, layer.in_features, generator=generator) * 0.2,
                             torch.randn(layer.out_features, RANK, generator=generator) * 0.2)
    return adapter


def write_layouts(adapter: dict, folder: Path) -> dict[str, Path]:
    """The adapter in each layout: {layout: file}."""
    from diffusers import WanPipeline

    folder.mkdir(parents=True, exist_ok=True)
    layers = {f"{m}.{part}.weight": w for m, (a, b) in adapter.items() for part, w in (("lora_A", a), ("lora_B", b))}
    WanPipeline.save_lora_weights(folder / "diffusers", transformer_lora_layers=layers,
                                  transformer_lora_adapter_metadata={"r": RANK, "lora_alpha": ALPHA,
                                                                     "target_modules": sorted(adapter)})
    alpha, scale = torch.tensor(ALPHA), ALPHA / RANK
    layouts = {
        # kohya style: the alpha beside the weights
        "musubi": {k: v for m, (a, b) in adapter.items() for k, v in (
            (f"lora_unet_{wan_original(m).replace('.', '_')}.lora_down.weight", a),
            (f"lora_unet_{wan_original(m).replace('.', '_')}.lora_up.weight", b),
            (f"lora_unet_{wan_original(m).replace('.', '_')}.alpha", alpha))},
        "comfyui": {k: v for m, (a, b) in adapter.items() for k, v in (
            (f"diffusion_model.{wan_original(m)}.lora_down.weight", a),
            (f"diffusion_model.{wan_original(m)}.lora_up.weight", b),
            (f"diffusion_model.{wan_original(m)}.alpha", alpha))},
        # peft style, no alpha in the file (alpha = rank): the trainer saves the scaled update
        "diffusion-pipe": {k: v for m, (a, b) in adapter.items() for k, v in (
            (f"diffusion_model.{wan_original(m)}.lora_A.weight", a),
            (f"diffusion_model.{wan_original(m)}.lora_B.weight", b * scale))},
        "diffsynth": {k: v for m, (a, b) in adapter.items() for k, v in (
            (f"{wan_original(m)}.lora_A.default.weight", a), (f"{wan_original(m)}.lora_B.default.weight", b * scale))},
    }
    files = {"diffusers": folder / "diffusers" / "pytorch_lora_weights.safetensors"}
    for layout, state in layouts.items():
        files[layout] = folder / f"{layout}.safetensors"
        save_file({k: v.clone().contiguous() for k, v in state.items()}, str(files[layout]))
    return files


def loaded(kind: str, fuse: bool | None = None, **options):
    from cinema_cli.video.lora import VideoLoraOptions, load_loras

    pipe = build_tiny("wan", kind=kind)
    load_loras(pipe, VideoLoraOptions(**options), "tiny", "wan", fuse=fuse)
    return pipe


def transformer_output(pipe) -> torch.Tensor:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(1, pipe.transformer.config.in_channels, 2, 8, 8, generator=generator)
    text = torch.randn(1, 6, 32, generator=generator)
    with torch.no_grad():
        return pipe.transformer(hidden_states=x, timestep=torch.tensor([500]), encoder_hidden_states=text,
                                return_dict=False)[0]


def test_every_layout_fuses_the_same_update_into_the_same_modules(tmp_path):
    base = build_tiny("wan", kind="i2v").transformer.state_dict()
    adapter = make_adapter(build_tiny("wan", kind="i2v").transformer)
    files = write_layouts(adapter, tmp_path)
    strength = 0.75
    outputs = {}
    for layout, path in files.items():
        pipe = loaded("i2v", lora=str(path), lora_strength=strength)
        state = pipe.transformer.state_dict()
        assert state.keys() == base.keys(), layout  # fused: the adapter layers are gone
        for key, tensor in state.items():
            module = key.removesuffix(".weight")
            if module in adapter:
                a, b = adapter[module]
                expected = base[key] + strength * ALPHA / RANK * b @ a
                torch.testing.assert_close(tensor, expected, rtol=0, atol=1e-5, msg=f"{layout} {key}")
            else:
                assert torch.equal(tensor, base[key]), (layout, key)
        outputs[layout] = transformer_output(pipe)
    for layout, output in outputs.items():  # so each makes the diffusers file's output
        torch.testing.assert_close(output, outputs["diffusers"], rtol=0, atol=1e-5, msg=layout)
    # The training run folder and its lora/ folder name the file as well.
    run = tmp_path / "run"
    (run / "lora").mkdir(parents=True)
    (run / "lora" / "pytorch_lora_weights.safetensors").write_bytes(files["diffusers"].read_bytes())
    weight = "blocks.0.attn1.to_q.weight"
    assert torch.equal(loaded("i2v", lora=str(run)).transformer.state_dict()[weight],
                       loaded("i2v", lora=str(run / "lora")).transformer.state_dict()[weight])

    # Fused or kept as adapter layers (as on quantized weights): the same transformer output.
    unfused = loaded("i2v", fuse=False, lora=str(files["musubi"]), lora_strength=strength)
    assert any("lora_A" in key for key in unfused.transformer.state_dict())
    fused = transformer_output(loaded("i2v", lora=str(files["musubi"]), lora_strength=strength))
    assert (fused - transformer_output(build_tiny("wan", kind="i2v"))).abs().max() > 1e-2
    torch.testing.assert_close(transformer_output(unfused), fused, rtol=0, atol=1e-5)


def shot_request(tmp_path: Path) -> ShotRequest:
    from PIL import Image

    keyframe = tmp_path / "key.png"
    pixels = np.random.default_rng(0).integers(0, 255, (32, 32, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(keyframe)
    return ShotRequest(shot_id="s01", caption="a red kite", keyframe=keyframe, next_keyframe=None,
                       framing=Framing.medium, move=Move.static, frames=5, fps=8, width=32, height=32, seed=5,
                       runtime=CPU)


def test_wan_renders_with_a_lora_and_strength_zero_is_the_base(tmp_path):
    from cinema_cli.video.wan import WanShotOptions, WanShots

    files = write_layouts(make_adapter(build_tiny("wan", kind="i2v").transformer), tmp_path / "loras")
    request = shot_request(tmp_path)

    def shot(**options) -> np.ndarray:
        backend = WanShots(WanShotOptions(model="tiny", steps=2, guidance=1.0, **options))
        assert backend.preflight(RenderPlan(32, 32, 8, (5,), CPU)) == []
        return backend.frames(request, lambda done, total: None)

    base = shot()
    with_lora = shot(lora=str(files["diffusers"]))
    assert np.abs(with_lora - base).max() > 0.05  # the adapter changes the shot
    assert np.array_equal(shot(lora=str(files["diffusers"]), lora_strength=0.0), base)
    # A foreign layout renders the same shot (frames in [0, 1]; weights agree to 1e-5, frames to 1e-4).
    np.testing.assert_allclose(shot(lora=str(files["musubi"])), with_lora, rtol=0, atol=1e-4)


def test_holocine_lora_2_goes_into_the_low_noise_expert_only(tmp_path):
    from cinema_cli.video.holocine import HolocineOptions, HolocineShots
    from cinema_cli.video.scene import KeyframeSceneShots, SceneOptions

    base = build_tiny("wan", kind="t2v")
    files = write_layouts(make_adapter(base.transformer), tmp_path)
    weight = "blocks.1.ffn.net.2.weight"

    def experts(**options) -> tuple[torch.Tensor, torch.Tensor]:
        backend = HolocineShots(HolocineOptions(model="tiny", dit=None, **options))
        assert backend.preflight(RenderPlan(64, 64, 8, (8,), CPU)) == []
        pipe, _ = backend.pipeline(CPU)
        return pipe.transformer.state_dict()[weight], pipe.transformer_2.state_dict()[weight]

    # The clip changes with either expert's LoRA (2 steps: the first on the high-noise expert,
    # the second below the boundary on the low-noise one).
    scene = SceneRequest(scene_id="pier", location="a pier", time_of_day="dawn", description="", style="",
                         cast=(), shots=(replace(shot_request(tmp_path), frames=4, width=64, height=64),))

    def clip(**options) -> bytes:
        out = tmp_path / "clip.mp4"
        backend = HolocineShots(HolocineOptions(model="tiny", dit=None, steps=2, guidance=1.0, **options))
        backend.render_group(scene, [out], EncodeSettings(), lambda done, total: None)
        return out.read_bytes()

    stock = clip()
    assert clip(lora=str(files["diffusers"])) != stock and clip(lora_2=str(files["diffusers"])) != stock

    high, low = base.transformer.state_dict()[weight], base.transformer_2.state_dict()[weight]
    first, second = experts(lora=str(files["diffusers"]))
    assert not torch.equal(first, high) and torch.equal(second, low)
    first, second = experts(lora_2=str(files["comfyui"]), lora_2_strength=0.5)
    assert torch.equal(first, high) and not torch.equal(second, low)
    both = experts(lora=str(files["musubi"]), lora_2=str(files["diffsynth"]), lora_2_strength=0.5)
    torch.testing.assert_close(both[0], experts(lora=str(files["diffusers"]))[0], rtol=0, atol=1e-5)
    torch.testing.assert_close(both[1], second, rtol=0, atol=1e-5)

    # keyframe-scene loads its LoRA too; its tiny model (Wan2.1-like) has no second expert.
    scene = KeyframeSceneShots(SceneOptions(model="tiny", lora=str(files["diffusers"])))
    pipe, _ = scene.model.pipeline(CPU)
    stock = build_tiny("wan", kind="i2v").transformer.state_dict()[weight]
    assert not torch.equal(pipe.transformer.state_dict()[weight], stock)
    with pytest.raises(BadInput, match="lora_2 is for Wan2.2 A14B's second"):
        KeyframeSceneShots(SceneOptions(model="tiny", lora_2=str(files["diffusers"]))).preflight(
            RenderPlan(64, 64, 8, (9,), CPU))


# ---------------------------------------------------------------- what is refused


def wan_preflight(**options) -> list[str]:
    from cinema_cli.video.wan import WanShotOptions, WanShots

    return WanShots(WanShotOptions(model="tiny", **options)).preflight(RenderPlan(32, 32, 8, (5,), CPU))


def test_unknown_layouts_and_other_architectures_are_refused_by_name(tmp_path):
    from cinema_cli.runtime.lora_formats import linear_shapes, module_names

    a, b = torch.ones(RANK, 24), torch.ones(24, RANK)
    good = {"lora_unet_blocks_0_self_attn_q.lora_down.weight": a, "lora_unet_blocks_0_self_attn_q.lora_up.weight": b}
    lycoris = {f"lora_unet_blocks_{i}_self_attn_{m}.hada_w1_a": a for i in range(2) for m in "qkv"}
    cases = {
        # LoHa (LyCORIS) keys beside LoRA ones: an unknown layout, its keys named and counted
        "loha": ({**good, **lycoris}, r"LoRA layout cinema does not know: 6 of its 8 keys .*"
                 r"lora_unet_blocks_0_self_attn_q.hada_w1_a.* \(and 1 more\)"),
        "dora": ({**good, "lora_unet_blocks_0_self_attn_q.dora_scale": torch.ones(24)},
                 "does not know: 1 of its 3 keys .*dora_scale"),
        # FLUX's modules in diffusers' layout
        "flux": ({"transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight": a,
                  "transformer.single_transformer_blocks.0.attn.to_q.lora_B.weight": b},
                 "another architecture: 2 of its 2 keys name modules tiny's transformer does not have: "
                 "transformer.single_transformer_blocks.0.attn.to_q.lora_A.weight"),
        # Wan's modules, a bigger Wan's shapes
        "bigger": ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": torch.ones(RANK, 5120),
                    "diffusion_model.blocks.0.self_attn.q.lora_B.weight": torch.ones(5120, RANK)},
                   r"another architecture or size: 1 of its 1 modules do not fit tiny's layers: "
                   r"blocks.0.attn1.to_q: \[5120, 4\] x \[4, 5120\], the layer is 24 x 24"),
        "half": ({"diffusion_model.blocks.0.self_attn.q.lora_A.weight": a}, "incomplete: blocks.0.attn1.to_q has only"),
    }
    for name, (state, message) in cases.items():
        save_file({k: v.clone() for k, v in state.items()}, str(tmp_path / f"{name}.safetensors"))
        with pytest.raises(BadInput, match=message):
            wan_preflight(lora=str(tmp_path / f"{name}.safetensors"))
    (tmp_path / "junk.safetensors").write_bytes(b"not a tensor file")
    with pytest.raises(BadInput, match="lora: .*junk.safetensors is not a readable safetensors LoRA file"):
        wan_preflight(lora=str(tmp_path / "junk.safetensors"))
    with pytest.raises(BadInput, match="lora: .*nowhere.safetensors is neither a .safetensors file"):
        wan_preflight(lora=str(tmp_path / "nowhere.safetensors"))

    # Wan2.1 I2V's image projections have their original names too (checked on a model of no size).
    from diffusers import WanTransformer3DModel

    with torch.device("meta"):
        i2v = WanTransformer3DModel(num_attention_heads=2, attention_head_dim=12, in_channels=12, out_channels=4,
                                    text_dim=32, freq_dim=16, ffn_dim=32, num_layers=1, image_dim=16,
                                    added_kv_proj_dim=24)
    names = module_names(linear_shapes(i2v))
    assert names["blocks.0.cross_attn.k_img"] == "blocks.0.attn2.add_k_proj"
    assert names["blocks_0_cross_attn_v_img"] == "blocks.0.attn2.add_v_proj"
    assert names["img_emb.proj.1"] == "condition_embedder.image_embedder.ff.net.0.proj"


# ---------------------------------------------------------------- in a project


def lora_project(parent: Path, lora: Path) -> Path:
    from cinema_cli.project.create import create_project

    root = create_project(parent / "film")
    script = {"title": "Kite", "style": "flat colours", "characters": [], "scenes": [
        {"id": "beach", "location": "a beach", "time": "noon",
         "beats": [{"text": "a kite rises", "duration": 0.5}, {"text": "a kite falls", "duration": 0.5}]}]}
    (root / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False))
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config.update(resolution={"width": 64, "height": 64}, fps=8, keyframes={"backend": "sketch"},
                  video={"backend": "wan", "options": {"model": "tiny", "steps": 1, "guidance": 1.0,
                                                       "lora": str(lora)}})
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return root


def snapshot(root: Path) -> dict[str, bytes]:
    """The project's files, but the lock's (taking the lock creates the empty lock file)."""
    files = (p for p in sorted(root.rglob("*")) if p.is_file() and p != root / ".cinema" / "lock")
    return {str(p.relative_to(root)): p.read_bytes() for p in files}


def test_a_retrained_video_lora_makes_the_shots_stale_and_a_bad_one_changes_nothing(tmp_path, monkeypatch):
    """With a relative `lora:` (taken inside the project) run from another folder, where a
    file of that name is garbage: the project's file is loaded and hashed, whatever the
    working directory."""
    from cinema_cli.pipeline import DONE, Pipeline
    from cinema_cli.project.project import Project

    adapter = make_adapter(build_tiny("wan", kind="i2v").transformer)
    root = lora_project(tmp_path, Path("loras") / "musubi.safetensors")
    lora = write_layouts(adapter, root / "loras")["musubi"]
    elsewhere = tmp_path / "elsewhere"
    (elsewhere / "loras").mkdir(parents=True)
    (elsewhere / "loras" / "musubi.safetensors").write_bytes(b"not the project's lora")
    monkeypatch.chdir(elsewhere)
    first = Pipeline(Project.open(root)).run()
    assert first.rebuilt.shots == ["s01", "s02"] and first.rebuilt.film

    report = Pipeline(Project.open(root)).status()
    assert {r.shot.state for r in report.shots} == {DONE} and report.film.state == DONE
    # Retrained at the same path: the shots and the film are stale, the keyframes are not
    # (asked from a third folder, with no loras/ at all).
    write_layouts(make_adapter(build_tiny("wan", kind="i2v").transformer, seed=4), root / "loras")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    result = subprocess.run([CINEMA, "status", "--json", "-p", str(root)], cwd=tmp_path, capture_output=True,
                            text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr
    status = json.loads(result.stdout)
    assert [(s["keyframe"], s["shot"], s["stale_because"]) for s in status["shots"]] == \
        [("done", "stale", ["backend input lora changed"])] * 2
    assert status["film"] == "stale" and status["story"] == "done"

    # A LoRA for the second expert of a model that has none, a file of an unknown layout,
    # a relative path with no file in the project (named as resolved): refused before
    # anything is written.
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    before = snapshot(root)
    unknown = tmp_path / "loras" / "loha.safetensors"
    unknown.parent.mkdir()
    save_file({"lora_unet_blocks_0_self_attn_q.hada_w1_a": torch.ones(2, 24)}, str(unknown))
    missing = str(root / "loras" / "missing.safetensors")
    for options, message in (({"lora_2": str(lora)}, "has a single transformer"),
                             ({"lora": str(unknown)}, "does not know: 1 of its 1 keys .*hada_w1_a"),
                             ({"lora": "loras/missing.safetensors", "lora_2": None}, f"lora: {missing} is neither")):
        config["video"]["options"].update(options)
        (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        before["cinema.yaml"] = (root / "cinema.yaml").read_bytes()
        with pytest.raises(BadInput, match=message):
            Pipeline(Project.open(root)).run()
        assert snapshot(root) == before
