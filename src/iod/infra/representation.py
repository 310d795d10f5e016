"""Representations without a web framework: entity tags (ETag, If-Match) and strict JSON
(duplicate keys refused). Services and schemas use these; `http.py` re-exports them for the
HTTP edge."""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticCustomError

from iod.infra.errors import PreconditionFailed

_TAGS = re.compile(r'(W/)?"([!#-~]*)"')


def entity_tag(model: BaseModel, fields: set[str] | None = None) -> str:
    """A strong ETag: a digest of the JSON representation (only `fields`, when given)."""
    return entity_tag_of(model.model_dump_json(include=fields, exclude_none=True).encode())


def entity_tag_of(body: bytes) -> str:
    """The ETag of a representation already serialised, as `entity_tag` would make it."""
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def check_if_match(if_match: str | None, current: str) -> None:
    """412 unless `If-Match` is absent, `*` (the resource exists, or we would not be here),
    or names `current` with a strong tag. `*` on several header lines (joined into `*, *`)
    is still `*`; `*` in a list with tags is not the grammar's, and only the tags count."""
    if if_match is None or all(member.strip() == "*" for member in if_match.split(",")):
        return
    for weak, opaque in _TAGS.findall(if_match):
        if not weak and f'"{opaque}"' == current:
            return
    raise PreconditionFailed(
        f"If-Match {if_match} does not match the current ETag {current}: the connection "
        "changed since it was read; read it again and retry",
        headers={"ETag": current},
    )


# --- Strict JSON bodies: duplicate keys -------------------------------------------------


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class JsonObjectWithDuplicates(dict[str, Any]):
    """A parsed body object in which some key occurred twice (the last value kept, as
    `json.loads` does); `pointers` name each repeated key. Validation refuses it
    (`refuse_duplicate_keys`), so it answers 400 where any other invalid body would: after
    the token and scope checks."""

    def __init__(self, data: dict[str, Any], pointers: list[str]) -> None:
        super().__init__(data)
        self.pointers = pointers


def loads_strict(body: bytes | str) -> Any:
    """`json.loads`, but a repeated key in any object is noted: parsers disagree on which
    of two values wins, so a body that means different things to different readers (a
    proxy, a WAF, us) is refused instead of guessed at."""
    repeated: list[tuple[dict[str, Any], str]] = []

    def pairs(items: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in items:
            if key in result:
                repeated.append((result, key))
            result[key] = value
        return result

    data = json.loads(body, object_pairs_hook=pairs)
    if not repeated or not isinstance(data, dict):
        return data
    return JsonObjectWithDuplicates(data, _pointers(data, repeated))


def _pointers(root: Any, repeated: list[tuple[dict[str, Any], str]]) -> list[str]:
    """JSON Pointers (RFC 6901) to the repeated keys, found by walking from the root."""
    wanted: dict[int, list[str]] = {}
    for obj, key in repeated:
        wanted.setdefault(id(obj), []).append(key)
    found: list[str] = []
    stack: list[tuple[Any, str]] = [(root, "")]
    while stack:
        node, path = stack.pop()
        if isinstance(node, dict):
            found.extend(f"{path}/{_escape(k)}" for k in wanted.get(id(node), ()))
            stack.extend((v, f"{path}/{_escape(str(k))}") for k, v in node.items())
        elif isinstance(node, list):
            stack.extend((v, f"{path}/{i}") for i, v in enumerate(node))
    return sorted(set(found))


def refuse_duplicate_keys(data: Any) -> Any:
    """A `model_validator(mode="before")` body: the error names the first repeated key's
    pointer (`ctx.pointer`), which the 400 renderer uses as the error's pointer."""
    if isinstance(data, JsonObjectWithDuplicates):
        pointer = data.pointers[0]
        raise PydanticCustomError(
            "duplicate_key",
            "duplicate key: {pointer} appears more than once in the body; send each field once",
            {"pointer": pointer},
        )
    return data
