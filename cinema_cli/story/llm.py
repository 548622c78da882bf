"""What every LLM storyboarder shares: its options in cinema.yaml (story.options,
`llm_options`) and the flow prompt -> reply -> validation -> repair turns -> storyboard. A backend only
supplies `chat`, one request to its model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from cinema_cli.project.schema import CinemaConfig, RuntimeSettings, Script, Shot, Storyboard
from cinema_cli.story import llm_schema, prompts
from cinema_cli.story.repair import Turn, ask_until_valid
from cinema_cli.story.llm_options import LLMOptions
from cinema_cli.story.rewrite import rewrite_shot
from cinema_cli.story.validate import storyboard_from_reply


class LLMStoryboarder:
    """Base of the LLM backends; `who` names the model in messages."""

    notice: ClassVar[str | None] = None
    who: ClassVar[str]
    options: LLMOptions

    def __init__(self, options: LLMOptions) -> None:
        self.options = options

    def chat(self, turns: Sequence[Turn], schema: dict, runtime: RuntimeSettings) -> str:
        raise NotImplementedError

    def storyboard(self, script: Script, config: CinemaConfig) -> Storyboard:
        return ask_until_valid(
            lambda turns, schema: self.chat(turns, schema, config.runtime),
            prompts.storyboard_prompt(script, config, self.options),
            llm_schema.storyboard_schema(script, self.options),
            lambda reply: storyboard_from_reply(reply, script, config, self.options),
            self.who, "storyboard",
        )

    def rewrite_shot(self, script: Script, config: CinemaConfig, board: Storyboard,
                     shot_id: str, instruction: str) -> Shot:
        return rewrite_shot(
            lambda turns, schema: self.chat(turns, schema, config.runtime),
            self.who, script, config, self.options, board, shot_id, instruction,
        )
