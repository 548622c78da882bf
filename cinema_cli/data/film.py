"""One film through every step, each resumable and content-hashed (see state.py):

source -> boundaries -> frames (keyframes, bars, crops, measurements) -> subtitles ->
filters -> captions -> samples -> shards

Runs in a worker process; it writes only its own films/ID/ folder and its own shards,
and returns the film's manifest entry to the process holding the dataset lock.
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cinema_cli.assemble.probe import probe
from cinema_cli.data import captions as captioning
from cinema_cli.data import filters, samples, subtitles, vlm
from cinema_cli.data.aesthetic import AestheticScorer
from cinema_cli.data.boundaries import ShotSpan, detect_shots, resolve_detector
from cinema_cli.data.config import DatasetConfig, recipe
from cinema_cli.data.frames import Keyframe, keyframe, stream_shot_frames, working_size
from cinema_cli.data.shards import write_shards
from cinema_cli.data.state import DONE, FAILED, PENDING, DatasetDir
from cinema_cli.errors import CinemaError
from cinema_cli.project.files import atomic_write_bytes
from cinema_cli.project.manifest import FileHasher, canonical_hash

STEP_VERSION = "1"  # bump when a step's output format changes: every film is redone
ShotProgress = Callable[[str, int, int], None]  # (step, done, total): frames, then shots


class Film:
    def __init__(self, dataset: DatasetDir, film: str, source: Path, known: dict, config: DatasetConfig,
                 cast: captioning.Cast, threads: int = 1, progress: ShotProgress | None = None):
        self.dataset, self.film, self.source, self.known = dataset, film, source, known
        self.config, self.cast = config, cast
        self.folder = dataset.film_dir(film)
        self.threads = threads
        self.progress = progress or (lambda step, done, total: None)
        self.worked: list[str] = []
        self.steps: dict[str, str] = {}
        self._fresh_subtitles: dict | None = None
        self._captioner_made = None

    def _step(self, name: str, inputs: dict, make) -> Any:
        """The step's data: stored if its recipe matches, else made now and stored."""
        key = canonical_hash({"step": name, "version": STEP_VERSION, **inputs})
        self.steps[name] = key
        data = self.dataset.done_step(self.film, name, key)
        if data is None:
            data = make()
            self.dataset.write_step(self.film, name, key, data)
            self.worked.append(name)
        return data

    # ------------------------------------------------------------ the steps

    def source_info(self) -> dict:
        stat = self.source.stat()
        known = self.known
        if known.get("size") == stat.st_size and known.get("mtime_ns") == stat.st_mtime_ns and known.get("info"):
            return known  # unchanged file: its hash and probe are still true
        self.worked.append("source")
        info = probe(self.source)
        if info.frames == 0 or info.fps <= 0:
            raise CinemaError(f"{self.source} has no video frames")
        return {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "sha256": FileHasher()(self.source),
                "info": {k: v for k, v in asdict(info).items() if k in ("width", "height", "fps", "frames", "duration")}}

    def boundaries(self, source: dict) -> list[dict]:
        info = source["info"]
        settings = self.config.boundaries
        # The detector that runs is in the recipe, not `auto`: boundaries from another
        # detector are other boundaries.
        self.detector = resolve_detector(settings.detector, settings.device)

        def make() -> list[dict]:
            spans = detect_shots(self.source, info["fps"], info["frames"], self.detector, settings.threshold,
                                 settings.device, lambda done, total: self.progress("boundaries", done, total))
            return [span.to_json(info["fps"]) for span in spans]

        inputs = {"source": source["sha256"], **recipe(self.config, "boundaries"), "detector": self.detector}
        return self._step("boundaries", inputs, make)

    def frames(self, source: dict, shots: list[dict]) -> list[dict]:
        def make() -> list[dict]:
            out = []
            found = {}
            for done, (shot, frame) in enumerate(zip(shots, self._keyframes(source, shots)), 1):
                self.progress("keyframes", done, len(shots))
                buffer = io.BytesIO()
                frame.image.save(buffer, "JPEG", quality=self.config.keyframes.jpeg_quality)
                data = buffer.getvalue()
                name = f"keyframes/{shot['index']:06d}.jpg"
                atomic_write_bytes(self.folder / name, data, self.dataset.tmp_dir)
                out.append({**shot, "keyframe": name, "keyframe_sha256": hashlib.sha256(data).hexdigest(),
                            "picture": frame.picture.to_json(), "crop": frame.crop.to_json(),
                            "luma": round(frame.luma, 3), "detail": round(frame.detail, 3),
                            "contrast": round(frame.contrast, 3)})
                if self.config.filters.subtitles:  # while the shot's frames are decoded
                    found[str(shot["index"])] = self._find_subtitles(frame)
            self._fresh_subtitles = found if self.config.filters.subtitles else None
            return out

        return self._step("frames", {"boundaries": self.steps["boundaries"], **recipe(self.config, "keyframes")}, make)

    def _keyframes(self, source: dict, shots: list[dict]) -> Iterator[Keyframe]:
        """Each shot's keyframe, bars and sample crops, from one streamed decode."""
        info, settings = source["info"], self.config.keyframes
        spans = [ShotSpan(s["index"], s["start_frame"], s["end_frame"], s["after"]) for s in shots]
        size = working_size(info["width"], info["height"], settings.short_side)
        for held in stream_shot_frames(self.source, size, spans, settings.border_frames):
            yield keyframe(held, settings, (info["width"], info["height"]))

    def _find_subtitles(self, frame: Keyframe) -> dict:
        """{"checked": [frame indexes], "found": {frame index: boxes}} for one shot."""
        indexes = sorted(frame.crops)
        boxes = subtitles.subtitle_boxes([frame.crops[i] for i in indexes], self.threads)
        return {"checked": indexes, "found": {str(i): b for i, b in zip(indexes, boxes) if b}}

    def subtitles(self, source: dict, shots: list[dict]) -> dict[str, dict]:
        if not self.config.filters.subtitles:
            self.steps["subtitles"] = "off"
            return {}

        def make() -> dict[str, dict]:
            if self._fresh_subtitles is not None:  # found while the frames step decoded
                return self._fresh_subtitles
            return {str(s["index"]): self._find_subtitles(f) for s, f in zip(shots, self._keyframes(source, shots))}

        return self._step("subtitles", {"frames": self.steps["frames"], "detector": subtitles.DETECTOR}, make)

    def aesthetic(self, shots: list[dict]) -> dict[str, float]:
        settings = self.config.filters.aesthetic
        if settings is None:
            self.steps["aesthetic"] = "off"
            return {}
        scorer = AestheticScorer(settings, self.dataset.root, self.config.boundaries.device)

        def make() -> dict[str, float]:
            images = []
            for shot in shots:
                with Image.open(self.folder / shot["keyframe"]) as image:
                    images.append(np.asarray(image.convert("RGB")))
            return {str(s["index"]): score for s, score in zip(shots, scorer(images))}

        return self._step("aesthetic", {"frames": self.steps["frames"], **scorer.identity}, make)

    def filters(self, shots: list[dict], found: dict[str, dict], scored: dict[str, float]) -> list[dict]:
        def make() -> list[dict]:
            seen = {int(k): v["found"] for k, v in found.items()}
            aesthetic = {int(k): v for k, v in scored.items()}
            judged = filters.judge(shots, [self.folder / s["keyframe"] for s in shots], seen, aesthetic,
                                   self.config.filters)
            return [{**result, "subtitles": seen.get(s["index"], {}), "aesthetic": aesthetic.get(s["index"])}
                    for s, result in zip(shots, judged)]

        inputs = {"frames": self.steps["frames"], "subtitles": self.steps["subtitles"],
                  "aesthetic": self.steps["aesthetic"], **recipe(self.config, "filters")}
        return self._step("filters", inputs, make)

    def captions(self, shots: list[dict], judged: list[dict]) -> dict:
        """{"shots": {index: caption}, "global": caption|None, "pending": {index: why}}.
        Sidecar captions are read whole; Gemini captions one shot at a time, each saved
        as soon as it arrives and reused while its recipe (keyframe, model, prompt, cast)
        holds, so a failed or killed run loses nothing."""
        settings = self.config.captions
        wanted = [s for s, j in zip(shots, judged) if j["kept"] or j["video_ok"]]
        if settings.backend == "none":
            self.steps["captions"] = "none"
            return {"shots": {}, "global": None, "pending": {}}
        if settings.backend == "sidecar":
            path = captioning.sidecar_path(self.source, settings)
            # Timestamps pick shots: new boundaries re-read the file.
            inputs = {"sidecar": FileHasher()(path), "cast": self.cast.model_dump(mode="json"),
                      "boundaries": self.steps["boundaries"]}

            def make() -> dict:
                read = captioning.load_sidecar(path, shots, self.cast)
                return {"shots": {str(k): v for k, v in read["shots"].items()}, "global": read["global"],
                        "pending": {}}

            return self._step("captions", inputs, make)
        return self._model_captions(wanted)

    @functools.cached_property
    def _model_identity(self) -> dict:
        """What names the captioning model in recipes: Gemini's model name, or the local
        model folder's files."""
        settings = self.config.captions
        if settings.backend == "local":
            return {"backend": "local", "model": vlm.folder_identity(vlm.model_folder(settings, self.dataset.root)),
                    "max_new_tokens": settings.max_new_tokens}
        return {"backend": "gemini", "model": settings.model}

    def _captioner(self):
        if self._captioner_made is None:
            settings = self.config.captions
            self._captioner_made = (vlm.LocalCaptioner(settings, self.cast, self.dataset.root)
                                    if settings.backend == "local" else captioning.GeminiCaptioner(settings, self.cast))
        return self._captioner_made

    def _model_captions(self, wanted: list[dict]) -> dict:
        """Gemini's or a local model's captions, one shot at a time."""
        base = {**self._model_identity, "version": captioning.VERSION,
                "prompt": hashlib.sha256(captioning.prompt_identity(self.cast).encode()).hexdigest()}
        stored = (self.dataset.read_step(self.film, "captions") or {}).get("data") or {}
        old = stored.get("by_recipe", {})
        kept: dict[str, dict] = {}
        result = {"shots": {}, "global": None, "pending": {}, "by_recipe": kept, "scenes": stored.get("scenes", {})}
        for done, shot in enumerate(wanted, 1):
            self.progress("captions", done, len(wanted))
            key = canonical_hash({**base, "keyframe": shot["keyframe_sha256"]})
            if key in old:
                kept[key] = old[key]
            else:
                try:
                    kept[key] = self._captioner().keyframe((self.folder / shot["keyframe"]).read_bytes())
                except CinemaError as err:
                    if err.exit_code == 2:
                        raise  # a bad key or model name fails every shot alike
                    result["pending"][str(shot["index"])] = str(err)
                    continue
                if "captions" not in self.worked:
                    self.worked.append("captions")
                self.dataset.write_step(self.film, "captions", "partial", result)  # saved as it arrives
            result["shots"][str(shot["index"])] = kept[key]
        self.steps["captions"] = canonical_hash({k: v for k, v in result.items() if k != "scenes"})
        self.dataset.write_step(self.film, "captions", self.steps["captions"], result)
        return result

    def samples(self, shots: list[dict], judged: list[dict], caps: dict) -> list[dict]:
        rows = [{**s, "video_ok": j["video_ok"]} for s, j in zip(shots, judged)]

        def make() -> list[dict]:
            out = []
            for sample in samples.group(rows, self.config.samples):
                shot_captions = [caps["shots"].get(str(i)) for i in sample["shots"]]
                sample["shot_captions"] = [c["caption"] if c else None for c in shot_captions]
                sample["characters"] = sorted({n for c in shot_captions if c for n in c["characters"]})
                sample["global_caption"] = self._global_caption(sample, caps)
                out.append(sample)
            return out

        inputs = {"filters": self.steps["filters"], "captions": self.steps["captions"],
                  **recipe(self.config, "samples")}
        return self._step("samples", inputs, make)

    def _global_caption(self, sample: dict, caps: dict) -> str | None:
        if self.config.captions.backend == "sidecar":
            return caps["global"]["caption"] if caps["global"] else None
        if self.config.captions.backend not in ("gemini", "local") or None in sample["shot_captions"]:
            return None
        key = canonical_hash({"model": self._model_identity["model"], "shots": sample["shot_captions"],
                              "prompt": captioning.prompt_identity(self.cast)})
        scenes = caps.setdefault("scenes", {})
        if key not in scenes:
            scenes[key] = self._captioner().scene(sample["shot_captions"])
            self.dataset.write_step(self.film, "captions", self.steps["captions"], caps)
        return scenes[key]["caption"]

    def shards(self, shots: list[dict], judged: list[dict], caps: dict, groups: list[dict]) -> dict:
        def make() -> dict:
            keyframe_samples = []
            for shot, result in zip(shots, judged):
                if not result["kept"]:
                    continue
                caption = caps["shots"].get(str(shot["index"]))
                record = self.record(shot, result, caption)
                key = f"{self.film}-{shot['index']:06d}"
                members = [(f"{key}.jpg", (self.folder / shot["keyframe"]).read_bytes()),
                           (f"{key}.json", _json(record))]
                if caption:
                    members.append((f"{key}.txt", caption["caption"].encode()))
                keyframe_samples.append(members)
            multishot = [[(f"{self.film}-{g['id']}.json", _json({"film": self.film, "source": str(self.source),
                                                                  "fps": self.fps, **g}))] for g in groups]
            per = self.config.shards.max_samples
            return {"keyframes": write_shards(self.dataset.shard_dir("keyframes"), self.film, keyframe_samples,
                                              per, self.dataset.tmp_dir),
                    "multishot": write_shards(self.dataset.shard_dir("multishot"), self.film, multishot,
                                              per, self.dataset.tmp_dir)}

        inputs = {name: self.steps[name] for name in ("frames", "filters", "captions", "samples")}
        stored = self._step("shards", {**inputs, **recipe(self.config, "shards")}, make)
        missing = [n for kind, names in stored.items() for n in names
                   if not (self.dataset.shard_dir(kind) / n).is_file()]
        if missing:  # deleted by hand: written again
            self.dataset.step_path(self.film, "shards").unlink()
            if "shards" in self.worked:
                self.worked.remove("shards")
            return self.shards(shots, judged, caps, groups)
        return stored

    def record(self, shot: dict, result: dict, caption: dict | None) -> dict:
        return {"film": self.film, "source": str(self.source), "fps": self.fps, "shot": shot["index"],
                "start_frame": shot["start_frame"], "end_frame": shot["end_frame"],
                "start": shot["start"], "end": shot["end"], "after": shot["after"],
                "picture": shot["picture"], "crop": shot["crop"],
                "caption": caption["caption"] if caption else None,
                "characters": caption["characters"] if caption else [],
                "filters": {"luma": shot["luma"], "detail": shot["detail"], "contrast": shot["contrast"],
                            "subtitles": result["subtitles"], "aesthetic": result["aesthetic"],
                            "reasons": result["reasons"], "similarity": result["similarity"]}}

    # ------------------------------------------------------------ all of it

    def run(self) -> dict:
        source = self.source_info()
        self.fps = source["info"]["fps"]
        shots = self.boundaries(source)
        shots = self.frames(source, shots)
        judged = self.filters(shots, self.subtitles(source, shots), self.aesthetic(shots))
        caps = self.captions(shots, judged)
        entry = {"source": str(self.source), **{k: source[k] for k in ("size", "mtime_ns", "sha256", "info")},
                 "shots": len(shots), "kept": sum(j["kept"] for j in judged),
                 "dropped": dict(Counter(r for j in judged for r in j["reasons"])),
                 "seconds": source["info"]["duration"], "detector": self.detector}
        if caps["pending"]:
            why = next(iter(caps["pending"].values()))
            entry.update(state=PENDING, why=f"{len(caps['pending'])} caption(s) failed and will be retried: {why}",
                         captions_pending=sorted(int(i) for i in caps["pending"]))
            return {**entry, "steps": self.steps, "worked": self.worked}
        try:
            groups = self.samples(shots, judged, caps)
        except CinemaError as err:
            if err.exit_code == 2:
                raise
            entry.update(state=PENDING, why=f"a global caption failed and will be retried: {err}",
                         captions_pending=[])
        else:
            self.shards(shots, judged, caps, groups)
            entry.update(state=DONE, why=None, samples=dict(Counter(f"{g['target']:g}" for g in groups)),
                         captions_pending=[])
        return {**entry, "steps": self.steps, "worked": self.worked}


def _json(data: dict) -> bytes:
    return json.dumps(data, ensure_ascii=False, sort_keys=True).encode()


def run_film(root: str, film: str, source: str, known: dict, config: dict, cast: dict, threads: int,
             progress: Any = None) -> dict:
    """A worker's entry point: one film, its manifest entry back (a failure too).
    `progress`, when given, is a queue (or anything with put) that gets (film, step,
    done, total) as the film goes."""
    import torch

    torch.set_num_threads(threads)
    dataset = DatasetDir(Path(root))
    report = None if progress is None else lambda step, done, total: progress.put((film, step, done, total))
    try:
        return Film(dataset, film, Path(source), known, DatasetConfig.model_validate(config),
                    captioning.Cast.model_validate(cast), threads, report).run()
    except CinemaError as err:
        return {**known, "source": source, "state": FAILED, "why": str(err), "exit_code": err.exit_code}
