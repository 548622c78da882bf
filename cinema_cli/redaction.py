"""API keys from the environment, and removing them from text that leaves the process.

Keys travel only in request headers. A server or proxy that echoes the request can put
a key into an error, a status line or even the model's answer, so every string that
leaves cinema (messages, warnings, JSON, model output before it is validated or
written) goes through `redact`, and a text file that would contain a key is refused.
"""

from __future__ import annotations

import os
import re

# The environment variables that hold keys cinema sends somewhere.
KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
REDACTED = "[redacted]"
MIN_KEY_LENGTH = 8  # shorter values would redact ordinary words; no real key is that short
_KEY_PARAM = re.compile(r"(?i)([?&]key=)[^&\s\"']+")


def key_values() -> list[str]:
    """The key values set in the environment now, longest first."""
    values = {os.environ.get(var, "").strip() for var in KEY_VARS}
    return sorted((v for v in values if len(v) >= MIN_KEY_LENGTH), key=len, reverse=True)


def redact(text: str) -> str:
    """`text` without any key from the environment, nor any `key=` query parameter."""
    for value in key_values():
        text = text.replace(value, REDACTED)
    return _KEY_PARAM.sub(rf"\1{REDACTED}", text)


def contains_secret(text: str) -> bool:
    return any(value in text for value in key_values())
