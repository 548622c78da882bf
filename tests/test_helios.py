"""The `helios` causal shot backend and CAMR, on the tiny Helios preset (CPU, offline).

- a film grows shot by shot: valid MP4s, the same latents for the same seed and past,
  the history never written by `render_next`, a continue keeps the film's newest frame,
  a cut forces none;
- parity: our chunk loop with recency routing is diffusers' HeliosPipeline's (same
  history, same noise), and the chunk really reads its history (a transformer returning
  zeros fails);
- CAMR: on a place, unrelated shots, then a return to the place, the place's frames are
  routed into the history slots where recency routes the newest ones;
- bad options and missing weights are clear errors.
"""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cinema_cli.assemble.probe import probe
from cinema_cli.project.schema import Framing, Move, RuntimeSettings
from cinema_cli.video.base import EncodeSettings, ShotRequest
from cinema_cli.video.causal import LatentHistory
from cinema_cli.video.helios import HeliosOptions, HeliosShots

pytestmark = pytest.mark.usefixtures("offline")

W = H = 64
TINY = {"model": "tiny", "steps": 2, "guidance": 1.0, "history": [4, 2, 1], "chunk": 2}
QUIET = lambda done, total: None  # noqa: E731


def request(tmp_path: Path, shot_id: str, keyframe: Path | None = None, **changes) -> ShotRequest:
    base = ShotRequest(
        shot_id=shot_id, caption=f"<Ada> walks, shot {shot_id}", keyframe=keyframe or tmp_path / "absent.png",
        next_keyframe=None, framing=Framing.wide, move=Move.static, frames=10, fps=8, width=W, height=H,
        seed=5, runtime=RuntimeSettings(device="cpu"))
    return replace(base, **changes)


def image(path: Path, colour=None, seed: int = 0) -> Path:
    pixels = (np.full((H, W, 3), colour, np.uint8) if colour is not None
              else np.random.default_rng(seed).integers(0, 256, (H, W, 3), dtype=np.uint8))
    Image.fromarray(pixels).save(path)
    return path


def files(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def backend():
    return HeliosShots(HeliosOptions.model_validate({**TINY, "memory": "recency"}))


# ---------------------------------------------------------------- a film, shot by shot


def test_a_film_grows_causally_and_the_history_is_only_read(backend, tmp_path):
    history = LatentHistory(tmp_path / "history")
    first = request(tmp_path, "s1", image(tmp_path / "k1.png", seed=1))
    routing, latents = backend.render_next(first, True, history, tmp_path / "s1.mp4", EncodeSettings(), QUIET)
    info = probe(tmp_path / "s1.mp4")
    assert (info.frames, info.width, info.height) == (10, W, H), info
    assert latents.shape == (4, 4, 8, 8), "two chunks of two latent frames, [C, T, h, w]"
    assert [(s.shot_id, s.index) for s in routing.slots] == [("s1", -1)], "a first shot sees only its keyframe"
    history.append("s1", latents)

    before = files(history.folder)
    second = request(tmp_path, "s2", seed=6, frames=5)
    after_continue, kept = backend.render_next(second, False, history,
                                               tmp_path / "s2.mp4", EncodeSettings(), QUIET)
    assert files(history.folder) == before, "render_next wrote to the history"
    assert after_continue.notes["forced"] == [["s1", 3]], after_continue.to_json()
    assert ("s1", 3) in [(s.shot_id, s.index) for s in after_continue.slots]
    again, same = backend.render_next(second, False, history, tmp_path / "s2b.mp4",
                                      EncodeSettings(), QUIET)
    assert np.array_equal(kept.numpy(), same.numpy()), "same seed and past: same shot"
    assert (tmp_path / "s2.mp4").read_bytes() == (tmp_path / "s2b.mp4").read_bytes()

    after_cut, moved = backend.render_next(second, True, history, tmp_path / "s2c.mp4",
                                           EncodeSettings(), QUIET)
    assert after_cut.notes["forced"] == [], "a cut forces no past frame"
    assert not np.array_equal(kept.numpy(), moved.numpy()), "the past is read differently across a cut"
    assert files(history.folder) == before


# ---------------------------------------------------------------- parity with diffusers


def test_our_chunk_loop_is_the_pipelines(tmp_path):
    """Keyframe, two chunks, recency, classifier-free guidance: our shot's latents equal
    HeliosPipeline's for the same keyframe latents and seed (the second chunk continues
    from a history of [zeros, keyframe, first chunk], routed by us)."""
    import torch

    from cinema_cli.video.helios_chunks import denoise_chunk
    from cinema_cli.video.helios_shot import KEYFRAME, ShotMaker
    from cinema_cli.video.prompting import shot_prompt

    options = HeliosOptions.model_validate({**TINY, "memory": "recency", "guidance": 3.0})
    pipe, _ = HeliosShots(options).pipeline(RuntimeSettings(device="cpu"))
    shot = request(tmp_path, "s1", image(tmp_path / "k.png", seed=2), seed=9)
    maker = ShotMaker(pipe, options, shot, True, LatentHistory(tmp_path / "none"), "helios")
    maker.next_chunk(lambda i: None)
    maker.next_chunk(lambda i: None)
    ours = maker.shot_latents()

    stock = pipe(prompt=shot_prompt(shot.caption, shot.framing, shot.move), height=H, width=W, num_frames=10,
                 num_inference_steps=2, guidance_scale=3.0, generator=torch.Generator().manual_seed(9),
                 image_latents=maker.prefix, fake_image_latents=maker.pool.own[KEYFRAME][None, :, None],
                 add_noise_to_image_latents=False, history_sizes=[4, 2, 1], num_latent_frames_per_chunk=2,
                 output_type="latent").frames[0, :, 1:]  # after the keyframe's latent
    difference = (ours - stock).abs().max().item()
    assert difference < 1e-5, f"our chunks differ from HeliosPipeline's by {difference}"

    # The chunk reads its history: other slots, another chunk (a transformer returning zeros fails here).
    noise = torch.randn(1, 4, 2, 8, 8, generator=torch.Generator().manual_seed(0))
    slots = torch.zeros(1, 4, 7, 8, 8)
    plain = denoise_chunk(pipe, maker.cond, maker.prefix, slots, (4, 2, 1), noise, 2)
    remembered = denoise_chunk(pipe, maker.cond, maker.prefix, slots + ours[None, :, :1], (4, 2, 1), noise, 2)
    change = (plain - remembered).abs().max().item()
    assert change > 1e-3, f"the history changed the chunk by only {change}"


# ---------------------------------------------------------------- CAMR


def attentive_to_content(pipe) -> None:
    """Make the first layer's self-attention compare latent content: no timestep modulation,
    q = k = the normalised token with a large gain, so q.k is high for matching content."""
    import torch

    block = pipe.transformer.blocks[0]
    with torch.no_grad():
        block.scale_shift_table.zero_()
        pipe.transformer.condition_embedder.time_proj.weight.zero_()
        pipe.transformer.condition_embedder.time_proj.bias.zero_()
        for projection in (block.attn1.to_q, block.attn1.to_k):
            projection.weight.copy_(torch.eye(projection.weight.shape[0]))
            projection.bias.zero_()
        block.attn1.norm_q.weight.fill_(3.0)
        block.attn1.norm_k.weight.fill_(3.0)


def test_camr_routes_a_returning_place_where_recency_does_not(tmp_path):
    import torch

    small = {**TINY, "history": [2, 1, 1]}  # four slots for nine candidates
    camr = HeliosShots(HeliosOptions.model_validate({**small, "memory": "camr", "probe_layers": [0]}))
    pipe, _ = camr.pipeline(RuntimeSettings(device="cpu"))
    attentive_to_content(pipe)
    recency = HeliosShots(HeliosOptions.model_validate({**small, "memory": "recency"}))
    recency._loaded = camr._loaded  # the same model

    from cinema_cli.video.helios_chunks import latent_stats

    def latent_of(path: Path, frames: int = 2) -> torch.Tensor:
        """A shot that shows `path` throughout: its VAE latent, repeated."""
        mean, inverse_std = latent_stats(pipe, "cpu")
        pixels = pipe.video_processor.preprocess(Image.open(path), height=H, width=W)
        with torch.no_grad():
            latent = pipe.prepare_image_latents(pixels, mean, inverse_std, 2,
                                                generator=torch.Generator().manual_seed(0))[0]
        return latent[0].repeat(1, frames, 1, 1)

    history = LatentHistory(tmp_path / "history")
    place = image(tmp_path / "bank.png", colour=(200, 40, 40))
    history.append("bank", latent_of(place))
    for i, colour in enumerate([(30, 200, 60), (20, 40, 220), (30, 200, 220)]):
        history.append(f"elsewhere{i}", latent_of(image(tmp_path / f"e{i}.png", colour=colour)))
    back = request(tmp_path, "return", place, frames=5)

    routed, _ = camr.render_next(back, True, history, tmp_path / "camr.mp4", EncodeSettings(), QUIET)
    newest, _ = recency.render_next(back, True, history, tmp_path / "recency.mp4", EncodeSettings(), QUIET)
    scores = {f"{s.shot_id}[{s.index}]": s.score for s in routed.slots}
    shown = f"CAMR slots and scores: {scores}; recency slots: {[(s.shot_id, s.index) for s in newest.slots]}"
    assert {("bank", 0), ("bank", 1)} <= {(s.shot_id, s.index) for s in routed.slots}, shown
    assert not any(s.shot_id == "bank" for s in newest.slots), shown
    assert len(routed.slots) == len(newest.slots) == 4, "the budget bounds both"
    others = [s.score for s in routed.slots if s.shot_id != "bank"]
    assert min(scores["bank[0]"], scores["bank[1]"]) > 1.2 * max(others), shown

    # Across a continue the film's newest frame stays, however little it is attended.
    continued, _ = camr.render_next(back, False, history, tmp_path / "camr2.mp4", EncodeSettings(), QUIET)
    kept = [(s.shot_id, s.index) for s in continued.slots]
    assert kept == [("bank", 0), ("bank", 1), ("elsewhere2", 1), ("return", -1)], continued.to_json()


# ---------------------------------------------------------------- bad input


@pytest.mark.parametrize("options,field", [
    ({"memory": "lru"}, "memory"), ({"history": [4, 2, 0]}, "history"), ({"probe_layers": []}, "probe_layers"),
    ({"chunk": 0}, "chunk"), ({"steps": 0}, "steps"), ({"probe_group": 0}, "probe_group"),
])
def test_bad_options_are_refused(options, field):
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match=field):
        HeliosOptions.model_validate({**TINY, **options})


def test_preflight_names_what_is_wrong(tmp_path, monkeypatch):
    import huggingface_hub.constants

    from cinema_cli.errors import BackendError, BadInput
    from cinema_cli.video.base import RenderPlan

    plan = RenderPlan(width=W, height=H, fps=8, frames=(5,), runtime=RuntimeSettings(device="cpu"))
    deep = HeliosShots(HeliosOptions.model_validate({**TINY, "probe_layers": [0, 5]}))
    with pytest.raises(BadInput, match=r"probe_layers \[0, 5\] must be below 2"):
        deep.preflight(plan)
    with pytest.raises(BadInput, match="multiples of 16"):
        HeliosShots(HeliosOptions.model_validate(TINY)).preflight(replace(plan, width=72))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))
    real = HeliosShots(HeliosOptions())
    assert real.weights(real.options) == ["BestWishYsh/Helios-Base"]
    with pytest.raises(BackendError, match="huggingface-cli download BestWishYsh/Helios-Base"):
        real.preflight(plan)


def test_a_bad_option_in_cinema_yaml_exits_2(tmp_path):
    import yaml
    from typer.testing import CliRunner

    from cinema_cli.cli.app import app

    runner = CliRunner()
    root = tmp_path / "film"
    assert runner.invoke(app, ["new", str(root)]).exit_code == 0
    config = yaml.safe_load((root / "cinema.yaml").read_text())
    config["video"] = {"backend": "helios", "options": {"model": "tiny", "memory": "lru"}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    before = files(root)
    result = runner.invoke(app, ["status", "-p", str(root)])
    assert result.exit_code == 2, result.output
    assert "video.options.memory" in result.stderr and "Traceback" not in result.output, result.stderr
    assert files(root) == before


# ---------------------------------------------------------------- the policies


def test_policies_bound_the_history_and_full_grows():
    from cinema_cli.video.causal import FrameRef
    from cinema_cli.video.helios_memory import choose

    past = [FrameRef(f"s{i // 4}", i % 4) for i in range(40)]
    scores = {ref: float(i % 7) for i, ref in enumerate(past)}
    forced = [past[-1]]
    for policy in ("camr", "recency"):
        chosen = choose(policy, past, 7, forced, scores)
        assert len(chosen) == 7 and past[-1] in chosen, (policy, chosen)
        assert chosen == sorted(chosen, key=past.index), "handed to the model oldest first"
    assert choose("recency", past, 7, forced) == past[-7:]
    best = choose("camr", past, 7, forced, scores)
    # The five best, the newest of the next best, and the forced newest frame, in film order.
    assert [scores[r] for r in best] == [6.0, 6.0, 6.0, 6.0, 5.0, 6.0, 4.0]
    assert choose("full", past, 7, forced) == past, "full: the whole film"
