"""The local storyboarder's plumbing, on tiny causal LMs built here with no download:
a prompt goes in through the tokenizer (with or without a chat template) and
`generate`, and a validated storyboard or a clear error comes out.

Two models: a random one (its answers are noise, so the repair turns run out and the
error is clear), and a scripted one with no layers whose logits depend only on the
current token, wired to answer one given storyboard and stop.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from cinema_cli.cli.app import app
from cinema_cli.project.create import create_project
from cinema_cli.project.project import Project
from cinema_cli.story.base import shot_seed
from cinema_cli.runtime.torch_compat import prepare_torch
from cinema_cli.story.local import LocalOptions, LocalStoryboarder

# Before transformers: see cinema_cli/runtime/torch_compat.py.
prepare_torch()

import torch  # noqa: E402


SCRIPT = """\
title: Night Ferry
characters:
  - name: Ana
    description: woman in her 30s, red raincoat
scenes:
  - id: dock
    location: a wooden ferry dock
    beats:
      - <Ana> runs along the dock
      - the ferry pulls away
"""
ANSWER = {"shots": [
    {"id": "s01", "scene": "dock", "caption": "<Ana> runs along a wooden dock at dusk, wide, eye level.",
     "characters": ["Ana"], "camera": "wide, pan-right", "duration": 2, "transition": "cut", "dialogue": None},
    {"id": "s02", "scene": "dock", "caption": "A small ferry pulls away into blue mist, lanterns glowing.",
     "characters": [], "camera": "extreme-wide, static", "duration": 3, "transition": "cut", "dialogue": None},
]}
CHAT_TEMPLATE = ("{% for m in messages %}{{ m['role'] }}: {{ m['content'] }}\n{% endfor %}"
                 "{% if add_generation_prompt %}assistant: {% endif %}")
EOS = 1


@pytest.fixture(autouse=True)
def offline_hub(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")


def char_tokenizer(extra: tuple[str, ...] = (), chat_template: str | None = None):
    """One token per character (plus `extra` whole-string tokens), from an in-memory vocabulary."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    chars = [chr(c) for c in range(32, 127)] + ["\n"]
    vocab = {token: i for i, token in enumerate(["<unk>", "<eos>", *chars])}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), "isolated")
    core.decoder = decoders.Fuse()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", eos_token="<eos>")
    tokenizer.add_tokens(list(extra))
    if chat_template:
        tokenizer.chat_template = chat_template
    return tokenizer


def save(model, tokenizer, folder: Path) -> Path:
    model.save_pretrained(folder)  # safetensors
    tokenizer.save_pretrained(folder)
    return folder


def random_model(folder: Path, positions: int = 8192) -> Path:
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = char_tokenizer()
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=positions, n_embd=32, n_layer=1, n_head=2,
                        bos_token_id=EOS, eos_token_id=EOS)
    return save(GPT2LMHeadModel(config), tokenizer, folder)


def scripted_model(folder: Path, answer: str) -> Path:
    """No layers, no position signal: each token's logits depend on that token alone.
    Every token leads to the one token spelling `answer`, and that token to <eos>."""
    from transformers import GPT2Config, GPT2LMHeadModel

    tokenizer = char_tokenizer(extra=(answer,), chat_template=CHAT_TEMPLATE)
    said = tokenizer.convert_tokens_to_ids(answer)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=8192, n_embd=8, n_layer=0, n_head=1,
                        bos_token_id=EOS, eos_token_id=EOS, tie_word_embeddings=False)
    model = GPT2LMHeadModel(config)
    with torch.no_grad():
        model.transformer.wpe.weight.zero_()
        embed = model.transformer.wte.weight
        embed.zero_()
        embed[:, 0] = 1.0
        embed[said, 0] = -1.0  # after layer norm: the sign of feature 0 says "answered yet?"
        head = model.lm_head.weight
        head.zero_()
        head[said, 0] = 10.0
        head[EOS, 0] = -10.0
    return save(model, tokenizer, folder)


def make_project(tmp_path: Path, options: str) -> Path:
    root = create_project(tmp_path / "film")
    (root / "script.yaml").write_text(SCRIPT, encoding="utf-8")
    (root / "cinema.yaml").write_text(
        "resolution: {width: 128, height: 64}\nfps: 8\n"
        f"story:\n  backend: local\n  options: {options}\n", encoding="utf-8")
    return root


def cinema(project: Path, *args: str, rc: int = 0):
    result = CliRunner().invoke(app, [*args, "-p", str(project)])
    assert result.exit_code == rc, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}\n{result.exception!r}"
    return result


def snapshot(project: Path) -> dict[str, bytes]:
    return {str(p.relative_to(project)): p.read_bytes() for p in sorted(project.rglob("*")) if p.is_file()
            and p.name != "lock"}


def test_scripted_model_gives_a_validated_storyboard(tmp_path):
    folder = scripted_model(tmp_path / "model", json.dumps(ANSWER))
    root = make_project(tmp_path, f"{{model_path: '{folder}', max_new_tokens: 4}}")
    cinema(root, "story")
    board = yaml.safe_load((root / "storyboard.yaml").read_text())["shots"]
    assert board == [{**{k: v for k, v in s.items() if v is not None}, "seed": shot_seed(0, s["id"])}
                     for s in ANSWER["shots"]]


def test_the_prompt_goes_in_through_the_chat_template(tmp_path):
    folder = scripted_model(tmp_path / "model", json.dumps(ANSWER))
    project = Project(make_project(tmp_path, "{}"))
    storyboarder = LocalStoryboarder(LocalOptions(model_path=folder, max_new_tokens=4))
    model, tokenizer = storyboarder._load(project.config.runtime)
    prompts: list[str] = []
    model.register_forward_pre_hook(
        lambda module, args, kwargs: prompts.append(tokenizer.decode(kwargs["input_ids"][0])), with_kwargs=True)
    board = storyboarder.storyboard(project.script, project.config)
    assert [s.id for s in board.shots] == ["s01", "s02"]
    prompt = prompts[0]
    assert prompt.startswith("user: You are the storyboard artist") and prompt.endswith("\nassistant: ")
    assert "<Ana>: woman in her 30s, red raincoat" in prompt and "about 2 shots" in prompt


def test_random_model_is_a_clear_error_and_changes_nothing(tmp_path):
    folder = random_model(tmp_path / "model")
    root = make_project(tmp_path, f"{{model_path: '{folder}', max_new_tokens: 8}}")
    cinema(root, "story", "--llm", "offline")
    before = snapshot(root)
    result = cinema(root, "story", "--force", rc=1)
    assert "the local model gave no valid storyboard in 3 tries" in result.stderr
    assert "nothing was written" in result.stderr
    assert snapshot(root) == before


def test_prompt_beyond_the_context_is_a_clear_error(tmp_path):
    folder = random_model(tmp_path / "model", positions=256)
    root = make_project(tmp_path, f"{{model_path: '{folder}', max_new_tokens: 8}}")
    result = cinema(root, "story", rc=1)
    assert "beyond the local model's context of 256" in result.stderr
    assert not (root / "storyboard.yaml").exists()


@pytest.mark.parametrize("path, message", [
    ("/nonexistent/model", "is not a transformers model folder"),
    ("models/mine", "story.options.model_path: must be an absolute path"),
])
def test_bad_model_path_is_bad_input(tmp_path, path, message):
    root = make_project(tmp_path, f"{{model_path: '{path}'}}")
    result = cinema(root, "story", rc=2)
    assert message in result.stderr
    assert not (root / "storyboard.yaml").exists()
