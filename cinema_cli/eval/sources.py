"""What the metrics measure: a film as shots of sampled frames with their captions.

Two sources give the same shape. A project: each storyboard shot's video (shots/ID.mp4),
or its keyframe when the video is not rendered, with the shot's caption, cast and scene,
the scene's prompt (location, time, description) and the film's (title, logline,
style). A folder: videos or keyframe images, with an optional captions file:

    film: a heist in a rain-soaked city at night     # the global prompt (optional)
    shots:
      - file: s01.mp4
        caption: <Mara> studies the blueprint under a swinging bulb
        characters: [Mara]                            # default: the caption's <Name> tags
        scene: garage                                 # optional; shots of a scene share it
        location: a cluttered garage                  # default: the scene

Everything is decoded and checked before any metric runs, so a bad input (no film, no
videos, a caption for a missing file, an unreadable video) is refused before anything
is written.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cinema_cli.assemble.ffmpeg import read_frames
from cinema_cli.assemble.probe import probe
from cinema_cli.errors import BadInput, CinemaError, ProjectFileError
from cinema_cli.project.project import Project
from cinema_cli.project.schema import caption_tags, plain_text
from cinema_cli.project.yamlio import line_of, load_yaml

VIDEO_SUFFIXES = (".mp4", ".mov", ".mkv", ".webm", ".avi")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp")
SHORT_SIDE = 256  # frames are decoded at most this small side: enough for CLIP, DINO, faces
FRAMES_PER_SHOT = 8


@dataclass
class EvalShot:
    id: str
    scene: str
    caption: str  # plain words: <Name> tags written out
    characters: tuple[str, ...]
    location: str
    frames: list[np.ndarray]  # HxWx3 uint8, in time order
    origin: str  # the file the frames came from
    scene_prompt: str = ""


@dataclass
class Film:
    """The shots of one film, and where it came from."""

    name: str
    shots: list[EvalShot]
    prompt: str  # the film's global prompt ("" when none is known)
    project: Project | None = None
    notices: list[str] = field(default_factory=list)

    @property
    def scenes(self) -> list[str]:
        return list(dict.fromkeys(s.scene for s in self.shots))


def frame_digest(frame: np.ndarray) -> str:
    """A frame's content hash: keys the feature cache, so re-runs embed only new frames."""
    return hashlib.sha256(f"{frame.shape}".encode() + frame.tobytes()).hexdigest()


def sample_video(path: Path, count: int) -> list[np.ndarray]:
    """`count` frames spread evenly over the video (all of them when it is shorter)."""
    try:
        info = probe(path)
    except CinemaError:
        raise BadInput(f"{path} is not a readable video") from None
    scale = min(1.0, SHORT_SIDE / max(1, min(info.width, info.height)))
    width, height = max(2, round(info.width * scale / 2) * 2), max(2, round(info.height * scale / 2) * 2)
    wanted = set(np.linspace(0, info.frames - 1, min(count, info.frames)).round().astype(int).tolist())
    try:
        frames = [f.copy() for i, f in enumerate(read_frames(path, width, height)) if i in wanted]
    except CinemaError:
        raise BadInput(f"{path} is not a readable video") from None
    if not frames:
        raise BadInput(f"{path} has no video frames")
    return frames


def read_image(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
    except OSError:
        raise BadInput(f"{path} is not a readable image") from None
    scale = min(1.0, SHORT_SIDE / min(image.size))
    if scale < 1.0:
        image = image.resize((max(1, round(image.width * scale)), max(1, round(image.height * scale))))
    return np.asarray(image).copy()


def from_project(project: Project, frames_per_shot: int = FRAMES_PER_SHOT, keyframes_only: bool = False) -> Film:
    """Each shot's video (its keyframe when the video is not rendered, or always with
    `keyframes_only`); shots with neither are left out with a notice."""
    if not project.has_storyboard():
        raise BadInput(f"{project.root} has no storyboard.yaml, so no film to measure; run `cinema render` first")
    board, script = project.storyboard, project.script
    shots, missing = [], []
    for shot in board.shots:
        video, keyframe = project.shot_path(shot.id), project.keyframe_path(shot.id)
        if video.is_file() and not keyframes_only:
            frames, origin = sample_video(video, frames_per_shot), video
        elif keyframe.is_file():
            frames, origin = [read_image(keyframe)], keyframe
        else:
            missing.append(shot.id)
            continue
        scene = script.scene(shot.scene)
        location = scene.location if scene else shot.scene
        scene_prompt = ", ".join(p for p in (location, scene.time if scene else "",
                                             scene.description if scene else "") if p)
        shots.append(EvalShot(shot.id, shot.scene, plain_text(shot.caption), tuple(shot.characters),
                              location, frames, str(origin.relative_to(project.root)), scene_prompt))
    what = "keyframes" if keyframes_only else "shot videos or keyframes"
    if not shots:
        raise BadInput(f"{project.root} has no film to measure yet (no {what}); run `cinema render` first")
    notices = [f"not measured (no {what} yet): {', '.join(missing)}"] if missing else []
    prompt = ". ".join(p for p in (script.title, script.logline, script.style) if p)
    return Film(project.root.name, shots, prompt, project, notices)


def from_folder(folder: Path, captions: Path | None, frames_per_shot: int = FRAMES_PER_SHOT) -> Film:
    """The videos (or, when there are none, the images) of `folder`, in name order."""
    if not folder.is_dir():
        raise BadInput(f"--folder {folder}: no such folder")
    files = sorted(p for p in folder.iterdir() if p.suffix.lower() in VIDEO_SUFFIXES)
    if not files:
        files = sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise BadInput(f"{folder} has no videos ({', '.join(VIDEO_SUFFIXES)}) or keyframe images "
                       f"({', '.join(IMAGE_SUFFIXES)}) to measure")
    entries, prompt = _captions(captions, [p.name for p in files]) if captions else ({}, "")
    shots = []
    for path in files:
        entry = entries.get(path.name, {})
        frames = (sample_video(path, frames_per_shot) if path.suffix.lower() in VIDEO_SUFFIXES
                  else [read_image(path)])
        caption = str(entry.get("caption", ""))
        scene = str(entry.get("scene", "-"))
        location = str(entry.get("location", scene))
        characters = entry.get("characters", caption_tags(caption))
        shots.append(EvalShot(path.stem, scene, plain_text(caption), tuple(map(str, characters)), location,
                              frames, path.name, location if location != "-" else ""))
    return Film(folder.resolve().name, shots, prompt)


def _captions(path: Path, files: list[str]) -> tuple[dict[str, dict], str]:
    """The captions file's entries by file name, checked against the folder's files."""
    if not path.is_file():
        raise BadInput(f"--captions {path}: no such file")
    data, node = load_yaml(path)
    if not isinstance(data, dict) or not isinstance(data.get("shots"), list):
        raise ProjectFileError(path, [(1, "shots", "expected `shots:`, a list of {file, caption, ...}")])
    problems: list[tuple[int | None, str, str]] = []
    entries: dict[str, dict] = {}
    allowed = {"file", "caption", "characters", "scene", "location"}
    for i, entry in enumerate(data["shots"]):
        where = (line_of(node, ("shots", i)), f"shots.{i}")
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            problems.append((*where, "expected a mapping with `file:` (a file of the folder) and `caption:`"))
            continue
        unknown = sorted(set(entry) - allowed)
        if unknown:
            problems.append((*where, f"unknown field {unknown[0]!r} (fields: {', '.join(sorted(allowed))})"))
        if not isinstance(entry.get("characters", []), list):
            problems.append((*where, "characters: expected a list of names"))
        if entry["file"] not in files:
            problems.append((*where, f"{entry['file']!r} is not in the folder (files: {', '.join(files)})"))
        elif entry["file"] in entries:
            problems.append((*where, f"{entry['file']!r} is captioned twice"))
        entries[entry["file"]] = entry
    uncaptioned = [f for f in files if f not in entries]
    if uncaptioned:
        problems.append((None, "shots", f"no caption for {', '.join(uncaptioned)}: the captions must match "
                                        "the folder's files one to one"))
    if problems:
        raise ProjectFileError(path, problems)
    return entries, str(data.get("film", "") or "")
