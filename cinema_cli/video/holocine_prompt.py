"""HoloCine's conditioning: one prompt for the whole scene, where each shot's text lies in
it, and where the cuts fall in the one video.

The prompt is the form HoloCine was trained on:

    [global caption] <scene, cast, style>. This scene contains N shots. [per shot caption]
    <shot 1> [shot cut] <shot 2> [shot cut] ...

encoded in one text-encoder pass and zero-padded to 512 tokens, as Wan encodes any prompt.
Each text token belongs to the first character span it overlaps, spans as HoloCine's
prompter draws them: the global span runs from `[global caption]` to `[per shot caption]`;
shot 1's from `[per shot caption]` to the end of the first `[shot cut]`, each later shot's
from the end of one `[shot cut]` to the end of the next, the last one's to the end. A
span's window is its first token to one past its last, plus one more token (HoloCine's
mask includes it, and its model was trained with it); every shot also sees everything
from one past the last window on (the end-of-sequence token's neighbour and the zero
padding), so the cross-attention window of shot i is global + shot i + padding.

Frames: a scene is one video of 4t+1 frames. Every shot here is a multiple of 4 frames,
shot i starting at frame 1 + (frames of the shots before it), a 4m+1 frame, which
HoloCine's rule maps to latent frame (f - 1) // 4 + 1 = m + 1: each cut falls exactly on a
latent frame boundary. The video's frame 0 (Wan's lone first latent frame, before shot
1's first 4-frame step) is not part of any shot.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from cinema_cli.attention.layout import PromptLayout
from cinema_cli.video.wan_model import TEMPORAL

TEXT_TOKENS = 512
GLOBAL_MARK, SHOTS_MARK, CUT_MARK = "[global caption]", "[per shot caption]", "[shot cut]"


def scene_prompt(global_caption: str, shot_captions: Sequence[str]) -> str:
    caption = global_caption.strip()
    if "This scene contains" not in caption:
        caption = f"{caption} This scene contains {len(shot_captions)} shots."
    return f"{GLOBAL_MARK} {caption} {SHOTS_MARK} {f' {CUT_MARK} '.join(c.strip() for c in shot_captions)}"


def _character_spans(text: str) -> list[tuple[int, int]]:
    """[global span, shot 1 span, ...] as character offsets, HoloCine's way."""
    shots_at = text.index(SHOTS_MARK)
    spans = [(text.index(GLOBAL_MARK), shots_at)]
    start = shots_at
    for cut in re.finditer(re.escape(CUT_MARK), text):
        spans.append((start, cut.end()))
        start = cut.end()
    if start < len(text):
        spans.append((start, len(text)))
    return spans


def text_windows(tokenizer, text: str, shots: int) -> PromptLayout:
    """Where the global prompt and each shot's prompt lie in `text`'s 512 tokens (`text`
    as the tokenizer sees it, cleaned), as HoloCine's cross-attention windows."""
    from cinema_cli.errors import BadInput

    tokens = len(tokenizer(text, add_special_tokens=True)["input_ids"])
    if tokens > TEXT_TOKENS:
        raise BadInput(
            f"holocine: the scene's prompt is {tokens} tokens and does not fit the model's {TEXT_TOKENS} tokens "
            f"({shots} shots); shorten the captions or split the scene"
        )
    encoded = tokenizer(text, padding="max_length", max_length=TEXT_TOKENS, truncation=True,
                        add_special_tokens=True, return_offsets_mapping=True)
    spans = _character_spans(text)
    owner: dict[int, list[int]] = {}
    for index, (start, end) in enumerate(encoded["offset_mapping"]):
        if start == end:  # special and padding tokens belong to no span
            continue
        for which, (a, b) in enumerate(spans):
            if not (end <= a or start >= b):
                owner.setdefault(which, []).append(index)
                break
    if len(spans) != shots + 1 or any(i not in owner for i in range(shots + 1)):
        raise BadInput(f"holocine: the scene's prompt does not have {shots} shot captions: {text!r}")
    # Window = [first token, last token + 2): HoloCine's span end is one past the last token
    # and its mask keeps one token more.
    windows = [(min(owner[i]), max(owner[i]) + 2) for i in range(shots + 1)]
    tail = max(end for _, end in windows)
    padding = ((tail, TEXT_TOKENS),) if tail < TEXT_TOKENS else ()
    return PromptLayout(windows[0], tuple(windows[1:]), TEXT_TOKENS, padding)


def shot_frames(requested: int) -> int:
    """A shot's frame count: the nearest multiple of 4 (at least 4), one latent frame each."""
    return TEMPORAL * max(1, round(requested / TEMPORAL))


def cut_frames(frames: Sequence[int]) -> list[int]:
    """The video frame where each shot after the first starts (4m+1, HoloCine's form)."""
    cuts, start = [], 1
    for count in frames[:-1]:
        start += count
        cuts.append(start)
    return cuts


def latent_cuts(cuts: Sequence[int], video_frames: int) -> list[int]:
    """HoloCine's mapping of cut frames to the latent frame each shot starts at: [0, ...]."""
    latents = (video_frames - 1) // TEMPORAL + 1
    return sorted({0, *((f - 1) // TEMPORAL + 1 for f in cuts if 0 < f and (f - 1) // TEMPORAL + 1 < latents)})
