"""Shot Cut Accuracy (SCA), the cut-placement metric of HoloCine.

    SCA = exp(-NSD)
    NSD = (sum of |detected - requested| over matched cuts + penalty * (missed + extra)) / frames

A cut is a frame index: the first frame of the new shot. `frames` is the length of the
video measured.

Matching rule: one-to-one; a requested and a detected cut may be matched only when at
most `tolerance` frames apart; of all such matchings the one with the least NSD is
used. On a line an optimal matching never crosses, so a dynamic program over the two
sorted lists finds the same optimum as the Hungarian algorithm, in O(requested x
detected).

Penalty: a missed or an extra cut costs the mean length of the requested shots,
frames / (requested cuts + 1), and never less than the tolerance (so matching within
the window is always cheaper than leaving both cuts unmatched). A film whose cuts all
land within a frame or two scores about 0.99; one missed cut in a film of N requested
shots costs about exp(-1/N).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass


@dataclass(frozen=True)
class CutScore:
    frames: int
    requested: list[int]
    detected: list[int]
    matches: list[tuple[int, int]]  # (requested, detected)
    missed: list[int]
    extra: list[int]
    tolerance: int
    penalty: float
    nsd: float
    sca: float

    def to_json(self) -> dict:
        return asdict(self)


def shot_cut_accuracy(requested: list[int], detected: list[int], frames: int, tolerance: int) -> CutScore:
    if frames <= 0:
        raise ValueError("a video of no frames has no cuts to score")
    req, det = sorted(set(requested)), sorted(set(detected))
    penalty = max(frames / (len(req) + 1), float(tolerance))
    # cost[i][j]: the least cost of the first i requested and first j detected cuts;
    # step[i][j]: the last decision of that optimum ("match", "miss" or "extra").
    cost = [[0.0] * (len(det) + 1) for _ in range(len(req) + 1)]
    step = [[""] * (len(det) + 1) for _ in range(len(req) + 1)]
    for i in range(len(req) + 1):
        for j in range(len(det) + 1):
            options = []
            if i and j and abs(req[i - 1] - det[j - 1]) <= tolerance:
                options.append((cost[i - 1][j - 1] + abs(req[i - 1] - det[j - 1]), "match"))
            if i:
                options.append((cost[i - 1][j] + penalty, "miss"))
            if j:
                options.append((cost[i][j - 1] + penalty, "extra"))
            if options:
                cost[i][j], step[i][j] = min(options, key=lambda o: o[0])  # ties: first listed
    matches, missed, extra = [], [], []
    i, j = len(req), len(det)
    while i or j:
        if step[i][j] == "match":
            matches.append((req[i - 1], det[j - 1]))
            i, j = i - 1, j - 1
        elif step[i][j] == "miss":
            missed.append(req[i - 1])
            i -= 1
        else:
            extra.append(det[j - 1])
            j -= 1
    nsd = cost[len(req)][len(det)] / frames
    return CutScore(
        frames=frames, requested=req, detected=det, matches=matches[::-1], missed=missed[::-1],
        extra=extra[::-1], tolerance=tolerance, penalty=penalty, nsd=nsd, sca=math.exp(-nsd),
    )
