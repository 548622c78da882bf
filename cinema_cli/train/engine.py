"""The one place that builds the Accelerator: DDP over however many processes
`accelerate launch` / `torchrun` started (gloo on CPU, NCCL on CUDA), or one process
(`engine: fsdp` shards over the same process group, fsdp.py); and how those processes
divide a step (`layout`): data-parallel groups, each of `cp`
processes that split one sample's sequence (context parallelism)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.train.config import TrainConfig


def trackers() -> list:
    """accelerate trackers to log metrics to besides RUN/metrics.jsonl: TensorBoard when
    it is installed (not a dependency), else none."""
    from importlib.util import find_spec

    return ["tensorboard"] if find_spec("tensorboard") or find_spec("tensorboardX") else []


def precision(config: TrainConfig, cuda: bool) -> str:
    """accelerate's mixed_precision: bf16 on CUDA unless asked otherwise; fp32 on CPU
    (bf16 matmuls on a CPU are slow and their rounding hides small-loss tests)."""
    if config.precision == "auto":
        return "bf16" if cuda else "no"
    return "bf16" if config.precision == "bf16" else "no"


def build_accelerator(config: TrainConfig, run: Path | None = None):
    import torch
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    cuda = torch.cuda.is_available()
    # LoRA leaves most parameters frozen; DDP only needs to know every trainable one is used.
    ddp = DistributedDataParallelKwargs(find_unused_parameters=False)
    log_with = trackers() if run is not None else []
    return Accelerator(mixed_precision=precision(config, cuda), cpu=not cuda, kwargs_handlers=[ddp],
                       log_with=log_with or None, project_dir=run if log_with else None)


@dataclass(frozen=True)
class Layout:
    """How the launched processes share a step. Process r is in data group r // cp, which
    takes its share of the step's samples (as DDP's ranks do); the cp consecutive processes
    of a group get the same samples and split each one's tokens (Ulysses). `mesh` is the
    (data, ring, ulysses) device mesh diffusers' ContextParallelConfig reads (cp > 1)."""

    data_rank: int
    data_world: int
    cp: int = 1
    mesh: object = None


def layout(config, accelerator) -> Layout:
    """The layout of the processes `accelerator` runs, for the config's `cp` (1 for a family
    without one)."""
    cp = getattr(config, "cp", 1)
    world, rank = accelerator.num_processes, accelerator.process_index
    if world % cp:
        raise BadInput(launch_message(cp, world))
    if cp == 1:
        return Layout(rank, world)
    from torch.distributed.device_mesh import init_device_mesh

    mesh = init_device_mesh(accelerator.device.type, (world // cp, 1, cp), mesh_dim_names=("data", "ring", "ulysses"))
    return Layout(rank // cp, world // cp, cp, mesh)


def launch_message(cp: int, world: int) -> str:
    return (f"cp: {cp} splits each sample over {cp} processes, so a run needs a multiple of {cp} "
            f"(this is {world} process{'es' if world > 1 else ''}): accelerate launch --num_processes {cp} "
            f"-m cinema_cli train video ... --cp {cp} (or {2 * cp}, {3 * cp}, ... for data parallelism too)")


def make_trainable(transformer, config, targets: list[str], checkpoint=None) -> None:
    """A LoRA on `targets` (peft, in diffusers' format) or every weight (`method: full`),
    trained in fp32 over bf16 base weights; gradient checkpointing when the config asks
    (`checkpoint`: the recompute function, when the family needs its own)."""
    if config.method == "lora":
        from peft import LoraConfig  # after the base is loaded: transformers is importable then

        transformer.add_adapter(LoraConfig(r=config.lora.rank, lora_alpha=config.lora.alpha,
                                           init_lora_weights="gaussian", target_modules=targets))
        for p in transformer.parameters():
            if p.requires_grad:
                p.data = p.data.float()
    else:
        transformer.float().requires_grad_(True)
    if config.gradient_checkpointing:
        if checkpoint is None:
            transformer.enable_gradient_checkpointing()
        else:
            transformer.enable_gradient_checkpointing(gradient_checkpointing_func=checkpoint)
