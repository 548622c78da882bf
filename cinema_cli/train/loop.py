"""The training loop, shared by every model family.

A family (keyframes.py) builds the model, computes one process's share of a step's loss,
and saves weights in its diffusers format; the loop owns the rest: the Accelerator (DDP
over the launched processes, or FSDP2 sharding with `engine: fsdp`, fsdp.py), AdamW, the
staged warmup + cosine schedule, gradient clipping, checkpoints, exact resume, metrics and
progress.

Exact resume: which sequences and which noise a step uses depend only on (seed, step),
and the checkpoint holds the trainable weights, AdamW's moments and the scheduler, so a
resumed run computes the same losses as one never stopped.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

from cinema_cli.errors import BadInput
from cinema_cli.train import fsdp
from cinema_cli.train import run as run_folder
from cinema_cli.train.config import TrainConfig
from cinema_cli.train.engine import Layout, build_accelerator, layout


class Family(Protocol):
    name: str
    config: TrainConfig

    def build(self, device): ...
    def loss(self, model, step: int, rank: int, world: int): ...
    # `state`: the full weights of a sharded model (engine: fsdp), gathered by the loop.
    def save_weights(self, model, folder: Path, state: dict | None = None) -> None: ...
    # With `validation:` set: draw the held-out sequences, write RUN/validation/, return the errors.
    def validate(self, model, run: Path, step: int) -> dict[str, float]: ...
    # With `cp` above 1 (a family that has it): context parallelism on the built model.
    def parallelize(self, model, groups) -> None: ...
    # With `engine: fsdp` (a family that has it): (module, its blocks) pairs to shard.
    def shard_units(self, model) -> list: ...


def lr_factor(config: TrainConfig, step: int) -> float:
    """Linear warmup at the start of every context stage, times one cosine over the run."""
    step = min(step, config.steps - 1)
    _, first = config.stage(step)
    warmup = config.optimizer.warmup_steps
    warm = min(1.0, (step - first + 1) / warmup) if warmup else 1.0
    floor = config.optimizer.min_lr_ratio
    return warm * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * step / config.steps)))


def train(family: Family, run: Path, *, resume: bool, on_step: Callable[[dict], None] = lambda record: None) -> dict:
    """Train to the end of the last stage (from the last checkpoint when resuming).
    Returns a summary; rank 0 writes the run folder."""
    import torch

    config = family.config
    accelerator = build_accelerator(config, run)
    groups = layout(config, accelerator)
    world, rank = groups.data_world, groups.data_rank
    if config.batch_size % world:
        what = f"{world} data-parallel groups of {groups.cp} processes" if groups.cp > 1 else f"{world} processes"
        raise BadInput(f"batch_size {config.batch_size} does not split over {what}")
    torch.manual_seed(config.seed)  # the adapter's initial weights: the same on every process
    model = family.build(accelerator.device)
    if groups.cp > 1:
        family.parallelize(model, groups)
    sharded = fsdp.wanted(config, accelerator.num_processes)
    if sharded:
        fsdp.shard(family.shard_units(model), accelerator, accelerator.mixed_precision == "bf16")
    params = [p for p in model.parameters() if p.requires_grad]  # after sharding: the shards
    o = config.optimizer
    optimizer = torch.optim.AdamW(params, lr=o.lr, betas=o.betas, weight_decay=o.weight_decay)
    # A family's config may bring its own schedule (the video recipes: warmup or constant).
    factor = getattr(config, "lr_factor", None) or (lambda step: lr_factor(config, step))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    first = 0
    checkpoint = run_folder.latest_checkpoint(run) if resume else None
    if checkpoint is not None:
        first = _load_checkpoint(checkpoint, model, optimizer, scheduler, sharded, accelerator.is_main_process)
    if accelerator.is_main_process:
        run_folder.truncate_metrics(run, first)
    if sharded:
        # accelerate refuses DTensor parameters under DDP; evaluation_mode gives the model
        # only the autocast prepare() gives DDP's, and the optimizer needs nothing of it.
        model = accelerator.prepare_model(model, evaluation_mode=True)
    else:
        # The scheduler stays outside prepare(): accelerate would step it once per process.
        model, optimizer = accelerator.prepare(model, optimizer)
    metrics = (run / "metrics.jsonl").open("a") if accelerator.is_main_process else None
    if accelerator.log_with:
        accelerator.init_trackers("tensorboard")
    validation = getattr(config, "validation", None)
    losses = []
    done = first
    try:
        for step in range(first, config.steps):
            started = time.perf_counter()
            loss = family.loss(model, step, rank, world)
            # Every process of a context-parallel group computes the whole sample's loss, but
            # its backward reaches only what its own tokens touched: the sample's gradient is
            # the group's sum. DDP averages over all processes, so scaling by cp makes that
            # average the mean of the groups' whole gradients, exactly as without cp.
            accelerator.backward(loss * groups.cp)
            clip = fsdp.clip_grad_norm_ if sharded else accelerator.clip_grad_norm_
            grad_norm = float(clip(params, o.grad_clip))  # before clipping
            lr = scheduler.get_last_lr()[0]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            mean = accelerator.reduce(loss.detach(), "mean").item()
            losses.append(mean)
            done = step + 1
            if accelerator.is_main_process:
                seconds = time.perf_counter() - started
                record = {"step": done, "loss": mean, "lr": lr, "grad_norm": grad_norm,
                          "context": config.context[config.stage(step)[0]],
                          "samples_per_s": config.batch_size / seconds, "seconds": seconds}
                if validation is not None and done % validation.every == 0:
                    with accelerator.autocast():
                        errors = family.validate(accelerator.unwrap_model(model), run, done)
                    record.update({f"validation_{name}_mse": value for name, value in errors.items()})
                accelerator.log({k: v for k, v in record.items() if k != "step"}, step=done)
                metrics.write(json.dumps(record) + "\n")
                metrics.flush()
                on_step(record)
            if done % config.checkpoint_every == 0 or done == config.steps:
                _save_checkpoint(accelerator, family, run, done, model, optimizer, scheduler, sharded)
            if getattr(config, "validate_every", 0) and done % config.validate_every == 0:
                _validate(accelerator, family, run, done, model, groups, sharded)
    finally:
        if metrics is not None:
            metrics.close()
    accelerator.wait_for_everyone()
    if done == config.steps:
        folder = run / "lora" if config.method == "lora" else run
        if sharded:
            state = fsdp.full_state(model)  # every process gathers, rank 0 writes
            if accelerator.is_main_process:
                family.save_weights(model, folder, state)
        elif accelerator.is_main_process:
            family.save_weights(accelerator.unwrap_model(model), folder)
    accelerator.wait_for_everyone()
    # Last: accelerate's end_training closes the trackers and also tears down the process group.
    accelerator.end_training()
    return {"run": str(run), "steps": config.steps, "first_step": first + 1, "last_step": done,
            "losses": losses, "processes": accelerator.num_processes, "cp": groups.cp,
            # Trained parameters, and how many of them rank 0 holds (a share of them under FSDP).
            "parameters": sum(p.numel() for p in params), "local_parameters": fsdp.local_parameters(params)}


def _save_checkpoint(accelerator, family, run: Path, step: int, model, optimizer, scheduler, sharded: bool) -> None:
    import torch
    from safetensors.torch import save_file

    accelerator.wait_for_everyone()
    unwrapped = accelerator.unwrap_model(model)
    names = [n for n, p in unwrapped.named_parameters() if p.requires_grad]
    if sharded:  # every process gathers its shards into rank 0's full copies
        weights, moments = fsdp.full_state(unwrapped), fsdp.full_optimizer_state(unwrapped, optimizer)
    if accelerator.is_main_process:
        if not sharded:
            weights, moments = dict(unwrapped.named_parameters()), optimizer.state_dict()

        def fill(folder: Path) -> None:
            trainable = {n: weights[n].detach().cpu().contiguous() for n in names}
            save_file(trainable, folder / "trainable.safetensors")
            torch.save(moments, folder / "optimizer.pt")
            torch.save(scheduler.state_dict(), folder / "scheduler.pt")
            torch.save({"torch": torch.get_rng_state(),
                        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []}, folder / "rng.pt")
            if family.config.method == "lora":
                family.save_weights(unwrapped, folder / "lora")
            # The data position: the next step; sequences and noise follow from (seed, step).
            stage, start = family.config.stage(step - 1)
            state = {"step": step, "stage": stage, "step_in_stage": step - start,
                     "sequences_seen": step * family.config.batch_size}
            (folder / "state.json").write_text(json.dumps(state) + "\n")

        run_folder.write_checkpoint(run, step, fill)
    accelerator.wait_for_everyone()


def _validate(accelerator, family, run: Path, step: int, model, groups: Layout, sharded: bool) -> None:
    """A family's validation sample at this step, rendered by rank 0's context-parallel
    group (rank 0 alone without cp) and written by rank 0 (the others pass no folder); the
    RNG state is kept so validating does not change the training that follows. A sharded
    model renders on every process: each forward gathers its weights from all of them
    (cheaper to write than a gathered copy, and what a 14B model needs on a GPU). Under
    the training forward's autocast: FSDP's bf16 weights take fp32 inputs through it."""
    import torch

    accelerator.wait_for_everyone()
    if groups.data_rank == 0 or sharded:
        state = torch.get_rng_state()
        folder = run / "samples" if accelerator.is_main_process else None
        with accelerator.autocast():
            family.validate(accelerator.unwrap_model(model), folder, step)
        torch.set_rng_state(state)
    accelerator.wait_for_everyone()


def _load_checkpoint(folder: Path, model, optimizer, scheduler, sharded: bool, main: bool) -> int:
    import torch
    from safetensors.torch import load_file

    if sharded:  # rank 0 reads, every process keeps its shards
        fsdp.load(model, optimizer, load_file(folder / "trainable.safetensors") if main else {},
                  torch.load(folder / "optimizer.pt", weights_only=True) if main else {})
    else:
        trainable = load_file(folder / "trainable.safetensors")
        params = dict(model.named_parameters())
        with torch.no_grad():
            for name, value in trainable.items():
                params[name].copy_(value)
        optimizer.load_state_dict(torch.load(folder / "optimizer.pt", weights_only=True))
    scheduler.load_state_dict(torch.load(folder / "scheduler.pt", weights_only=False))
    rng = torch.load(folder / "rng.pt", weights_only=False)
    torch.set_rng_state(rng["torch"])
    if rng["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
    return json.loads((folder / "state.json").read_text())["step"]


def describe(record: dict, total: int) -> str:
    line = (f"step {record['step']}/{total}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  "
            f"context {record['context']}  {record['samples_per_s']:.1f} samples/s")
    if "validation_latent_mse" in record:
        line += (f"  validation error {record['validation_latent_mse']:.4f} (latent), "
                 f"{record['validation_pixel_mse']:.4f} (pixels)")
    return line
