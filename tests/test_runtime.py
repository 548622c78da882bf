"""Runtime profiles, the memory preflight and pretrained loading, without a GPU: the
decisions and messages are checked on this CPU machine and with made-up free memory."""

from __future__ import annotations

import importlib.util

import pytest
import torch

from cinema_cli.errors import BackendError, BadInput
from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.runtime.memory import GiB, ModelSize, check_fits, model_size, need_bytes
from cinema_cli.runtime.profiles import Runtime, leaner_profiles, resolve_runtime
from cinema_cli.runtime.tiny import build_tiny
from cinema_cli.video.base import RenderPlan
from cinema_cli.video.wan_model import WanModel, snap_frames

# About Wan2.1 I2V 14B: its transformer, UMT5-XXL, the VAE and the CLIP image encoder.
WAN_14B = ModelSize(
    params={"transformer": 16_400_000_000, "text_encoder": 5_700_000_000, "vae": 127_000_000,
            "image_encoder": 632_000_000},
    quantizable=("transformer", "text_encoder"), hidden=5120, ffn=13824, layers=40, vae_channels=96,
)
TOKENS_480P_81 = 21 * 30 * 52  # 81 frames at 480x832: 21 latent frames of 30x52 patches


def test_snap_to_4k_plus_1():
    assert [snap_frames(n) for n in (1, 2, 4, 5, 6, 7, 8, 24, 72, 80)] == [5, 5, 5, 5, 5, 9, 9, 25, 73, 81]


def test_cpu_machine_profile():
    runtime, notices = resolve_runtime(RuntimeSettings(offload="model"), "wan")
    assert (runtime.device, runtime.dtype, runtime.offload) == ("cpu", "float32", "none")
    assert any("no CUDA GPU" in n and "animatic" in n for n in notices)
    assert any("offload: model does nothing on the CPU" in n for n in notices)
    with pytest.raises(BackendError, match="runtime.device is cuda but torch sees no CUDA GPU"):
        resolve_runtime(RuntimeSettings(device="cuda"), "wan")


@pytest.mark.skipif(importlib.util.find_spec("bitsandbytes") is not None, reason="bitsandbytes is installed")
def test_quantize_without_its_package_is_a_message():
    with pytest.raises(BackendError, match="needs the bitsandbytes package.*pip install bitsandbytes"):
        resolve_runtime(RuntimeSettings(quantize="nf4"), "wan")


def test_profile_ladder_goes_leaner():
    fast = Runtime("cuda", "bfloat16")
    leaner = [p.settings() for p in leaner_profiles(fast)]
    assert leaner[:2] == ["{offload: model}", "{offload: model, vae_tiling: true}"]
    assert leaner_profiles(Runtime("cuda", "bfloat16", "sequential", True, "nf4")) == []
    needs = [need_bytes(WAN_14B, p, TOKENS_480P_81, 480 * 832) for p in [fast, *leaner_profiles(fast)]]
    assert needs == sorted(needs, reverse=True)


def test_preflight_names_a_profile_that_fits():
    fast = Runtime("cuda", "bfloat16")
    need = need_bytes(WAN_14B, fast, TOKENS_480P_81, 480 * 832)
    assert 40 * GiB < need < 60 * GiB  # 14B + 5.7B parameters in bf16, plus activations
    check_fits(WAN_14B, fast, TOKENS_480P_81, 480 * 832, free=80 * GiB, who="wan")  # fits: no error
    with pytest.raises(BackendError, match=r"set runtime: \{offload: model") as err:
        check_fits(WAN_14B, fast, TOKENS_480P_81, 480 * 832, free=40 * GiB, who="wan")
    assert "GiB is free" in str(err.value)
    with pytest.raises(BackendError, match="even the leanest runtime profile does not fit"):
        check_fits(WAN_14B, fast, TOKENS_480P_81, 480 * 832, free=GiB // 2, who="wan")


def test_auto_video_backend_on_this_machine():
    name, notice = resolve_backend("video", "auto")
    assert name == "animatic" and "CPU previz" in notice


def test_pretrained_folder(tmp_path, monkeypatch):
    """A diffusers folder (the tiny pipeline saved): its size from configs alone, its frame
    size checked before rendering, and it loads through from_pretrained offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    tiny = build_tiny("wan", kind="i2v")
    tiny.save_pretrained(tmp_path / "wan")
    size = model_size(tmp_path / "wan")
    assert size.params == {n: sum(p.numel() for p in getattr(tiny, n).parameters())
                           for n in ("text_encoder", "transformer", "vae")}
    assert (size.hidden, size.ffn, size.layers) == (24, 32, 2)

    model = WanModel("wan", str(tmp_path / "wan"), "i2v")
    plan = RenderPlan(width=72, height=64, fps=8, frames=(9,), runtime=RuntimeSettings())
    with pytest.raises(BadInput, match="multiples of 16 pixels"):
        model.preflight(plan)
    if importlib.util.find_spec("accelerate") is None:
        with pytest.raises(BackendError, match="pip install accelerate"):
            model.pipeline(RuntimeSettings())
        return
    pipe, runtime = model.pipeline(RuntimeSettings())
    assert runtime.device == "cpu"
    for loaded, built in zip(pipe.transformer.parameters(), tiny.transformer.parameters()):
        assert torch.equal(loaded, built)
    assert pipe.tokenizer("<Ada>").input_ids == tiny.tokenizer("<Ada>").input_ids
