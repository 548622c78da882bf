"""`eval text`: semantic consistency, as HoloCine's Semantic Shot / Global.

The CLIP cosine of each sampled frame to a prompt, averaged over the shot's frames:
`semantic_shot` to the shot's own caption, `semantic_scene` to its scene's prompt
(location, time, description), `semantic_global` to the film's prompt (title, logline,
style; a folder's `film:`). A prompt that is not known is left out.
"""

from __future__ import annotations

import numpy as np

from cinema_cli.errors import BadInput
from cinema_cli.eval.results import mean, per_scene
from cinema_cli.eval.sources import Film

NAME = "text"
KEYS = ["semantic_shot", "semantic_scene", "semantic_global"]


def measure(film: Film, tools) -> dict:
    if not any(s.caption for s in film.shots):
        raise BadInput("eval text needs captions: the shots have none (a folder needs --captions FILE)")
    clip = tools.clip
    rows = []
    for shot in film.shots:
        images = clip.images(shot.frames)
        row = {"id": shot.id, "scene": shot.scene, "frames": len(shot.frames)}
        for key, prompt in zip(KEYS, (shot.caption, shot.scene_prompt, film.prompt)):
            row[key] = round(float(np.mean(images @ clip.texts([prompt])[0])), 4) if prompt else None
        rows.append(row)
    return {"models": {"clip": clip.identity}, "summary": {k: mean(r[k] for r in rows) for k in KEYS},
            "shots": rows, "scenes": per_scene(rows, KEYS)}
