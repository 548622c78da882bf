"""The run folder: what a training run writes, and how it is checked before anything is.

    RUN/config.yaml            the resolved settings (config.py)
    RUN/run.json               family, base model and dataset, checked by --resume
    RUN/metrics.jsonl          one line per step: step, loss, lr, gradient norm, context, samples/s
    RUN/checkpoints/step-N/    trainable weights, optimizer, scheduler, RNG, step and data
                               position; written under a temporary name and renamed, so a
                               checkpoint is whole or absent
    RUN/.lock                  held by the training process (rank 0)
    RUN/lora/                  the latest adapter in diffusers' format (load_lora_weights)

Only rank 0 writes any of it.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from cinema_cli.errors import BadInput
from cinema_cli.train import config as train_config
from cinema_cli.train.config import TrainConfig

KEEP_CHECKPOINTS = 2


def identity(family: str, config: TrainConfig, dataset: Path) -> dict:
    return {"family": family, "base": config.base, "method": config.method, "dataset": str(dataset.resolve())}


def check(run: Path, resume: bool, family: str, config: TrainConfig | None, base: str | None, dataset: Path,
          model=None) -> TrainConfig | None:
    """The settings to train with: a new run's `config`, or a resumed run's saved ones.
    Raises BadInput (before anything is written) when the folder does not fit."""
    if not resume:
        if run.exists() and (not run.is_dir() or any(run.iterdir())):
            what = "a training run" if (run / "run.json").is_file() else "not empty"
            raise BadInput(f"{run} is {what}; pass --resume to continue a run, or choose another -o")
        return config
    if not (run / "run.json").is_file() or not (run / train_config.CONFIG_FILE).is_file():
        raise BadInput(f"{run} is not a training run to resume (no run.json / config.yaml)")
    saved = json.loads((run / "run.json").read_text())
    if saved.get("family") != family:
        raise BadInput(f"{run} trains {saved.get('family')}, not {family}")
    if base is not None and base != saved["base"]:
        raise BadInput(f"{run} was trained from base model {saved['base']!r}, not {base!r}; "
                       "a run resumes only on its own base model")
    if str(dataset.resolve()) != saved["dataset"]:
        raise BadInput(f"{run} was trained on {saved['dataset']}, not {dataset.resolve()}")
    return train_config.load(run, model)


def lock(run: Path):
    """One writer per run folder: a second `train` into it (say a --resume while the run
    still trains) is refused naming the holder's pid. The kernel drops it when the holder
    dies, so a killed run leaves no stale lock."""
    import contextlib

    from cinema_cli.errors import LockHeld
    from cinema_cli.project.lock import ProjectLock

    @contextlib.contextmanager
    def held():
        holder = ProjectLock(run / ".lock")
        try:
            holder.acquire()
        except LockHeld:
            pid = (run / ".lock").read_text().strip() or "unknown"
            raise LockHeld(f"{run} is being trained by another process (pid {pid}); wait for it, or stop it") from None
        try:
            yield
        finally:
            holder.release()

    return held()


def start(run: Path, family: str, config: TrainConfig, dataset: Path) -> None:
    run.mkdir(parents=True, exist_ok=True)
    train_config.save(config, run)
    (run / "run.json").write_text(json.dumps(identity(family, config, dataset), indent=2) + "\n")


def latest_checkpoint(run: Path) -> Path | None:
    done = sorted((p for p in (run / "checkpoints").glob("step-*") if (p / "state.json").is_file()),
                  key=lambda p: int(p.name.split("-")[1]))
    return done[-1] if done else None


def write_checkpoint(run: Path, step: int, fill) -> Path:
    """`fill(folder)` writes the checkpoint's files; the folder appears under its final
    name only when complete. Older checkpoints beyond the last KEEP_CHECKPOINTS go."""
    folder = run / "checkpoints"
    final = folder / f"step-{step:08d}"
    temp = folder / f".tmp-step-{step:08d}"
    shutil.rmtree(temp, ignore_errors=True)
    temp.mkdir(parents=True)
    fill(temp)
    if final.exists():
        shutil.rmtree(final)
    os.replace(temp, final)
    kept = sorted((p for p in folder.glob("step-*")), key=lambda p: int(p.name.split("-")[1]))
    for old in kept[:-KEEP_CHECKPOINTS]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def truncate_metrics(run: Path, step: int) -> None:
    """Forget the steps after the checkpoint a run resumes from: they are trained again."""
    path = run / "metrics.jsonl"
    if path.is_file():
        lines = [line for line in path.read_text().splitlines() if line and json.loads(line)["step"] <= step]
        path.write_text("".join(line + "\n" for line in lines))


LORA_FILE = "pytorch_lora_weights.safetensors"


def lora_weights(path: str | Path) -> Path:
    """The adapter file of a training run folder, of its lora/ folder, or a .safetensors
    file itself (what `keyframes: interleaved` takes as `lora:`)."""
    path = Path(path).expanduser()
    for candidate in (path / "lora" / LORA_FILE, path / LORA_FILE, path):
        if candidate.is_file():
            return candidate
    raise BadInput(f"lora: {path} is neither a training run, its lora/ folder, nor a .safetensors file")


def trained_context(path: str | Path) -> int | None:
    """The most pairs the run that made this adapter trained on (its config.yaml), or None
    for an adapter file that is not in a run folder."""
    weights = lora_weights(path)
    for folder in (weights.parent, weights.parent.parent):
        if (folder / "run.json").is_file() and (folder / train_config.CONFIG_FILE).is_file():
            return max(train_config.load(folder).context)
    return None
