"""The gemini storyboarder: the script to a storyboard (and one shot to a rewritten
shot) with Gemini's structured output, through google-genai.

The key is read from the environment only when a request is made, so a project
configured for gemini still opens, shows its status and renders a current storyboard
without one.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING

from pydantic import Field

from cinema_cli.project.schema import RuntimeSettings
from cinema_cli.story.base import storyboarders
from cinema_cli.story.llm import LLMOptions, LLMStoryboarder
from cinema_cli.story.repair import Turn

if TYPE_CHECKING:
    from cinema_cli.story.gemini_transport import GeminiTransport


class GeminiOptions(LLMOptions):
    model: str = Field("gemini-2.5-flash", min_length=1)
    # How to reach the model does not change what it writes, so these stay out of the
    # storyboard's recipe (exclude=True): changing them makes nothing stale.
    base_url: str | None = Field(None, exclude=True)  # else GOOGLE_GEMINI_BASE_URL, else Google's
    timeout: float = Field(120.0, gt=0, le=3600, exclude=True)  # seconds per request
    retries: int = Field(4, ge=0, le=10, exclude=True)  # on 429 and 5xx
    backoff: float = Field(2.0, gt=0, le=60, exclude=True)  # first wait; doubles each retry


@storyboarders.register
class GeminiStoryboarder(LLMStoryboarder):
    name = "gemini"
    version = "1"
    Options = GeminiOptions
    who = "Gemini"

    @cached_property
    def transport(self) -> GeminiTransport:
        # google-genai takes a second to import: load it only when a request is made.
        from cinema_cli.story.gemini_transport import GeminiTransport

        o = self.options
        return GeminiTransport(model=o.model, base_url=o.base_url, timeout=o.timeout,
                               retries=o.retries, backoff=o.backoff)

    def chat(self, turns: Sequence[Turn], schema: dict, runtime: RuntimeSettings) -> str:
        return self.transport.generate(turns, schema)
