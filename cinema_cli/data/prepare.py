"""`cinema data prepare`: films -> a dataset, checked before anything is written.

Every input is checked first (the films exist and are videos with frames, the cast
file and dataset.yaml validate, the dataset path is a folder, a Gemini key is set when
captions need one, a local captioning model's folder holds a vision-language model, the
aesthetic predictor's weights load and fit its CLIP): bad input changes nothing on
disk. Then the dataset is locked (a second `prepare` is refused, naming the holder's
pid), and films run in parallel processes; the lock holder alone writes the manifest,
after each film.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import os
import re
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from queue import Empty

from pydantic import ValidationError

from cinema_cli.assemble.probe import _decode
from cinema_cli.data.aesthetic import AestheticScorer
from cinema_cli.data.captions import Cast, load_cast, sidecar_path
from cinema_cli.data.config import DatasetConfig, load_config, save_config, with_overrides
from cinema_cli.data.film import run_film
from cinema_cli.data.state import DONE, DatasetDir, film_id, remove_tmp
from cinema_cli.data.vlm import model_folder
from cinema_cli.errors import BadInput, FFmpegError
from cinema_cli.project.files import atomic_write_text
from cinema_cli.project.yamlio import dump_yaml

CAST_FILE = "cast.yaml"
Progress = Callable[[str, str, int, int], None]  # (film, step, done, total)


@dataclass
class PrepareResult:
    dataset: Path
    films: dict[str, dict] = field(default_factory=dict)  # id -> manifest entry

    @property
    def ok(self) -> bool:
        return all(entry["state"] == DONE for entry in self.films.values())


def check_video(path: Path) -> None:
    """A clear BadInput unless `path` is a video file ffmpeg can decode a frame of."""
    if not path.exists():
        raise BadInput(f"{path}: no such file")
    if not path.is_file():
        raise BadInput(f"{path}: is not a file")
    if path.stat().st_size == 0:
        raise BadInput(f"{path}: is empty (0 bytes), not a video")
    try:
        stderr, _, streams = _decode(path, ["-map", "0:v:0", "-frames:v", "1"])
    except FFmpegError as err:
        header = err.stderr.split("Stream mapping:", 1)[0]
        if "Input #0" in header and not re.search(r"Stream #0:\d+\S*: Video:", header):
            raise BadInput(f"{path}: has no video stream (a zero-length or audio-only file)") from None
        raise BadInput(f"{path}: is not a video ffmpeg can read") from None
    if not any(kind == "Video" for kind, _ in streams) or "frame=1" not in stderr:
        raise BadInput(f"{path}: has no video frames (a zero-length video)")


def resolve_config(dataset: DatasetDir, overrides: dict[str, dict]) -> DatasetConfig:
    try:
        return with_overrides(load_config(dataset.root), overrides)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg'].removeprefix('Value error, ')}"
                             for e in err.errors())
        raise BadInput(f"bad setting: {problems}") from None


def resolve_cast(dataset: DatasetDir, cast_file: Path | None) -> Cast:
    """--cast, else the cast the dataset was prepared with (kept as DATASET/cast.yaml)."""
    if cast_file is not None:
        return load_cast(cast_file)
    stored = dataset.root / CAST_FILE
    return load_cast(stored) if stored.is_file() else Cast()


def prepare(root: Path, films: list[Path], *, overrides: dict[str, dict] | None = None, cast_file: Path | None = None,
            workers: int = 1, on_film: Callable[[str, dict], None] | None = None,
            on_progress: Progress | None = None) -> PrepareResult:
    """`on_film(film, entry)` as each film ends; `on_progress(film, step, done, total)` as
    each goes: TransNetV2's frames, then shots (keyframes, captions)."""
    dataset = DatasetDir(root)
    if not films:
        raise BadInput("give at least one film: cinema data prepare FILM... -o DATASET")
    films = [Path(f).expanduser().resolve() for f in films]
    for film in films:
        check_video(film)
    config = resolve_config(dataset, overrides or {})
    cast = resolve_cast(dataset, cast_file)
    if config.captions.backend == "gemini":
        from cinema_cli.story.gemini_transport import api_key

        api_key()
    if config.captions.backend == "local":  # a folder with a vision-language model's config
        model_folder(config.captions, dataset.root)
    if config.filters.aesthetic is not None:  # the predictor file and the CLIP resolve, and fit
        AestheticScorer(config.filters.aesthetic, dataset.root, config.boundaries.device)
    if config.captions.backend == "sidecar":
        for film in films:
            if not sidecar_path(film, config.captions).is_file():
                raise BadInput(f"captions are sidecar, but {sidecar_path(film, config.captions)} does not exist; "
                               "write it (shots: {0: \"...\"}) or choose --captions none")
    dataset.root.mkdir(parents=True, exist_ok=True)
    with dataset.lock():
        remove_tmp(dataset)
        manifest = dataset.read_manifest()
        save_config(dataset.root, config, dataset.tmp_dir)
        if cast_file is not None:
            atomic_write_text(dataset.root / CAST_FILE, dump_yaml(cast.model_dump(mode="json")), dataset.tmp_dir)
        jobs = _jobs(manifest, films)
        result = PrepareResult(dataset.root)
        for film, entry in _run(dataset, jobs, config, cast, workers, on_progress):
            manifest["films"][film] = entry
            dataset.write_manifest(manifest)
            result.films[film] = entry
            if on_film:
                on_film(film, entry)
    return result


def _jobs(manifest: dict, films: list[Path]) -> list[tuple[str, Path, dict]]:
    by_source = {entry.get("source"): film for film, entry in manifest["films"].items()}
    taken = set(manifest["films"])
    jobs = []
    for path in dict.fromkeys(films):  # a film given twice is one film
        film = by_source.get(str(path)) or film_id(path, taken)
        taken.add(film)
        jobs.append((film, path, manifest["films"].get(film, {})))
    return jobs


def _run(dataset: DatasetDir, jobs, config: DatasetConfig, cast: Cast, workers: int, on_progress: Progress | None):
    """(film id, entry) as each film finishes: in this process for one worker, else in
    `workers` processes (spawned: no CUDA or thread state is inherited), each with its
    share of the CPU threads; their progress comes back through a queue."""
    args = [(str(dataset.root), film, str(path), known, config.model_dump(mode="json"), cast.model_dump(mode="json"))
            for film, path, known in jobs]
    workers = max(1, min(workers, len(jobs)))
    threads = max(1, (os.cpu_count() or 1) // workers)
    if workers == 1:
        calls = _Calls(on_progress) if on_progress else None
        for arg in args:
            yield arg[1], run_film(*arg, threads, calls)
        return
    context = multiprocessing.get_context("spawn")
    with contextlib.ExitStack() as stack:
        queue = stack.enter_context(context.Manager()).Queue() if on_progress else None
        pool = stack.enter_context(ProcessPoolExecutor(workers, mp_context=context))
        futures = {pool.submit(run_film, *arg, threads, queue): arg[1] for arg in args}
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, timeout=0.2, return_when=FIRST_COMPLETED)
            _drain(queue, on_progress)
            for future in finished:
                yield futures[future], future.result()


class _Calls:
    """A queue's put, for the film run in this process: calls on_progress."""

    def __init__(self, on_progress: Progress) -> None:
        self.on_progress = on_progress

    def put(self, item: tuple) -> None:
        self.on_progress(*item)


def _drain(queue, on_progress: Progress | None) -> None:
    while queue is not None:
        try:
            item = queue.get_nowait()
        except Empty:
            return
        on_progress(*item)
