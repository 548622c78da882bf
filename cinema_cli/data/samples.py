"""Multi-shot samples for video training (HoloCine): runs of consecutive shots of one film
grouped to target durations.

For each target (5 / 15 / 60 s by default) the film's runs of usable consecutive shots
are walked from the start: shots are added until the sample reaches the target less the
tolerance; it is kept if it is not longer than the target plus the tolerance and has at
most `max_shots` shots, and the next sample starts after it; otherwise the walk moves on
by one shot. A sample's video is the continuous range from its first shot's first frame
to its last shot's last frame, so a dissolve between two of its shots is inside it: its
cut list says where each shot starts and which joins are dissolves (with their frames).
"""

from __future__ import annotations

from cinema_cli.data.config import SampleSettings


def usable_runs(shots: list[dict]) -> list[list[dict]]:
    """Maximal runs of consecutive shots that may go into video samples."""
    runs: list[list[dict]] = []
    for shot in shots:
        if not shot["video_ok"]:
            continue
        if runs and runs[-1][-1]["index"] == shot["index"] - 1:
            runs[-1].append(shot)
        else:
            runs.append([shot])
    return runs


def sample_id(target: float, first: int) -> str:
    return f"t{target:g}".replace(".", "p") + f"-{first:06d}"


def group(shots: list[dict], settings: SampleSettings) -> list[dict]:
    samples = []
    runs = usable_runs(shots)
    for target in settings.targets:
        low, high = target * (1 - settings.tolerance), target * (1 + settings.tolerance)
        for run in runs:
            first = 0
            while first < len(run):
                last = first
                while last + 1 < len(run) and last - first + 1 < settings.max_shots \
                        and run[last]["end"] - run[first]["start"] < low:
                    last += 1
                seconds = run[last]["end"] - run[first]["start"]
                if low <= seconds <= high:
                    samples.append(_sample(target, run[first:last + 1]))
                    first = last + 1
                else:
                    first += 1
    return samples


def _sample(target: float, shots: list[dict]) -> dict:
    start = shots[0]["start_frame"]
    cuts = []
    for before, after in zip(shots, shots[1:]):
        cut = {"frame": after["start_frame"] - start, "type": before["after"]}
        if before["after"] == "dissolve":  # the transition's frames, relative to the sample
            cut["transition"] = [before["end_frame"] - start, after["start_frame"] - start]
        cuts.append(cut)
    return {
        "id": sample_id(target, shots[0]["index"]),
        "target": target,
        "shots": [s["index"] for s in shots],
        "start_frame": start, "end_frame": shots[-1]["end_frame"],
        "start": shots[0]["start"], "end": shots[-1]["end"],
        "seconds": round(shots[-1]["end"] - shots[0]["start"], 4),
        "cuts": cuts,
    }
