"""Structured logs: one JSON object a line, with the request id bound where there is one."""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import orjson
import structlog

# Defence in depth: nothing logs these today, and if a future call passes one it is masked.
SENSITIVE_KEYS = frozenset(
    {"authorization", "access_token", "token", "client_secret", "secret", "password", "cookie"}
)


def redact_secrets(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key in event.keys() & SENSITIVE_KEYS:
        event[key] = "[redacted]"
    return event


# C0 and C1 control characters; a traceback keeps its newlines and tabs.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_LINES = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_MULTILINE_KEYS = frozenset({"exception", "stack"})


def escape_control_characters(
    _logger: object, _method: str, event: structlog.types.EventDict
) -> structlog.types.EventDict:
    """For the console: a request path with a NUL, an escape sequence (`/x%1b[31m`) or a
    newline (a forged second log line) is written as `\\x1b`, not sent to the operator's
    terminal; only a traceback keeps its lines. The JSON renderer escapes them itself."""
    for key, value in event.items():
        if isinstance(value, str):
            control = _CONTROL_BUT_LINES if key in _MULTILINE_KEYS else _CONTROL
            if control.search(value):
                event[key] = control.sub(lambda m: f"\\x{ord(m.group()):02x}", value)
    return event


def _orjson_dumps(value: object, **kwargs: Any) -> bytes:
    # Keys that are not strings are written as strings, as the json module does.
    return orjson.dumps(value, option=orjson.OPT_NON_STR_KEYS, **kwargs)


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        redact_secrets,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.StackInfoRenderer(),
        structlog.processors.format_exc_info,
    ]
    wrapper_class = structlog.make_filtering_bound_logger(
        logging.getLevelNamesMapping().get(level.upper(), logging.INFO)
    )
    if json:
        # orjson renders bytes, written as they are: half the cost of the standard json
        # module and a str logger, and every request writes its access line (issue 6).
        structlog.configure(
            processors=[*processors, structlog.processors.JSONRenderer(serializer=_orjson_dumps)],
            wrapper_class=wrapper_class,
            logger_factory=structlog.BytesLoggerFactory(sys.stderr.buffer),
            cache_logger_on_first_use=True,
        )
        return
    structlog.configure(
        processors=[*processors, escape_control_characters, structlog.dev.ConsoleRenderer()],
        wrapper_class=wrapper_class,
        logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        cache_logger_on_first_use=True,
    )
