"""One process of test_context_parallel's 2-process gloo run (torchrun). Every check runs the
same inputs on every process: the single-process answer is computed locally, then the
context-parallel one from this process's slice, gathered, and compared (float32, atol 1e-5).
Rank 0 writes the maximum differences to the JSON file named by argv[1]. Then both run
`cinema render --cp 2 --json -p argv[2]` as torchrun's `-m cinema_cli render` would (rank 0
prints the report; the test compares its shots with a one-process render)."""

from __future__ import annotations

import copy
import json
import sys

import torch
import torch.distributed as dist

from cinema_cli.attention import context_parallel
from cinema_cli.attention.layout import PromptLayout, ShotLayout
from cinema_cli.attention.processors import SceneAttention, ShotCrossAttnProcessor, ShotSelfAttnProcessor, \
    install_scene_attention
from cinema_cli.project.schema import ContextParallelSettings
from cinema_cli.runtime.parallel import diffusers_config, enable_context_parallel
from cinema_cli.runtime.tiny import build_tiny

ATOL = 1e-5


def parallel(mode: str, uneven: bool):
    """A set-up diffusers ParallelConfig over the 2 processes (mesh on the CPU)."""
    from diffusers import ContextParallelConfig
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    degree = {"ulysses_degree": 2} if mode == "ulysses" else {"ring_degree": 2}
    anything = {f"{mode}_anything": True} if uneven else {}
    config = ParallelConfig(context_parallel_config=ContextParallelConfig(**degree, **anything))
    cp = config.context_parallel_config
    mesh = init_device_mesh("cpu", cp.mesh_shape, mesh_dim_names=cp.mesh_dim_names)
    config.setup(dist.get_rank(), 2, torch.device("cpu"), mesh=mesh)
    return config


def gather(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """The slices of all processes, in rank order (any sizes: gloo's all_gather wants equal ones)."""
    parts = [None, None]
    dist.all_gather_object(parts, x.detach())
    return torch.cat(parts, dim=dim)


def mine(x: torch.Tensor, uneven: bool, dim: int = 1) -> torch.Tensor:
    parts = x.tensor_split(2, dim=dim) if uneven else x.chunk(2, dim=dim)
    return parts[dist.get_rank()]


def processors_check(attn, mode: str, uneven: bool, results: dict) -> None:
    """Both scene processors on one tiny Wan attention module; uneven shots cut by the split."""
    torch.manual_seed(0)
    width = attn.to_q.in_features
    # 3, 2 and 4 (or 5) latent frames of 3 tokens: 27 tokens split 14/13 or 30 split 15/15,
    # both cutting through shot 1; HoloCine's own-summary-again pattern on the uneven one.
    frames = [3, 2, 4] if uneven else [3, 2, 5]
    shots = ShotLayout.from_frames(frames, 3, own_summary_again=uneven)
    prompts = PromptLayout.from_lengths(4, [3, 2, 5])
    hidden = torch.randn(1, shots.length, width)
    text = torch.randn(1, prompts.length, width)
    head_dim = width // attn.heads
    angles = torch.randn(1, shots.length, 1, head_dim)
    rotary = (angles.cos(), angles.sin())
    scene = SceneAttention(shots=shots, prompts=prompts, kernel="sdpa")
    self_attn, cross_attn = ShotSelfAttnProcessor(scene), ShotCrossAttnProcessor(scene)
    grad = mode == "ulysses"  # ring runs inference only
    hidden_leaf = hidden.clone().requires_grad_(grad)
    local = mine(hidden, uneven).clone().requires_grad_(grad)
    local_rotary = tuple(mine(r, uneven) for r in rotary)
    with torch.set_grad_enabled(grad):
        expected_self = self_attn(attn, hidden_leaf, None, None, rotary)
        expected_cross = cross_attn(attn, hidden, text, None, None)
        self_attn._parallel_config = cross_attn._parallel_config = parallel(mode, uneven)
        got_self = self_attn(attn, local, None, None, local_rotary)
        got_cross = cross_attn(attn, mine(hidden, uneven), text, None, None)
    key = f"{mode}-{'uneven' if uneven else 'even'}"
    results[f"self {key}"] = (gather(got_self) - expected_self).abs().max().item()
    results[f"cross {key}"] = (gather(got_cross) - expected_cross).abs().max().item()
    if mode == "ulysses":  # the all-to-all's backward: the input gradients of a weighted sum
        weights = torch.randn(expected_self.shape, generator=torch.Generator().manual_seed(1))
        (expected_self * weights).sum().backward()
        (got_self * mine(weights, uneven)).sum().backward()
        results[f"grad {key}"] = (gather(local.grad) - hidden_leaf.grad).abs().max().item()
        return
    with torch.enable_grad():
        try:
            self_attn(attn, local.requires_grad_(), None, None, local_rotary)
            results["ring refuses backward"] = False
        except RuntimeError:
            results["ring refuses backward"] = True
    if uneven:
        return
    # Sabotage: a ring whose processes keep their own K/V slice (equal sizes) must not match.
    real = context_parallel._exchange
    context_parallel._exchange = lambda kv, split, step: (kv, [])
    try:
        with torch.no_grad():
            broken = gather(self_attn(attn, mine(hidden, uneven), None, None, local_rotary))
    finally:
        context_parallel._exchange = real
    results[f"no-exchange {key}"] = (broken - expected_self).abs().max().item()


def transformer_check(mode: str, sparse: bool, results: dict) -> None:
    """A whole tiny Wan T2V transformer forward with CP 2 against CP 1: 5 latent frames of
    3x4 tokens (60: the split falls inside shot 1), three shots, window prompts."""
    model = build_tiny("wan", kind="t2v").transformer
    scene = SceneAttention(shots=ShotLayout.from_frames([2, 1, 2], 12, own_summary_again=True),
                           prompts=PromptLayout.from_lengths(3, [3, 2, 4]), kernel="sdpa", sparse_self=sparse)
    install_scene_attention(model, scene)
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(1, model.config.in_channels, 5, 6, 8, generator=g)
    text = torch.randn(1, 12, model.config.text_dim, generator=g)
    t = torch.tensor([700.0])
    with torch.no_grad():
        expected = model(hidden, t, text, return_dict=False)[0]
        split_model = copy.deepcopy(model)
        install_scene_attention(split_model, scene)
        enable_context_parallel(split_model, diffusers_config(ContextParallelSettings(degree=2, mode=mode)), "cpu")
        got = split_model(hidden, t, text, return_dict=False)[0]
    results[f"transformer {mode} {'sparse' if sparse else 'full'}"] = (got - expected).abs().max().item()


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    attn = build_tiny("wan", kind="t2v").transformer.blocks[0].attn1
    results: dict = {}
    for mode in ("ulysses", "ring"):
        for uneven in (False, True):
            processors_check(attn, mode, uneven, results)
    # Whole models with the ring (Ulysses: the render below, whose shots must match byte for byte).
    transformer_check("ring", True, results)
    transformer_check("ring", False, results)  # dense self-attention (the full variant) through the ring
    if dist.get_rank() == 0:
        with open(sys.argv[1], "w") as out:
            json.dump(results, out)
    from cinema_cli.cli.app import app

    try:
        app(["render", "--cp", "2", "--json", "-p", sys.argv[2]])
    except SystemExit as done:
        if done.code:
            raise
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
