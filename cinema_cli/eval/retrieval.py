"""Retrieval recall: does the memory choose the frames a person would have chosen?

The labels file is YAML, a mapping from a shot id to the earlier shots (or "@Name"
reference images) that a continuity supervisor would want it drawn with:

    s10: [s01, s02, s03]   # the flashback returns to the garage

For each labelled shot, the context the memory chooses with room for k frames (ranking,
near-duplicate suppression and recency tie-break as in `cinema plan`; the GoldenMem size
limit is left out, since it is about cost, not relevance) is compared with its labels:

    recall@k = hits / min(k, number of relevant frames), averaged over labelled shots

so a perfect memory scores 1 even when more than k frames are relevant.
"""

from __future__ import annotations

from pathlib import Path

from cinema_cli.errors import BadInput, ProjectFileError
from cinema_cli.memory.planner import MemoryPlanner
from cinema_cli.project.schema import Storyboard
from cinema_cli.project.yamlio import line_of, load_yaml


def load_labels(path: Path, board: Storyboard, references: set[str]) -> dict[str, list[str]]:
    """The labels, checked: known shots, relevant frames that come before their shot."""
    data, node = load_yaml(path)
    if not isinstance(data, dict) or not data:
        raise ProjectFileError(path, [(1, "", "expected a mapping of shot id -> [relevant shot ids]")])
    ids = [s.id for s in board.shots]
    problems: list[tuple[int | None, str, str]] = []
    labels: dict[str, list[str]] = {}
    for shot, relevant in data.items():
        shot = str(shot)
        if shot not in ids:
            problems.append((line_of(node, (shot,)), shot, f"no shot {shot!r} in storyboard.yaml"))
            continue
        if not isinstance(relevant, list) or not relevant:
            problems.append((line_of(node, (shot,)), shot, "expected a non-empty list of relevant shot ids"))
            continue
        for j, other in enumerate(map(str, relevant)):
            where = (line_of(node, (shot, j)), f"{shot}.{j}")
            if other in references:
                continue
            if other not in ids:
                problems.append((*where, f"no shot or reference {other!r} (shots: {', '.join(ids)})"))
            elif ids.index(other) >= ids.index(shot):
                problems.append((*where, f"{other} does not come before {shot}, so it cannot be remembered"))
        labels[shot] = [str(r) for r in relevant]
    if problems:
        raise ProjectFileError(path, problems)
    return labels


def evaluate_retrieval(planner: MemoryPlanner, board: Storyboard, labels_path: Path, k: int) -> dict:
    project = planner.project
    references = {f"@{c.name}" for c in project.script.characters if c.references}
    labels = load_labels(labels_path, board, references)
    last = max(board.index(shot) for shot in labels)
    missing = [s.id for s in board.shots[:last] if not project.keyframe_path(s.id).is_file()]
    if missing:
        raise BadInput(
            f"keyframes {', '.join(missing)} are not drawn yet, so they cannot be retrieved; "
            "run `cinema plan` first"
        )
    rows = []
    for shot_id, relevant in labels.items():
        candidates, chosen, _ = planner.ranked(board, board.shots[board.index(shot_id)], k)
        retrieved = [candidates[i].shot for i in chosen]
        hits = len(set(retrieved) & set(relevant))
        rows.append({"shot": shot_id, "relevant": relevant, "retrieved": retrieved, "hits": hits,
                     "recall": round(hits / min(k, len(relevant)), 4)})
    return {
        "embedder": planner.embedder.identity,
        "k": k,
        "recall_at_k": round(sum(r["recall"] for r in rows) / len(rows), 4),
        "shots": rows,
    }
