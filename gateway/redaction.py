"""Masking the gateway's own secrets (provider and client keys) wherever text leaves it.

Providers may quote the key they rejected in an error message, and LiteLLM logs those messages
(at INFO) and their tracebacks (at DEBUG) verbatim: it masks the Authorization header, not a key
quoted in the text. Keys are arbitrary strings, so no pattern finds them all; the gateway knows
its keys, so it masks exactly those, in client-facing messages (`errors.scrub`) and, through
`RedactingFilter` on the loggers that can carry them, in logs.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterable

MASK = "[redacted]"
#: Loggers that can carry provider messages or request metadata.
LOGGERS = ("r2.gateway", "LiteLLM", "LiteLLM Router", "LiteLLM Proxy", "httpx", "httpcore",
           "uvicorn.error", "uvicorn.access")


def mask_secrets(text: str, secrets: Iterable[str]) -> str:
    for secret in secrets:
        if secret and secret in text:
            text = text.replace(secret, MASK)
    return text


class RedactingFilter(logging.Filter):
    """Rewrites a record (message, arguments and traceback) with the secrets masked."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = tuple(s for s in secrets if s)

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        text = record.getMessage()
        if record.exc_info:
            text += "\n" + "".join(traceback.format_exception(*record.exc_info)).rstrip()
            record.exc_info = None
        elif record.exc_text:
            text += "\n" + record.exc_text
        record.exc_text = None
        record.msg, record.args = mask_secrets(text, self.secrets), None
        return True


def install(secrets: Iterable[str]) -> Callable[[], None]:
    """Put a `RedactingFilter` on the gateway's and its libraries' loggers; returns the undo."""
    redactor = RedactingFilter(secrets)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    for logger in loggers:
        logger.addFilter(redactor)

    def uninstall() -> None:
        for logger in loggers:
            logger.removeFilter(redactor)

    return uninstall
