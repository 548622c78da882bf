"""Talking to Gemini: one generateContent request through the google-genai SDK.

The key comes from GEMINI_API_KEY or GOOGLE_API_KEY and travels only in a request
header; it is never written anywhere, and every error message is redacted before it
leaves this module (a server or a proxy may echo the request). The endpoint can be
moved (story.options.base_url, else GOOGLE_GEMINI_BASE_URL). Each request has a
timeout. 429 and 5xx answers are retried with exponential backoff, or after exactly
the wait the server asks for (Retry-After, or Gemini's RetryInfo); the SDK's own
retries stay off because they ignore Retry-After.
"""

from __future__ import annotations

import email.utils
import importlib
import logging
import os
import random
import re
import time
from collections.abc import Sequence
from datetime import datetime, timezone
from typing import Any

from google.genai import Client, errors, types

from cinema_cli.errors import BackendError, BadInput, CinemaError

KEY_VARS = ("GEMINI_API_KEY", "GOOGLE_API_KEY")
BASE_URL_VAR = "GOOGLE_GEMINI_BASE_URL"
API_VERSION = "v1beta"  # the version Gemini's REST reference documents structured output in
MAX_WAIT = 60.0  # seconds; a server asking for longer gets a clear error instead of a hang
BLOCKED = {"SAFETY", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "RECITATION", "IMAGE_SAFETY"}
REDACTED = "[redacted]"

log = logging.getLogger(__name__)


def _transport_errors() -> tuple[tuple[type[Exception], ...], tuple[type[Exception], ...]]:
    """(timeouts, other network errors) of whichever of httpx / httpx2 the SDK runs on."""
    timeouts, network = [], []
    for name in ("httpx", "httpx2"):
        try:
            module = importlib.import_module(name)
        except ImportError:
            continue
        timeouts.append(module.TimeoutException)
        network.append(module.TransportError)
    return tuple(timeouts), tuple(network)


TIMEOUTS, NETWORK_ERRORS = _transport_errors()


def api_key() -> tuple[str, str]:
    """(the key, the variable it came from)."""
    for var in KEY_VARS:
        value = os.environ.get(var, "").strip()
        if value:
            return value, var
    raise BadInput(
        "the gemini storyboarder needs an API key: set GEMINI_API_KEY (or GOOGLE_API_KEY) in "
        "the environment (cinema never writes it to a file). Without a key, use the offline "
        "storyboarder: `story.backend: offline` in cinema.yaml, or `cinema story --llm offline`."
    )


class GeminiTransport:
    def __init__(self, *, model: str, base_url: str | None, timeout: float, retries: int, backoff: float):
        self.key, self.key_var = api_key()
        self.model = model
        self.base_url = base_url or os.environ.get(BASE_URL_VAR) or None
        self.timeout = timeout
        self.attempts = retries + 1
        self.backoff = backoff
        self.client = Client(
            api_key=self.key,
            http_options=types.HttpOptions(
                base_url=self.base_url, api_version=API_VERSION, timeout=round(timeout * 1000)
            ),
        )

    @property
    def where(self) -> str:
        return f"Gemini at {self.base_url}" if self.base_url else "Gemini"

    def generate(self, turns: Sequence[tuple[str, Any]], schema: dict[str, Any]) -> str:
        """The text of the model's answer to the conversation `turns`."""
        contents = [types.Content(role=role, parts=_parts(content)) for role, content in turns]
        config = types.GenerateContentConfig(
            response_mime_type="application/json",
            response_schema=types.Schema.model_validate(schema),
            automatic_function_calling=types.AutomaticFunctionCallingConfig(disable=True),
        )
        attempt = 1
        while True:
            try:
                response = self.client.models.generate_content(model=self.model, contents=contents, config=config)
            except errors.APIError as err:
                if attempt == self.attempts or not _retryable(err.code):
                    raise self._error(err, attempt) from None
                wait = _asked_wait(err)
                if wait is not None and wait > MAX_WAIT:
                    raise self._fail(BackendError, f"{self.where} answered {err.code} {err.status} and asks to "
                                     f"wait {wait:.0f} s before retrying; try again later") from None
                if wait is None:
                    wait = self.backoff * 2 ** (attempt - 1) * random.uniform(1.0, 1.25)
                attempt += 1
                log.warning("Gemini answered %s %s; retrying in %.1f s (attempt %d of %d)",
                            err.code, err.status, wait, attempt, self.attempts)
                time.sleep(wait)
            except TIMEOUTS:
                raise self._fail(BackendError, f"{self.where} did not answer within {self.timeout:g} s "
                                 "(story.options.timeout); nothing was written. Try again, or raise "
                                 "the timeout for a long script") from None
            except NETWORK_ERRORS as err:
                raise self._fail(BackendError, f"cannot reach {self.where} ({err}): no network, or the "
                                 f"endpoint is wrong (story.options.base_url / {BASE_URL_VAR}); "
                                 "nothing was written") from None
            else:
                return self._text(response)

    def _text(self, response: types.GenerateContentResponse) -> str:
        feedback = response.prompt_feedback
        if feedback is not None and feedback.block_reason is not None:
            detail = f": {feedback.block_reason_message}" if feedback.block_reason_message else ""
            raise self._fail(BackendError, f"{self.where} blocked the request "
                             f"({_name(feedback.block_reason)}{detail}); nothing was written. Soften the "
                             "script's wording, or use the offline storyboarder")
        if not response.candidates:
            raise self._fail(BackendError, f"{self.where} returned no answer; nothing was written")
        candidate = response.candidates[0]
        parts = candidate.content.parts if candidate.content and candidate.content.parts else []
        text = "".join(p.text for p in parts if p.text and not p.thought)
        reason = _name(candidate.finish_reason)
        if not text and reason in BLOCKED:
            raise self._fail(BackendError, f"{self.where} stopped its answer for {reason}; nothing was "
                             "written. Soften the script's wording, or use the offline storyboarder")
        return text

    def _error(self, err: errors.APIError, attempt: int) -> CinemaError:
        said = f"{err.code} {err.status or ''}".strip() + (f": {err.message}" if err.message else "")
        if err.code in (401, 403) or (err.code == 400 and "API_KEY" in str(err.details)):
            return self._fail(BadInput, f"{self.where} refused the API key from {self.key_var} ({said}). "
                              "Check that it is a valid Gemini API key with access to the model")
        if err.code == 404:
            return self._fail(BadInput, f"{self.where} has no model {self.model!r} ({said}); set "
                              "story.options.model in cinema.yaml to a current model id")
        if _retryable(err.code):
            return self._fail(BackendError, f"{self.where} kept failing: {said} on all {attempt} "
                              "attempts; nothing was written. Try again later")
        return self._fail(BackendError, f"{self.where} refused the request ({said}); nothing was written")

    def _fail(self, kind: type[CinemaError], message: str) -> CinemaError:
        return kind(redact(message, self.key))


def redact(text: str, key: str) -> str:
    """`text` without the key, nor any `key=` query parameter."""
    if key:
        text = text.replace(key, REDACTED)
    return re.sub(r"(?i)([?&]key=)[^&\s]+", rf"\1{REDACTED}", text)


def _parts(content: Any) -> list[types.Part]:
    """A turn's parts: its text, or a sequence of texts and (mime type, bytes) images."""
    if isinstance(content, str):
        return [types.Part(text=content)]
    return [types.Part(text=part) if isinstance(part, str) else types.Part.from_bytes(data=part[1], mime_type=part[0])
            for part in content]


def _retryable(code: int | None) -> bool:
    return code is not None and (code in (408, 429) or 500 <= code < 600)


def _asked_wait(err: errors.APIError) -> float | None:
    """Seconds the server asked to wait: the Retry-After header (seconds or an HTTP
    date), else the RetryInfo detail Gemini puts in a 429's body."""
    headers = getattr(err.response, "headers", None)
    value = headers.get("retry-after") if headers is not None else None
    if value:
        if re.fullmatch(r"\s*\d+(\.\d+)?\s*", value):
            return float(value)
        if email.utils.parsedate(value):  # an HTTP date
            when = email.utils.parsedate_to_datetime(value)
            when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
            return max(0.0, (when - datetime.now(timezone.utc)).total_seconds())
    details = err.details.get("error", err.details) if isinstance(err.details, dict) else {}
    for detail in details.get("details", []) if isinstance(details, dict) else []:
        delay = detail.get("retryDelay") if isinstance(detail, dict) else None
        if isinstance(delay, str) and re.fullmatch(r"\d+(\.\d+)?s", delay):
            return float(delay[:-1])
    return None


def _name(value: Any) -> str:
    return str(getattr(value, "value", value))
