"""How pydantic's errors for an optional, non-nullable field (`X | SkipJsonSchema[None]`)
become pointers: the `None` member's error and the other member's tag are folded away."""

from __future__ import annotations

from typing import Annotated, Any

import pytest
from pydantic import BaseModel, Field, ValidationError
from pydantic.json_schema import SkipJsonSchema

from iod.infra.problems import without_none_branches


class Item(BaseModel):
    count: int


class Body(BaseModel):
    name: Annotated[str, Field(max_length=3)] | SkipJsonSchema[None] = None
    item: Item | SkipJsonSchema[None] = None
    items: list[Item] | SkipJsonSchema[None] = None
    nested: list[Body] | SkipJsonSchema[None] = None
    plain: int = 0


def _locs(body: dict[str, Any]) -> list[tuple[Any, ...]]:
    with pytest.raises(ValidationError) as raised:
        Body.model_validate(body)
    errors: list[dict[str, Any]] = [dict(e) for e in raised.value.errors()]
    return [tuple(e["loc"]) for e in without_none_branches(errors)]


def test_the_none_member_and_the_tag_are_folded_away() -> None:
    assert _locs({"name": "abcd"}) == [("name",)]
    assert _locs({"item": {"count": "x"}}) == [("item", "count")]
    assert _locs({"items": [{"count": 1}, {"count": "x"}]}) == [("items", 1, "count")]
    assert _locs({"items": "not a list"}) == [("items",)]


def test_nested_optional_fields_fold_at_every_level() -> None:
    assert _locs({"nested": [{"items": [{"count": "x"}]}]}) == [("nested", 0, "items", 0, "count")]


def test_errors_of_other_fields_are_untouched() -> None:
    assert _locs({"plain": "x", "items": [{}]}) == [("items", 0, "count"), ("plain",)]
    with pytest.raises(ValidationError) as raised:
        Body.model_validate({"plain": "x"})
    errors = [dict(e) for e in raised.value.errors()]
    assert without_none_branches(errors) == errors
