"""Rewriting one shot from a director's note: the LLM sees the shot, its neighbours and
the script, answers with the shot's new fields, and the answer goes through the same
validation and repair turns as a whole storyboard. Only that shot changes."""

from __future__ import annotations


from cinema_cli.project.schema import CinemaConfig, Script, Shot, Storyboard
from cinema_cli.story import llm_schema, prompts
from cinema_cli.story.repair import Chat, ask_until_valid
from cinema_cli.story.validate import shot_from_reply
from cinema_cli.story.llm_options import LLMOptions



def rewrite_shot(chat: Chat, who: str, script: Script, config: CinemaConfig, options: LLMOptions,
                 board: Storyboard, shot_id: str, instruction: str) -> Shot:
    old = board.shots[board.index(shot_id)]
    return ask_until_valid(
        chat,
        prompts.rewrite_prompt(script, config, options, board, shot_id, instruction),
        llm_schema.shot_schema(script, options, llm_schema.REWRITE_FIELDS),
        lambda reply: shot_from_reply(reply, script, options, old),
        who, f"rewrite of shot {shot_id}",
    )
