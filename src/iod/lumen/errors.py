"""Errors as the Lumen clients handle them: a list of `{code, reason, propertyPath}`.

Services raise the same `ProblemError`s everywhere; only the Lumen edge renders them this
way (`lumen.api`). `LumenError` is for what exists on these paths only (a quote, the order's
`externalId`, the status words of the inventory)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from iod.infra.errors import ProblemError


@dataclass(frozen=True)
class Item:
    code: str
    reason: str
    propertyPath: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"code": self.code, "reason": self.reason, "propertyPath": self.propertyPath}


class LumenError(ProblemError):
    """An error of the Lumen paths, with its own code and property path."""

    def __init__(
        self,
        status: int,
        code: str,
        reason: str,
        property_path: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(reason, headers=headers)
        self.status = status
        self.code = code
        self.property_path = property_path


# Our conflicts (capacity, state, too many pending changes) are what Lumen answers with 422.
STATUS = {409: 422}


def property_path(pointer: str) -> str | None:
    """A JSON Pointer (`/productOrderItem/0/action`) as a property path
    (`productOrderItem[0].action`); None for the whole body."""
    if not pointer:
        return None
    path = ""
    for part in pointer.lstrip("/").split("/"):
        part = part.replace("~1", "/").replace("~0", "~")
        path += f"[{part}]" if part.isdigit() else (f".{part}" if path else part)
    return path


def code_of(exc: ProblemError) -> str:
    """`invalid-state` → `INVALID_STATE`: the problem type, as these clients' codes are."""
    return re.sub(r"[^A-Z0-9]+", "_", exc.type_name.upper()).strip("_")


def items_of(exc: ProblemError) -> tuple[int, list[Item]]:
    """The status and the list to answer for any error raised on a Lumen path."""
    if isinstance(exc, LumenError):
        return exc.status, [Item(exc.code, exc.detail, exc.property_path)]
    status = STATUS.get(exc.status, exc.status)
    code = code_of(exc)
    if exc.errors:
        return status, [Item(code, e.detail, property_path(e.pointer)) for e in exc.errors]
    return status, [Item(code, exc.detail)]
