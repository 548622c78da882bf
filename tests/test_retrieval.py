"""Retrieval: the embedders, the selection (near-duplicates, recency tie-break, the floor)
and the embedding index. Real code throughout; the learned embedders run open_clip and
transformers models with seeded random weights built offline (they test the plumbing,
not the quality of retrieval)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from cinema_cli.memory.candidates import Candidate, Query
from cinema_cli.memory.embedders.base import embedders
from cinema_cli.memory.embedders.lexical import LexicalEmbedder
from cinema_cli.memory.goldenmem import schedule
from cinema_cli.memory.index import EmbeddingIndex
from cinema_cli.memory.select import NEAR_TIE, assign, choose, rank
from cinema_cli.memory.signature import image_signature, signatures
from cinema_cli.pipeline import Pipeline
from cinema_cli.project.create import create_project
from cinema_cli.project.project import Project
from cinema_cli.project.schema import MemorySettings, Script
from cinema_cli.project.yamlio import load_model
from cinema_cli.story.offline import OfflineOptions, OfflineStoryboarder

ROOT = Path(__file__).resolve().parents[1]
TINY_CLIP = {"model": "cinema-tiny-clip", "weights": "random"}


def candidate(shot: str, order: int, path: Path | None = None, **fields) -> Candidate:
    values = dict(shot=shot, path=path or Path(f"{shot}.png"), digest=f"digest-{shot}", caption="",
                  characters=frozenset(), location=None, order=order)
    return Candidate(**{**values, **fields})


def unit(*values: float) -> np.ndarray:
    v = np.array(values, np.float32)
    return v / np.linalg.norm(v)


# ---------------------------------------------------------------- lexical


def heist_board():
    script = load_model(ROOT / "examples" / "heist" / "script.yaml", Script)
    from cinema_cli.project.schema import CinemaConfig

    return script, OfflineStoryboarder(OfflineOptions()).storyboard(script, CinemaConfig())


def lexical_ranking(shot_id: str) -> list[str]:
    script, board = heist_board()
    shots = board.shots[: board.index(shot_id)]
    candidates = [
        candidate(s.id, i, caption=s.caption, characters=frozenset(s.characters),
                  location=script.scene(s.scene).location)
        for i, s in enumerate(shots)
    ]
    shot = board.shot(shot_id)
    query = Query(shot.caption, frozenset(shot.characters), script.scene(shot.scene).location)
    scores = LexicalEmbedder(MemorySettings(), ROOT, "cpu").scores(query, candidates, None)
    return [candidates[i].shot for i in rank(candidates, scores)]


def test_lexical_takes_the_heist_flashback_back_to_the_garage():
    """s10 is a flashback to the garage of s01-s03, after four vault shots with Mara in
    them: the place outranks both the people and recency."""
    _, board = heist_board()
    assert [s.scene for s in board.shots[:3]] == ["garage"] * 3
    assert board.shot("s10").scene == "garage-flashback"
    assert set(lexical_ranking("s10")[:3]) == {"s01", "s02", "s03"}
    # Its second shot (Mara alone) remembers Mara in the garage, then the flashback's first shot.
    assert lexical_ranking("s11")[:4] == ["s03", "s10", "s01", "s02"]


def test_lexical_needs_no_weights_and_is_the_default():
    from cinema_cli.memory.planner import embedder_name

    assert embedder_name(MemorySettings(), ROOT) == "lexical"
    assert embedder_name(MemorySettings(weights="random"), ROOT) == "clip"
    assert embedder_name(MemorySettings(model="hf-hub:org/repo"), ROOT) == "clip"
    assert embedder_name(MemorySettings(embedder="text", weights="random"), ROOT) == "text"
    assert embedders.names() == ["clip", "lexical", "text"]


# ---------------------------------------------------------------- selection


def test_relevance_ranks_and_recency_only_breaks_near_ties():
    cands = [candidate("s01", 0), candidate("s02", 1), candidate("s03", 2), candidate("s04", 3)]
    scores = np.array([0.9, 0.5, 0.5 + NEAR_TIE / 2, 0.2])
    assert rank(cands, scores) == [0, 2, 1, 3]  # s01 first although oldest; s03 (newer) before s02
    scores = np.array([0.9, 0.5, 0.5 + 3 * NEAR_TIE, 0.2])
    assert rank(cands, scores) == [0, 2, 1, 3]  # a real gap: relevance, not recency
    scores = np.array([0.5, 0.5, 0.5, 0.5])
    assert rank(cands, scores) == [3, 2, 1, 0]  # all tied: the most recent first


def test_choose_skips_duplicates_same_shot_and_the_unrelated():
    cands = [candidate("s01", 0), candidate("s02", 1), candidate("s02", 2), candidate("s03", 3),
             candidate("s04", 4), candidate("s05", 5)]
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.0])
    sigs = np.stack([unit(1, 0, 0), unit(0, 1, 0), unit(0, 0, 1), unit(1, 0.05, 0), unit(0, 0, 1), unit(1, 1, 1)])
    # s02's second frame: same shot; s03: a near-duplicate of s01; s05: unrelated (0).
    assert choose(cands, scores, sigs, limit=8, threshold=0.95) == [0, 1, 4]
    assert choose(cands, scores, sigs, limit=2, threshold=0.95) == [0, 1]
    assert choose(cands, scores, sigs, limit=8, threshold=1.0) == [0, 1, 3, 4]  # only exact copies are duplicates
    assert choose(cands, scores, sigs, limit=8, threshold=0.95, floor=0.55) == [0, 1]


def test_scales_go_by_relevance_or_by_recency():
    cands = [candidate("s01", 0), candidate("s02", 1), candidate("@Mara", -1)]
    slots = schedule(512, 1024, 3, min_side=1).context
    by_relevance = assign(cands, [0.9, 0.5, 0.7], [0, 2, 1], slots, "relevance")
    assert [(c.candidate.shot, c.slot) for c in by_relevance] == list(zip(["s01", "@Mara", "s02"], slots))
    by_recency = assign(cands, [0.9, 0.5, 0.7], [0, 2, 1], slots, "recency")
    assert [c.candidate.shot for c in by_recency] == ["s02", "s01", "@Mara"]  # references have no time: last
    assert [c.score for c in by_recency] == [0.5, 0.9, 0.7]


def panel(path: Path, seed: int, noise: float = 0.0, base: np.ndarray | None = None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    pixels = base if base is not None else rng.integers(0, 255, (8, 16, 3)).repeat(16, 0).repeat(16, 1)
    noisy = np.clip(pixels + rng.normal(0, noise, pixels.shape), 0, 255).astype(np.uint8)
    Image.fromarray(noisy).save(path)
    return pixels


def test_picture_signatures_find_near_duplicates(tmp_path):
    base = panel(tmp_path / "a.png", 1)
    panel(tmp_path / "a-again.png", 2, noise=6, base=base)  # the same set-up, redrawn
    panel(tmp_path / "b.png", 3)
    a, again, b = (image_signature(tmp_path / n) for n in ("a.png", "a-again.png", "b.png"))
    assert float(a @ again) > 0.95
    assert float(a @ b) < 0.5
    Image.new("L", (64, 32), 128).save(tmp_path / "flat.png")
    assert not image_signature(tmp_path / "flat.png").any()  # a flat picture duplicates nothing


# ---------------------------------------------------------------- the index


def test_the_index_embeds_each_content_once_and_persists(tmp_path):
    calls: list[list[str]] = []

    def compute(keys):
        def embed(missing):
            calls.append([keys[i] for i in missing])
            return np.stack([np.full(4, float(len(keys[i]))) for i in missing])
        return embed

    index = EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp")
    keys = ["aa", "bbb", "c"]
    first = index.vectors("model-1", keys, compute(keys))
    assert calls == [["aa", "bbb", "c"]] and first[:, 0].tolist() == [2, 3, 1]
    index.vectors("model-1", keys, compute(keys))
    assert len(calls) == 1  # nothing new
    changed = ["aa", "dddd", "c"]
    index.vectors("model-1", changed, compute(changed))
    assert calls[-1] == ["dddd"]  # only the changed one
    index.vectors("model-2", keys, compute(keys))
    assert calls[-1] == keys  # another model's vectors never mix in

    reopened = EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp")
    again = reopened.vectors("model-1", changed, compute(changed))
    assert len(calls) == 3 and again[:, 0].tolist() == [2, 4, 1]  # read back from disk
    assert not list((tmp_path / "tmp").iterdir())  # written atomically: no strays

    for file in (tmp_path / "memory").iterdir():
        file.write_bytes(b"garbage")
    EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp").vectors("model-1", keys, compute(keys))
    assert calls[-1] == keys  # an unreadable index only costs a re-embedding


def test_signatures_go_through_the_index(tmp_path):
    panel(tmp_path / "a.png", 1)
    cands = [candidate("s01", 0, tmp_path / "a.png")]
    index = EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp")
    first = signatures(cands, index)
    (tmp_path / "a.png").unlink()  # remembered by content hash: the file is not read again
    assert np.array_equal(signatures(cands, EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp")), first)


# ---------------------------------------------------------------- learned embedders, end to end


def small_heist(parent: Path, memory: dict) -> Project:
    root = create_project(parent / "heist", "heist")
    config = {"resolution": {"width": 128, "height": 64}, "fps": 8,
              "memory": {"vae_factor": 4, "min_side": 2, **memory}}
    (root / "cinema.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return Project.open(root)


def plan(project: Project, force=()) -> list[str]:
    project = Project.open(project.root)  # fresh: it re-reads the project files
    with project.lock():
        return Pipeline(project).run(until="keyframes", force=force).rebuilt.keyframes


def contexts(project: Project) -> dict[str, list[dict]]:
    status = Pipeline(Project.open(project.root)).status()
    return {row.id: row.context for row in status.shots}


@pytest.mark.parametrize("name", ["clip", "text"])
def test_learned_embedders_plan_a_film_with_random_tiny_open_clip(tmp_path, monkeypatch, name):
    from cinema_cli.memory.embedders.openclip import OpenClip

    counted = {"images": 0, "texts": 0}
    encode_images, encode_texts = OpenClip.encode_images, OpenClip.encode_texts

    def count_images(self, paths):
        counted["images"] += len(paths)
        return encode_images(self, paths)

    def count_texts(self, texts):
        counted["texts"] += len(texts)
        return encode_texts(self, texts)

    monkeypatch.setattr(OpenClip, "encode_images", count_images)
    monkeypatch.setattr(OpenClip, "encode_texts", count_texts)
    project = small_heist(tmp_path, {"embedder": name, **TINY_CLIP})
    built = plan(project)
    shots = [s.id for s in Project.open(project.root).storyboard.shots]
    assert built == shots
    found = contexts(project)
    assert any(found.values())
    for shot_id, context in found.items():
        earlier = shots[: shots.index(shot_id)]
        assert all(c["shot"] in earlier and np.isfinite(c["score"]) for c in context)
    n = len(shots)
    if name == "clip":  # each keyframe's picture is embedded once, when it is first a candidate
        assert counted["images"] == n - 1
        assert counted["texts"] == n - 1  # the query captions (s01 has no candidates)
    else:  # each caption once, plus one query per keyframe with candidates
        assert counted["images"] == 0
        assert counted["texts"] == (n - 1) + (n - 1)

    # Edit one caption and redraw the last keyframe: of all its candidates, only the one
    # redrawn picture (or changed caption) is embedded again.
    board = yaml.safe_load((project.root / "storyboard.yaml").read_text())
    board["shots"][2]["caption"] = "<Mara> cracks the vault, sweat on her brow. A cluttered garage, night."
    (project.root / "storyboard.yaml").write_text(yaml.safe_dump(board, sort_keys=False))
    before = dict(counted)
    plan(project, force=[shots[-1]])
    assert counted["images"] - before["images"] == (1 if name == "clip" else 0)
    if name == "text":
        queries = counted["texts"] - before["texts"] - 1  # less the one new caption
        assert queries >= 1  # the queries of what was redrawn: s03, what remembered it, s14


def test_text_embedder_with_a_local_transformers_model(tmp_path):
    from cinema_cli.runtime.torch_compat import prepare_torch

    prepare_torch()
    from transformers import BertConfig, BertModel, BertTokenizer

    words = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "mara", "garage", "vault", "the", "door", "dex"]
    (tmp_path / "vocab.txt").write_text("\n".join(words) + "\n")
    folder = tmp_path / "encoder"
    BertTokenizer(str(tmp_path / "vocab.txt")).save_pretrained(folder)
    config = BertConfig(vocab_size=len(words), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder)

    from cinema_cli.memory.planner import embedder_name

    settings = MemorySettings(weights=str(folder))
    assert embedder_name(settings, tmp_path) == "text"  # auto: a transformers folder is a text model
    embedder = embedders.get("text")(settings, tmp_path, "cpu")
    assert embedder.identity.startswith("text-1:transformers:")
    cands = [candidate("s01", 0, caption="the garage door"), candidate("s02", 1, caption="the vault"),
             candidate("@Dex", -1, caption="dex")]
    index = EmbeddingIndex(tmp_path / "memory", tmp_path / "tmp")
    scores = embedder.scores(Query("<Mara> at the garage door", frozenset({"Mara"}), "garage"), cands, index)
    assert scores.shape == (3,) and np.isfinite(scores).all()
    # The same caption embeds to the same vector, so it scores (close to) 1 against itself.
    again = embedder.scores(Query("the garage door", frozenset(), "garage"), cands, index)
    assert again[0] == pytest.approx(1.0, abs=1e-5)


def test_weights_are_found_offline_or_named(tmp_path):
    from cinema_cli.errors import BadInput
    from cinema_cli.memory.embedders.openclip import OpenClip
    from cinema_cli.memory.weights import open_clip_module, resolve_clip_weights
    from cinema_cli.runtime.tiny import seeded

    with pytest.raises(BadInput, match="needs weights for ViT-B-32"):
        resolve_clip_weights("ViT-B-32", None, tmp_path)
    with pytest.raises(BadInput, match="neither a file .* nor an open_clip pretrained tag"):
        resolve_clip_weights("ViT-B-32", "nope.safetensors", tmp_path)
    with pytest.raises(BadInput, match="not an open_clip model"):
        resolve_clip_weights("ViT-Nope", "random", tmp_path)

    # A local checkpoint (safetensors) of the tiny model, relative to the project.
    from safetensors.torch import save_file

    with seeded(7):
        model = open_clip_module().create_model("cinema-tiny-clip")
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, tmp_path / "clip.safetensors")
    found = resolve_clip_weights("cinema-tiny-clip", "clip.safetensors", tmp_path)
    assert found.checkpoint == str(tmp_path / "clip.safetensors") and not found.random
    loaded = OpenClip(found, "cpu")
    texts = loaded.encode_texts(["the garage", "the vault"])
    import torch

    with torch.inference_mode():  # the very weights that were saved
        expected = model.encode_text(open_clip_module().get_tokenizer("cinema-tiny-clip")(["the garage", "the vault"]))
    expected = (expected / expected.norm(dim=-1, keepdim=True)).numpy()
    assert np.allclose(texts, expected, atol=1e-5)
