"""`eval consistency`: does a character (a place) look the same from shot to shot, and
does a shot hold together from frame to frame?

Inter-shot (HoloCine's inter-shot consistency, with CLIP image features in place of
ViCLIP): each shot is the mean of its frames' unit features, on the largest face of each
frame when the face detector (features.Faces) finds faces in the shot, else on the whole frame (`on`
says which); two shots that share a character score the cosine of their means. A shot's
`inter_character` is its mean over the other shots with one of its characters, a
character's score the mean over its pairs. `inter_location` does the same on whole
frames for shots that share a location.

Intra-shot, as VBench defines subject and background consistency: for frames 2..T,
the mean of (cos(f_t, f_1) + cos(f_t, f_{t-1})) / 2, each cosine clipped at 0, on DINO
features (subject) and CLIP features (background). A shot of one frame has none.
"""

from __future__ import annotations

from itertools import combinations

import numpy as np

from cinema_cli.eval.results import mean, per_scene
from cinema_cli.eval.sources import EvalShot, Film

NAME = "consistency"
KEYS = ["inter_character", "inter_location", "intra_subject", "intra_background"]


def vbench_consistency(features: np.ndarray) -> float | None:
    """VBench's frame-to-frame consistency of unit feature rows, in time order."""
    if len(features) < 2:
        return None
    first = np.clip(features[1:] @ features[0], 0, None)
    previous = np.clip(np.sum(features[1:] * features[:-1], axis=1), 0, None)
    return round(float(np.mean((first + previous) / 2)), 4)


def shot_vector(features: np.ndarray) -> np.ndarray:
    v = features.mean(axis=0)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def identity_features(shot: EvalShot, clip, faces) -> tuple[np.ndarray, str]:
    """The shot's CLIP features on faces when any frame has one, else on whole frames."""
    faces = [face for face in map(faces.largest, shot.frames) if face is not None]
    return (clip.images(faces), "faces") if faces else (clip.images(shot.frames), "frames")


def pair_scores(vectors: dict[str, np.ndarray], groups: dict[str, list[str]]) -> tuple[list[dict], dict[str, list]]:
    """Cosines of every pair of shots in each group; and each shot's cosines."""
    pairs, by_shot = [], {shot: [] for shot in vectors}
    for group, members in groups.items():
        for a, b in combinations(members, 2):
            score = round(float(vectors[a] @ vectors[b]), 4)
            pairs.append({"group": group, "a": a, "b": b, "score": score})
            by_shot[a].append(score)
            by_shot[b].append(score)
    return pairs, by_shot


def measure(film: Film, tools) -> dict:
    clip = tools.clip
    dino = tools.dino
    ids = [s.id for s in film.shots]
    identity, on = {}, {}
    for shot in film.shots:
        features, on[shot.id] = identity_features(shot, clip, tools.faces)
        identity[shot.id] = shot_vector(features)
    whole = {s.id: shot_vector(clip.images(s.frames)) for s in film.shots}
    characters = {name: [s.id for s in film.shots if name in s.characters]
                  for name in dict.fromkeys(n for s in film.shots for n in s.characters)}
    locations = {place: [s.id for s in film.shots if s.location == place]
                 for place in dict.fromkeys(s.location for s in film.shots if s.location and s.location != "-")}
    character_pairs, by_character = pair_scores(identity, characters)
    location_pairs, by_location = pair_scores(whole, locations)
    rows = []
    for shot in film.shots:
        rows.append({
            "id": shot.id, "scene": shot.scene, "frames": len(shot.frames), "on": on[shot.id],
            "inter_character": mean(by_character[shot.id]), "inter_location": mean(by_location[shot.id]),
            "intra_subject": vbench_consistency(dino.images(shot.frames)),
            "intra_background": vbench_consistency(clip.images(shot.frames)),
        })
    notices = []
    if not character_pairs:
        notices.append("no two shots share a character, so inter-shot character consistency is not measured")
    faces = sum(on[i] == "faces" for i in ids)
    if tools.faces.name is None:
        notices.append("no face detector (OpenCV 5 ships no face cascade; give a YuNet .onnx with --faces): "
                       "characters were compared on whole frames")
    return {
        "models": {"clip": clip.identity, "dino": dino.identity, "faces": tools.faces.name},
        "summary": {k: mean(r[k] for r in rows) for k in KEYS} | {"shots_on_faces": faces},
        "characters": {name: mean(p["score"] for p in character_pairs if p["group"] == name) for name in characters},
        "locations": {place: mean(p["score"] for p in location_pairs if p["group"] == place) for place in locations},
        "pairs": {"character": character_pairs, "location": location_pairs},
        "shots": rows, "scenes": per_scene(rows, KEYS), "notices": notices,
    }
