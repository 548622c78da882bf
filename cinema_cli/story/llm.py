"""What every LLM storyboarder shares: its options in cinema.yaml (story.options) and
the flow prompt -> reply -> validation -> repair turns -> storyboard. A backend only
supplies `chat`, one request to its model."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cinema_cli.project.schema import CinemaConfig, RuntimeSettings, Script, Shot, Storyboard
from cinema_cli.story import llm_schema, prompts
from cinema_cli.story.repair import Turn, ask_until_valid
from cinema_cli.story.rewrite import rewrite_shot
from cinema_cli.story.validate import storyboard_from_reply


class LLMOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    shots: int | None = Field(None, ge=1, le=500)  # target shot count; default: one per beat
    min_seconds: float = Field(1.0, gt=0, le=120)  # the range every shot's duration must be in
    max_seconds: float = Field(8.0, gt=0, le=120)

    @model_validator(mode="after")
    def _range(self) -> "LLMOptions":
        if self.min_seconds > self.max_seconds:
            raise ValueError(f"min_seconds {self.min_seconds:g} is above max_seconds {self.max_seconds:g}")
        return self

    def target_shots(self, script: Script) -> int:
        return self.shots or sum(len(scene.beats) for scene in script.scenes)


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
