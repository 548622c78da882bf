"""`eval stress`: the long-context stress test, the user's own version of Captain
Cinema's Table 2.

For each context length (8, 16, 32, 48 pairs by default) and each memory (GoldenMem,
and naive: every context frame at full size), new keyframes are drawn by the project's
keyframe backend, conditioned on that many earlier (keyframe, caption) pairs: the
project's drawn keyframes in storyboard order, repeated when there are fewer, the most
recent given the largest GoldenMem size (as `cinema plan` gives recent frames
priority with `scale_order: recency`). GoldenMem's sizes come from the project's memory
settings (group, minimum side, token budget), its `max_context` lifted to the pairs
asked for. The shots drawn are the storyboard's first ones, with their own captions
and seeds. Per row: the transformer's image tokens (target + context; one frame is
the unit), seconds per keyframe, peak GPU memory (CUDA only; null on a CPU), identity
consistency (the CLIP cosine, on faces when found, of each drawn keyframe with the
earlier keyframes of its characters), and the Gemini judge's scores of the drawn
sequence when GEMINI_API_KEY / GOOGLE_API_KEY is set.
"""

from __future__ import annotations

import time

import numpy as np
from pydantic import ValidationError

from cinema_cli.errors import BadInput
from cinema_cli.eval import results
from cinema_cli.eval.consistency import identity_features, shot_vector
from cinema_cli.eval.sources import EvalShot, read_image
from cinema_cli.keyframes.base import (
    CharacterLook,
    ContextFrame,
    KeyframePlan,
    KeyframePreflight,
    KeyframeRequest,
    keyframe_backends,
)
from cinema_cli.memory.goldenmem import schedule
from cinema_cli.project.project import Project
from cinema_cli.runtime.backends import resolve_backend
from cinema_cli.runtime.inputs import resolve_file_options

PAIRS = (8, 16, 32, 48)
MEMORIES = ("goldenmem", "naive")


def run_stress(project: Project, tools, *, pairs: tuple[int, ...] = PAIRS, frames: int = 2,
               judge=None) -> dict:
    """`tools`: the eval feature models (CLIP and faces); `judge`: a judge.Judge or None."""
    config, board, script = project.config, project.storyboard, project.script
    name, notice = resolve_backend("keyframes", config.keyframes.backend)
    notices = [notice] if notice else []
    if name == "sketch":
        raise BadInput("eval stress needs a keyframe model that is conditioned on context (keyframes.backend: "
                       "flux2, `model: tiny` to try the plumbing); the sketch previz draws without context")
    backend_cls = keyframe_backends.get(name)
    try:
        options = backend_cls.Options.model_validate(config.keyframes.options)
        backend = backend_cls(resolve_file_options(options, project.root))
    except ValidationError as err:
        raise BadInput(f"cinema.yaml keyframes.options: {err}") from None
    width, height = config.resolution.width, config.resolution.height
    if isinstance(backend, KeyframePreflight):
        notices += backend.preflight(KeyframePlan(width, height, config.runtime))
    drawn_before = [s for s in board.shots if project.keyframe_path(s.id).is_file()]
    if not drawn_before:
        raise BadInput("eval stress conditions on the project's keyframes and none is drawn yet; run `cinema plan`")
    longest = max(pairs)
    history = [drawn_before[i % len(drawn_before)] for i in range(longest)]
    targets = [board.shots[i % len(board.shots)] for i in range(frames)]
    earlier = {s.id: _shot(project, s, read_image(project.keyframe_path(s.id))) for s in drawn_before}

    memory = config.memory
    _draw(backend, project, script, targets[:1], (), width, height)  # warm-up: loading, first-call allocations
    rows = []
    for mode in MEMORIES:
        for count in pairs:
            recent = history[:count][::-1]  # the most recent first
            if mode == "goldenmem":
                plan = schedule(height, width, count, vae_factor=memory.vae_factor, patch=memory.patch,
                                group=memory.group_size, min_side=memory.min_side, budget=memory.token_budget)
                target_tokens = plan.target.tokens
                slots = [(s.pixels, s.tokens) for s in plan.context]
            else:
                target_tokens = schedule(height, width, 0, vae_factor=memory.vae_factor, patch=memory.patch).target.tokens
                slots = [((height, width), target_tokens)] * count
            context = tuple(ContextFrame(shot.id, project.keyframe_path(shot.id), 1.0, size, tokens)
                            for shot, (size, tokens) in zip(recent, slots))
            pictures, seconds, peak = _draw(backend, project, script, targets, context, width, height)
            tokens = target_tokens + sum(frame.tokens for frame in context)
            drawn = [_shot(project, shot, picture) for shot, picture in zip(targets, pictures)]
            row = {"memory": mode, "pairs": count, "context_frames": len(context), "tokens": tokens,
                   "token_ratio": round(tokens / target_tokens, 4), "seconds_per_keyframe": round(seconds, 4),
                   "peak_gpu_gib": peak, "identity": _identity(drawn, earlier, tools)}
            if judge is not None:
                verdict = judge([d.frames[0] for d in drawn], [d.caption for d in drawn])
                row["judge"] = {k: v for k, v in verdict.items() if k != "scores"}
            rows.append(row)

    def at(mode: str, count: int) -> dict | None:
        return next((r for r in rows if r["memory"] == mode and r["pairs"] == count), None)

    naive = [at("naive", n) for n in pairs]
    # Linear growth: naive tokens per pair of context is the same at every length.
    per_pair = [round((r["tokens"] - r["tokens"] / r["token_ratio"]) / r["pairs"], 4) for r in naive]
    golden_at_longest = at("goldenmem", longest)
    return {
        "metric": "stress", "film": project.root.name, "backend": name,
        "backend_options": backend.options.model_dump(mode="json"), "resolution": f"{width}x{height}",
        "pairs": list(pairs), "frames_per_row": frames, "rows": rows,
        "goldenmem_token_ratio_at_longest": golden_at_longest["token_ratio"],
        "goldenmem_token_ratio_bound": 1.62,
        "naive_token_ratios": {str(r["pairs"]): r["token_ratio"] for r in naive},
        "naive_tokens_per_pair": per_pair, "naive_linear": len(set(per_pair)) == 1,
        "judged": judge is not None, "shots": [], "scenes": [], "notices": notices,
        "summary": {"goldenmem_token_ratio": golden_at_longest["token_ratio"],
                    "naive_token_ratio": at("naive", longest)["token_ratio"],
                    "goldenmem_identity": golden_at_longest["identity"],
                    "naive_identity": at("naive", longest)["identity"]},
    }


def _shot(project: Project, shot, picture: np.ndarray) -> EvalShot:
    scene = project.script.scene(shot.scene)
    return EvalShot(shot.id, shot.scene, shot.caption, tuple(shot.characters),
                    scene.location if scene else shot.scene, [picture], shot.id)


def _draw(backend, project: Project, script, targets, context, width: int, height: int):
    """The keyframes of `targets` drawn with `context`: pictures, mean seconds, peak GiB."""
    import torch

    cuda = torch.cuda.is_available()
    pictures, spent = [], []
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    for shot in targets:
        scene = script.scene(shot.scene)
        request = KeyframeRequest(
            shot_id=shot.id, scene_id=shot.scene, caption=shot.caption,
            characters=tuple(CharacterLook(n, c.description if c else "", project.character_reference_paths(n))
                             for n, c in ((n, script.character(n)) for n in shot.characters)),
            framing=shot.framing, move=shot.move, location=scene.location if scene else "",
            time_of_day=scene.time if scene else "", style=script.style, width=width, height=height,
            seed=shot.seed, context=context, runtime=project.config.runtime,
        )
        started = time.perf_counter()
        image = backend.render(request, lambda done, total: None)
        spent.append(time.perf_counter() - started)
        pictures.append(np.asarray(image.convert("RGB")).copy())
    peak = round(torch.cuda.max_memory_allocated() / 1024**3, 3) if cuda else None
    return pictures, sum(spent) / len(spent), peak


def _identity(drawn: list[EvalShot], earlier: dict[str, EvalShot], tools) -> float | None:
    scores = []
    for shot in drawn:
        mine = shot_vector(identity_features(shot, tools.clip, tools.faces)[0])
        for other in earlier.values():
            if other.id != shot.id and set(other.characters) & set(shot.characters):
                theirs = shot_vector(identity_features(other, tools.clip, tools.faces)[0])
                scores.append(float(mine @ theirs))
    return results.mean(scores)
