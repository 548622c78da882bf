"""The options every LLM storyboarder takes in cinema.yaml (story.options). A module of
its own, so the prompt, schema and validation modules read them without importing the
storyboarders that use them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

from cinema_cli.project.schema import Script


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
