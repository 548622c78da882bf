"""Context parallelism for the video backends: one scene's transformer passes split over
the processes torchrun started (`torchrun --nproc_per_node N -m cinema_cli render --cp N`).

Every process loads the same pipeline; `enable_context_parallel` gives each transformer a
diffusers `ContextParallelConfig` (its `_cp_plan` hooks split the tokens, the scene
processors exchange them, see attention/context_parallel). Rank 0 runs the render as
usual and owns the project; before each scene or shot it sends the request to the other
ranks (`lead`), which make the same call in lockstep (their collectives pair up with rank
0's) and discard what they make (`follow`). They never open the lock or write the project.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.project.schema import ContextParallelSettings

# A follower waits in a broadcast while rank 0 plans keyframes or encodes; that may be long.
WAIT = datetime.timedelta(hours=24)


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count()


def world() -> tuple[int, int]:
    """(rank, world size) of this process as torchrun set them; (0, 1) when not launched so."""
    return int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1))


def check_launch(cp: ContextParallelSettings, who: str) -> None:
    """A degree above 1 needs exactly that many processes from torchrun."""
    if cp.degree == 1:
        return
    _, size = world()
    if size != cp.degree:
        raise BadInput(
            f"{who}: runtime.cp.degree is {cp.degree}, so it runs as {cp.degree} processes: "
            f"torchrun --nproc_per_node {cp.degree} -m cinema_cli render --cp {cp.degree} "
            f"(this is {size} process{'es' if size > 1 else ''})"
        )


def init_group(device: str) -> None:
    """The default process group from torchrun's environment (once): NCCL for CUDA tensors,
    gloo for the CPU ones (the objects broadcast to followers, the CPU path)."""
    import torch
    import torch.distributed as dist

    if dist.is_initialized():
        return
    if device == "cuda":
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", 0)))
        dist.init_process_group("cpu:gloo,cuda:nccl", timeout=WAIT)
    else:
        dist.init_process_group("gloo", timeout=WAIT)


def diffusers_config(cp: ContextParallelSettings):
    """diffusers' ContextParallelConfig for the settings, with the even split: the token
    count must divide by the degree (`check_tokens`). (diffusers' uneven `*_anything` split
    gathers with an uneven all_gather, which gloo refuses; the scene processors handle it.)"""
    from diffusers import ContextParallelConfig

    if cp.mode == "ulysses":
        return ContextParallelConfig(ulysses_degree=cp.degree)
    return ContextParallelConfig(ring_degree=cp.degree)


def possible_degrees(cp: ContextParallelSettings, tokens_per_frame: int, heads: int | None,
                     gpus: int) -> tuple[int, ...]:
    """The degrees up to `gpus` this model and resolution can be split over (`check_tokens`)."""
    return tuple(d for d in range(2, gpus + 1) if not tokens_per_frame % d
                 and (cp.mode == "ring" or heads is None or not heads % d))


def check_tokens(cp: ContextParallelSettings, tokens_per_frame: int, heads: int | None, who: str) -> None:
    """Before loading: the frames split evenly (every latent frame's tokens divide by the
    degree, so every clip's do), and Ulysses' heads divide by it."""
    if cp.degree == 1:
        return
    if tokens_per_frame % cp.degree:
        raise BadInput(f"{who}: runtime.cp.degree {cp.degree} splits the video tokens evenly, and this resolution "
                       f"makes {tokens_per_frame} tokens per latent frame; choose a degree dividing it, or a "
                       "resolution whose (width/16)x(height/16) does")
    if cp.mode == "ulysses" and heads is not None and heads % cp.degree:
        raise BadInput(f"{who}: Ulysses context parallelism over {cp.degree} processes needs the model's "
                       f"{heads} attention heads to divide by {cp.degree}; use runtime.cp.mode: ring")


def enable_context_parallel(transformer, config, device: str, mesh=None) -> None:
    """What diffusers' `ModelMixin.enable_parallelism` does, with the mesh on `device`:
    record the config, give it to every attention processor, hook the model by its
    `_cp_plan`. (enable_parallelism itself picks the device as rank % accelerator count,
    which divides by zero on a CPU-only torch; this is the same on CUDA and runs on the CPU.)
    `mesh`: a device mesh with "ring" and "ulysses" dimensions among others (training's
    data-parallel x context-parallel one); default, one of the whole world."""
    import torch.distributed as dist
    from diffusers.hooks.context_parallel import apply_context_parallel
    from diffusers.models._modeling_parallel import ParallelConfig
    from torch.distributed.device_mesh import init_device_mesh

    if transformer._parallel_config is not None:
        raise RuntimeError("context parallelism is already enabled on this transformer")
    # diffusers' context-parallel gather calls a torch collective that torch deprecates: not the user's concern.
    warnings.filterwarnings("ignore", category=FutureWarning, module="diffusers.hooks.context_parallel")
    parallel = ParallelConfig(context_parallel_config=config)
    if mesh is None:
        mesh = init_device_mesh(device, config.mesh_shape, mesh_dim_names=config.mesh_dim_names)
    rank = dist.get_rank()
    parallel.setup(rank, dist.get_world_size(), _device(device), mesh=mesh)
    transformer._parallel_config = parallel
    for processor in transformer.attn_processors.values():
        if hasattr(processor, "_parallel_config"):
            processor._parallel_config = parallel
    apply_context_parallel(transformer, config, transformer._cp_plan)


def _device(device: str):
    import torch

    return torch.device("cuda", torch.cuda.current_device()) if device == "cuda" else torch.device("cpu")


def parallelize(pipe, cp: ContextParallelSettings, device: str, who: str) -> None:
    """Context parallelism on the transformers of a freshly loaded Wan pipeline (degree > 1).
    A transformer without the scene processors (a plain clip) gets them with no scene set:
    they run its dense self-attention through the same exchange."""
    if cp.degree == 1:
        return
    from cinema_cli.attention.processors import SceneAttention, ShotSelfAttnProcessor, install_scene_attention

    check_launch(cp, who)
    init_group(device)
    for name in ("transformer", "transformer_2"):
        transformer = getattr(pipe, name, None)
        if transformer is None:
            continue
        if not any(isinstance(p, ShotSelfAttnProcessor) for p in transformer.attn_processors.values()):
            install_scene_attention(transformer, SceneAttention())
        enable_context_parallel(transformer, diffusers_config(cp), device)


# ---------------------------------------------------------------- rank 0 leads, the others follow


def lead(cp: ContextParallelSettings, call: str, request) -> None:
    """On rank 0 of a context-parallel render: send the next backend call to the followers."""
    import torch.distributed as dist

    if cp.degree > 1 and world()[0] == 0 and dist.is_initialized():
        dist.broadcast_object_list([(call, request)], src=0)


def release() -> None:
    """On rank 0: tell the followers the render is over (also when it failed)."""
    import torch.distributed as dist

    if world()[0] == 0 and dist.is_initialized():
        dist.broadcast_object_list([None], src=0)


def follow(backend, encode) -> int:
    """On ranks above 0: make each call rank 0 sends, into a scratch folder, until released.
    Returns the number of calls made."""
    import torch.distributed as dist

    calls = 0
    with tempfile.TemporaryDirectory(prefix="cinema-cp-") as scratch:
        while True:
            message = [None]
            dist.broadcast_object_list(message, src=0)
            if message[0] is None:
                return calls
            call, request = message[0]
            _make(backend, call, request, Path(scratch), encode)
            calls += 1


def _make(backend, call: str, request, scratch: Path, encode) -> None:
    quiet: Callable[[int, int], None] = lambda step, total: None  # noqa: E731
    if call == "render_group":
        outs = [scratch / f"{i}.mp4" for i in range(len(request.shots))]
        backend.render_group(request, outs, encode, quiet)
    else:
        backend.render(request, scratch / "0.mp4", encode, quiet)
