"""The API's one rule for free text (descriptions, names, an agent's strings), shared by the
wire models, the portal's forms and the operator's commands."""

from __future__ import annotations

import re
import unicodedata
from typing import Annotated, Any

from pydantic import AfterValidator

# Control characters, and lone UTF-16 surrogates that no database can store.
CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\ud800-\udfff]")


def invisible_format_character(value: str) -> str | None:
    """The first Unicode format character (category Cf: bidirectional overrides and
    isolates, zero-width spaces and joiners, soft hyphens, ...) in `value`, named, or None.
    They render as nothing or reorder the text around them, so what an operator reads would
    not be what the customer sent (Trojan Source, CVE-2021-42574)."""
    if value.isascii():
        return None
    for char in value:
        if unicodedata.category(char) == "Cf":
            name = unicodedata.name(char, "a format character")
            return f"U+{ord(char):04X} {name}"
    return None


def text_problem(value: str) -> str | None:
    """What makes `value` unfit for a free-text field (a description, a name), or None.
    Control characters (a NUL PostgreSQL cannot store) and lone surrogates (no database can)
    are refused, and so are invisible format characters (`invisible_format_character`)."""
    if CONTROL.search(value):
        return "must not contain control characters or lone surrogates"
    invisible = invisible_format_character(value)
    if invisible is not None:
        return (
            f"must not contain invisible format characters such as bidirectional "
            f"overrides or zero-width spaces (found {invisible})"
        )
    return None


def description_text(value: Any) -> str:
    """A description (of a connection, a schedule, a webhook endpoint): a string of at most
    255 characters under the API's rule for text (`text_problem`); ValueError if not."""
    if not isinstance(value, str):
        raise ValueError("must be a string")
    if len(value) > 255:
        raise ValueError("must be at most 255 characters")
    return _text(value)


def _text(value: str) -> str:
    problem = text_problem(value)
    if problem is not None:
        raise ValueError(problem)
    return value


# A string field under the API's rule for text (`text_problem`): no NUL, which PostgreSQL
# can neither store nor compare (a 500 there), no other control or invisible format character.
Text = Annotated[str, AfterValidator(_text)]
