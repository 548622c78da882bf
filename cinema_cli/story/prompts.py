"""The LLM prompts: text templates in templates/prompts/, filled in here.

Templates use string.Template `$name` placeholders, so the JSON in them needs no
escaping, and a placeholder left unfilled is an error rather than a silent gap.
"""

from __future__ import annotations

from string import Template

from cinema_cli.project.create import data_dir
from cinema_cli.project.schema import CinemaConfig, Framing, Move, Script, Shot, Storyboard
from cinema_cli.project.yamlio import dump_yaml
from cinema_cli.story.llm_options import LLMOptions



def render(name: str, **values: object) -> str:
    """templates/prompts/NAME.txt with its placeholders filled."""
    path = data_dir("templates") / "prompts" / f"{name}.txt"
    return Template(path.read_text(encoding="utf-8")).substitute({k: str(v) for k, v in values.items()})


def storyboard_prompt(script: Script, config: CinemaConfig, options: LLMOptions) -> str:
    return render(
        "storyboard",
        shots=options.target_shots(script),
        rules=_rules(script, config, options),
        story=_story(script),
    )


def rewrite_prompt(script: Script, config: CinemaConfig, options: LLMOptions, board: Storyboard,
                   shot_id: str, instruction: str) -> str:
    index = board.index(shot_id)
    shot = board.shots[index]
    before = board.shots[index - 1] if index > 0 else None
    after = board.shots[index + 1] if index + 1 < len(board.shots) else None
    return render(
        "rewrite_shot",
        shot_id=shot_id,
        instruction=instruction.strip(),
        shot=_shot_yaml(shot),
        before=_shot_yaml(before) if before else "(none: this is the first shot)\n",
        after=_shot_yaml(after) if after else "(none: this is the last shot)\n",
        rules=_rules(script, config, options),
        story=_story(script),
    )


def repair_prompt(problems: list[str]) -> str:
    return render("repair", problems="\n".join(f"- {p}" for p in problems))


def _rules(script: Script, config: CinemaConfig, options: LLMOptions) -> str:
    return render(
        "shot_rules",
        scene_ids=", ".join(scene.id for scene in script.scenes),
        framings=", ".join(f.value for f in Framing),
        moves=", ".join(m.value for m in Move),
        min_seconds=f"{options.min_seconds:g}",
        max_seconds=f"{options.max_seconds:g}",
        shot_seconds=f"{config.shot_seconds:g}",
        cast_tags=", ".join(f"<{c.name}>" for c in script.characters) or "(none: tag nobody)",
    )


def _story(script: Script) -> str:
    cast = "\n".join(f"- <{c.name}>: {c.description or '(no description)'}" for c in script.characters)
    scenes = dump_yaml([{k: v for k, v in scene.model_dump(mode="json", exclude_none=True).items() if v != ""}
                        for scene in script.scenes])
    return render(
        "story",
        title=script.title,
        logline=script.logline or "(none)",
        style=script.style or "(none given)",
        cast=cast or "(no named characters)",
        scenes=scenes,
    )


def _shot_yaml(shot: Shot) -> str:
    return dump_yaml(shot.model_dump(mode="json", exclude={"seed", "locked"}))
