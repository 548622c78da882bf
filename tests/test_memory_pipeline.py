"""The memory in the product, through the real `cinema` command: each keyframe's context
in its sidecar, `status`, `shot` and `plan --explain`; staleness that follows the context
exactly; memory settings in the recipe; reference images as anchors; `eval retrieval`
on the shipped labels; and bad memory input refused with its cinema.yaml line.

The heist example at 128x64 @ 8 fps, with `vae_factor: 4, min_side: 2` so a frame that
small still has room for three context frames (16 -> 9, 5, 3 latent rows)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml
from PIL import Image
from test_render import (
    CINEMA,
    artifact_files,
    cinema,
    cinema_json,
    expected_rewrites,
    ids,
    retrievers,
    rewritten,
    sidecar_of,
)

CONFIG = """\
resolution: {width: 128, height: 64}
fps: 8
memory:
  vae_factor: 4
  min_side: 2
"""


@pytest.fixture(scope="session")
def planned(tmp_path_factory) -> Path:
    """The heist, small, storyboarded and planned once per worker. Do not modify: copy."""
    parent = tmp_path_factory.mktemp("memory")
    cinema("new", "heist", "--example", "heist", cwd=parent)
    project = parent / "heist"
    (project / "cinema.yaml").write_text(CONFIG, encoding="utf-8")
    assert cinema_json("plan", cwd=project)["ok"] is True
    return project


@pytest.fixture
def heist(planned, tmp_path) -> Path:
    project = tmp_path / "heist"
    shutil.copytree(planned, project, symlinks=True)
    return project


def context_of(project: Path) -> dict[str, list[dict]]:
    return {i: sidecar_of(project, i)["context"] for i in ids(project)}


# ---------------------------------------------------------------- where the context shows


def test_the_context_shows_in_sidecar_status_shot_and_plan_explain(heist):
    recorded = context_of(heist)
    assert recorded["s01"] == []  # nothing before the first shot
    for shot_id, context in recorded.items():
        earlier = ids(heist)[: ids(heist).index(shot_id)]
        for entry in context:
            assert set(entry) == {"shot", "score", "size", "tokens"}
            assert entry["shot"] in earlier and entry["tokens"] > 0
        # GoldenMem sizes, largest first: 16 x 32 latent -> 9 x 18, 5 x 10, 3 x 6 (x 4 pixels).
        assert [e["size"] for e in context] == [[36, 72], [20, 40], [12, 24]][: len(context)]
        assert [e["tokens"] for e in context] == [4 * 9, 2 * 5, 1 * 3][: len(context)]
    # The flashback (s10) remembers the garage, not the vault shots just before it.
    assert {e["shot"] for e in recorded["s10"]} == {"s01", "s02", "s03"}

    status = cinema_json("status", cwd=heist)
    assert {row["id"]: row["context"] for row in status["shots"]} == recorded
    shown = cinema_json("shot", "s10", cwd=heist)
    assert shown["status"]["context"] == recorded["s10"]
    explained = cinema_json("plan", "--explain", cwd=heist)
    assert explained["rebuilt"]["keyframes"] == [] and explained["context"] == recorded

    table = cinema("plan", "--explain", cwd=heist).stdout
    assert "context" in table and "36 x 72" in table
    for entry in recorded["s10"]:
        assert re.search(rf"{entry['shot']}\s.*{entry['score']:.3f}", table), table
    text = cinema("shot", "s10", cwd=heist).stdout
    assert re.search(r"context\s+s0[123] \(", text), text


# ---------------------------------------------------------------- staleness follows the context


def test_staleness_follows_the_context_exactly(heist):
    """Redrawing s03 redoes exactly the keyframes that retrieved it (the sketch draws them
    byte-identical, so their videos stay); a keyframe that did not retrieve it is untouched."""
    cinema_json("render", cwd=heist)
    dependents = retrievers(heist, "s03")
    assert dependents and "s10" in dependents
    untouched = [i for i in ids(heist) if i not in ("s03", *dependents)]
    assert untouched
    before = artifact_files(heist)

    cinema("shot", "s03", "--caption", "<Mara> steps out of the shadow, sweat on her brow. A cluttered garage, night.",
           cwd=heist)
    rendered = cinema_json("render", cwd=heist)
    assert rendered["rebuilt"] == {"story": False, "keyframes": ["s03", *dependents], "shots": ["s03"], "film": True}
    after = artifact_files(heist)
    assert rewritten(before, after) == expected_rewrites(rendered["rebuilt"])
    assert all(after[f"keyframes/{i}.json"] == before[f"keyframes/{i}.json"] for i in untouched)

    # A keyframe replaced by hand: what remembered it is stale, for that reason, and redone.
    dependents = retrievers(heist, "s10")
    assert dependents == ["s11"]
    Image.new("RGB", (128, 64), (200, 40, 90)).save(heist / "keyframes" / "s10.png")
    rows = {r["id"]: r for r in cinema_json("status", cwd=heist)["shots"]}
    assert (rows["s11"]["keyframe"], rows["s11"]["stale_because"][0]) == ("stale", "context keyframe s10 changed")
    assert all(r["keyframe"] == "done" for i, r in rows.items() if i != "s11")
    rendered = cinema_json("render", cwd=heist)
    assert rendered["rebuilt"] == {"story": False, "keyframes": ["s11"], "shots": ["s10"], "film": True}
    assert cinema_json("render", cwd=heist)["rebuilt"]["keyframes"] == []


def test_memory_settings_are_part_of_the_recipe(heist):
    config = heist / "cinema.yaml"
    config.write_text(CONFIG + "  max_context: 1\n  scale_order: recency\n", encoding="utf-8")
    rows = cinema_json("status", cwd=heist)["shots"]
    assert all("memory changed" in r["stale_because"] for r in rows)
    assert cinema_json("plan", cwd=heist)["rebuilt"]["keyframes"] == ids(heist)
    assert all(len(c) <= 1 for c in context_of(heist).values())

    config.write_text(CONFIG + "  scale_order: recency\n", encoding="utf-8")
    cinema_json("plan", cwd=heist)
    for context in context_of(heist).values():  # the most recent frame gets the largest size
        order = [ids(heist).index(e["shot"]) for e in context]
        assert order == sorted(order, reverse=True)


def test_reference_images_are_identity_anchors(heist):
    (heist / "characters").mkdir(exist_ok=True)
    Image.new("RGB", (64, 64), (180, 120, 90)).save(heist / "characters" / "mara.png")
    script = yaml.safe_load((heist / "script.yaml").read_text())
    mara = next(c for c in script["characters"] if c["name"] == "Mara")
    mara["references"] = ["characters/mara.png"]
    (heist / "script.yaml").write_text(yaml.safe_dump(script, sort_keys=False), encoding="utf-8")
    cinema_json("plan", cwd=heist)

    board = yaml.safe_load((heist / "storyboard.yaml").read_text())["shots"]
    anchored = [s["id"] for s in board if any(e["shot"] == "@Mara" for e in sidecar_of(heist, s["id"])["context"])]
    assert anchored and all("Mara" in next(s for s in board if s["id"] == i)["characters"] for i in anchored)
    entry = next(e for e in sidecar_of(heist, anchored[0])["context"] if e["shot"] == "@Mara")
    assert entry["path"] == "characters/mara.png"
    table = cinema("plan", "--explain", cwd=heist).stdout
    assert "@Mara (characters/mara.png)" in table
    # An anchor is checked by its file's hash, not as a keyframe: all is current.
    assert all(r["keyframe"] == "done" for r in cinema_json("status", cwd=heist)["shots"])

    # A new look for Mara: every Mara shot is redrawn (her look is part of each recipe).
    Image.new("RGB", (64, 64), (20, 120, 200)).save(heist / "characters" / "mara.png")
    rows = {r["id"]: r for r in cinema_json("status", cwd=heist)["shots"]}
    for shot_id in anchored:
        assert rows[shot_id]["keyframe"] == "stale" and "cast changed" in rows[shot_id]["stale_because"]
    assert set(anchored) <= set(cinema_json("plan", cwd=heist)["rebuilt"]["keyframes"])


# ---------------------------------------------------------------- eval retrieval


def test_eval_retrieval_on_the_shipped_heist_labels(heist):
    labels = heist / "retrieval-labels.yaml"
    assert labels.is_file()  # `cinema new --example heist` brings the fixture along
    report = cinema_json("eval", "retrieval", "--labels", "retrieval-labels.yaml", cwd=heist)
    assert report["ok"] is True and report["k"] == 4 and report["embedder"] == "lexical-1"
    rows = {r["shot"]: r for r in report["shots"]}
    assert set(rows) == set(yaml.safe_load(labels.read_text()))
    assert rows["s10"]["recall"] == 1.0  # the flashback finds the garage
    assert report["recall_at_k"] == 1.0
    narrow = cinema_json("eval", "retrieval", "--labels", "retrieval-labels.yaml", "--k", "2", cwd=heist)
    assert all(len(r["retrieved"]) <= 2 for r in narrow["shots"])
    assert 0.5 < narrow["recall_at_k"] <= 1.0
    table = cinema("eval", "retrieval", "--labels", "retrieval-labels.yaml", cwd=heist).stdout
    assert "recall@4: 1.000" in table


@pytest.mark.parametrize("labels, message", [
    (None, r"nope\.yaml: file not found"),
    ("s10: [s01, s99]\n", r"labels\.yaml:1: s10\.1: no shot or reference 's99'"),
    ("s02: [s01]\ns99: [s01]\n", r"labels\.yaml:2: s99: no shot 's99'"),
    ("s03: [s05]\n", r"labels\.yaml:1: s03\.0: s05 does not come before s03"),
    ("- s01\n", r"labels\.yaml:1: expected a mapping"),
])
def test_bad_labels_are_refused(heist, labels, message):
    name = "nope.yaml" if labels is None else "labels.yaml"
    if labels is not None:
        (heist / name).write_text(labels, encoding="utf-8")
    result = cinema("eval", "retrieval", "--labels", name, cwd=heist, rc=2)
    assert re.search(message, result.stderr), result.stderr


def test_eval_needs_the_keyframes_and_known_embedders(heist):
    (heist / "keyframes" / "s02.png").unlink()
    result = cinema("eval", "retrieval", "--labels", "retrieval-labels.yaml", cwd=heist, rc=2)
    assert "s02" in result.stderr and "cinema plan" in result.stderr
    result = cinema("eval", "retrieval", "--labels", "retrieval-labels.yaml", "--embedder", "nope", cwd=heist, rc=2)
    assert "unknown embedder 'nope'" in result.stderr
    result = cinema("eval", "retrieval", "--labels", "retrieval-labels.yaml", "--embedder", "clip", cwd=heist, rc=2)
    assert re.search(r"cinema\.yaml:\d+: memory\.\w+: the embedder needs weights for ViT-B-32", result.stderr)


# ---------------------------------------------------------------- bad memory settings


@pytest.mark.parametrize("memory, message", [
    ("  group_size: 0\n", r"cinema\.yaml:6: memory\.group_size: Input should be greater than or equal to 1"),
    ("  scale_order: random\n", r"cinema\.yaml:6: memory\.scale_order: Input should be 'relevance' or 'recency'"),
    ("  budget: 100\n", r"cinema\.yaml:6: memory\.budget: unknown field"),
    ("  embedder: clip\n", r"cinema\.yaml:3: memory\.weights: the embedder needs weights for ViT-B-32"),
    ("  embedder: clip\n  weights: laion2b_s34b_b79k\n",
     r"cinema\.yaml:7: memory\.weights: the open_clip weights ViT-B-32/laion2b_s34b_b79k are not on this machine"),
    ("  model: hf-hub:nobody/nothing\n", r"cinema\.yaml:6: memory\.model: hf-hub:nobody/nothing is not in the"),
])
def test_bad_memory_settings_are_refused_with_their_line(heist, tmp_path, memory, message):
    """Exit 2, the line and field, and nothing written; weights are looked for in an
    empty Hugging Face cache, offline: they are missing, and never downloaded."""
    (heist / "cinema.yaml").write_text(CONFIG + memory, encoding="utf-8")
    before = artifact_files(heist)
    hf_home = tmp_path / "empty-hf-home"
    env = {**os.environ, "HF_HOME": str(hf_home), "HF_HUB_OFFLINE": "1"}
    # status builds the same memory as plan; asking both is worth it where it is cheap.
    commands = ["plan", "status"] if "weights: " not in memory else ["plan"]
    for command in commands:
        result = subprocess.run([CINEMA, command], cwd=heist, env=env, capture_output=True, text=True, timeout=120)
        assert result.returncode == 2, result.stderr
        assert re.search(message, result.stderr), result.stderr
    assert artifact_files(heist) == before
    assert not any(hf_home.rglob("*.bin")) and not any(hf_home.rglob("*.safetensors"))
