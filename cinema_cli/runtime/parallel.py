"""Context parallelism for the video backends: one scene's transformer passes split over
a group of the processes torchrun started (`render --cp C`: one group of C; `render --gpus N
--cp C`: N/C groups, a 2-D mesh).

The groups are made once, at start-up, on every process together (`build_mesh`: a device
mesh (group, ring, ulysses), whose subgroups creating is collective); each process keeps
its own group (`group()`). Every process of a group loads the same pipeline;
`enable_context_parallel` gives each transformer a diffusers `ContextParallelConfig` over
the group's sub-mesh (its `_cp_plan` hooks split the tokens, the scene processors exchange
them, see attention/context_parallel). The group's leader runs the backend as usual;
before each scene or shot it sends the request to its members (`lead`), which make the
same call in lockstep (their collectives pair up with the leader's) and discard what they
make (`follow`). They never open the lock or write the project.
"""

from __future__ import annotations

import datetime
import os
import tempfile
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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


@dataclass(frozen=True)
class Group:
    """This process's context-parallel group in the run's mesh."""

    ranks: tuple[int, ...]  # global ranks, the leader first
    mesh: Any  # the group's (ring, ulysses) DeviceMesh, a slice of the run's mesh
    process_group: Any  # all of its ranks, for the leader's broadcasts

    @property
    def leader(self) -> int:
        return self.ranks[0]


_group: Group | None = None


def group() -> Group | None:
    """This process's group, once `build_mesh` made them; None outside a context-parallel run."""
    return _group


def groups_of(size: int, degree: int) -> list[tuple[int, ...]]:
    """The context-parallel groups of a run of `size` processes: consecutive ranks, so a
    group stays on one node where a node's GPUs are consecutive ranks (torchrun's order)."""
    if degree < 1 or size % degree:
        raise BadInput(f"context parallelism over {degree} processes splits the {size} processes into groups of "
                       f"{degree}; choose a degree that divides {size}")
    return [tuple(range(start, start + degree)) for start in range(0, size, degree)]


def build_mesh(cp: ContextParallelSettings, device: str) -> Group:
    """On every process at once (creating process subgroups is collective): the run's
    (group, ring, ulysses) mesh; returns and keeps this process's group."""
    global _group
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh

    size, rank = dist.get_world_size(), dist.get_rank()
    config = diffusers_config(cp)
    ranks = next(g for g in groups_of(size, cp.degree) if rank in g)
    mesh = init_device_mesh(device, (size // cp.degree, *config.mesh_shape),
                            mesh_dim_names=("group", *config.mesh_dim_names))
    sub = mesh[config.mesh_dim_names]
    # diffusers flattens (ring, ulysses) when it sets up; flattening makes groups, so here,
    # together, once: later calls (a model loaded by one group only) find it made.
    flat = sub._flatten()
    _group = Group(ranks, sub, flat.get_group())
    return _group


def check_launch(cp: ContextParallelSettings, who: str) -> None:
    """A degree above 1 needs a mesh with groups of that size, or exactly that many processes."""
    if cp.degree == 1:
        return
    _, size = world()
    if _group is not None and len(_group.ranks) == cp.degree:
        return
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


def mesh_device(device_setting: str) -> str:
    """Where the context-parallel exchange runs: runtime.device, auto being CUDA when there is one."""
    import torch

    return "cpu" if device_setting == "cpu" or not torch.cuda.is_available() else "cuda"


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
    if mesh is not None:  # training's data-parallel x context-parallel mesh
        rank, size = dist.get_rank(), dist.get_world_size()
    elif _group is not None:  # this process's group of the run's mesh
        mesh, rank, size = _group.mesh, _group.ranks.index(dist.get_rank()), len(_group.ranks)
    else:  # every process one group (made here: all of them load the model together)
        mesh = init_device_mesh(device, config.mesh_shape, mesh_dim_names=config.mesh_dim_names)
        rank, size = dist.get_rank(), dist.get_world_size()
    parallel.setup(rank, size, _device(device), mesh=mesh)
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


def leads() -> bool:
    """True on the leader of a context-parallel group (whose members follow its calls)."""
    import torch.distributed as dist

    return _group is not None and len(_group.ranks) > 1 and _group.leader == dist.get_rank()


def _broadcast(message: list) -> None:
    import torch.distributed as dist

    dist.broadcast_object_list(message, src=_group.leader, group=_group.process_group)


def lead(cp: ContextParallelSettings, call: str, request) -> None:
    """On a group's leader: send the next backend call to its members."""
    if cp.degree > 1 and leads():
        _broadcast([(call, request)])


def release() -> None:
    """On a group's leader: tell its members the render is over (also when it failed)."""
    if leads():
        _broadcast([None])


def follow(backend, encode) -> int:
    """On a group's members: make each call the leader sends, into a scratch folder, until
    released. Returns the number of calls made."""
    calls = 0
    with tempfile.TemporaryDirectory(prefix="cinema-cp-") as scratch:
        while True:
            message = [None]
            _broadcast(message)
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
