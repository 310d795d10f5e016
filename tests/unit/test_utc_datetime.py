"""`UTCDateTime`'s own SQLite bind processing gives exactly the text SQLAlchemy's would
(`process_bind_param`, then the SQLite dialect's `DATETIME` formatting), so stored values,
and comparisons with them in SQL, do not change."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.types import TypeDecorator

from iod.infra.db import UTCDateTime

SQLITE = sqlite.dialect()  # type: ignore[no-untyped-call]


def _sqlalchemys(value: datetime | None) -> Any:
    """What `TypeDecorator.bind_processor` would make of it."""
    processor = TypeDecorator.bind_processor(UTCDateTime().dialect_impl(SQLITE), SQLITE)
    assert processor is not None
    return processor(value)


def _ours(value: datetime | None) -> Any:
    processor = UTCDateTime().dialect_impl(SQLITE).bind_processor(SQLITE)
    assert processor is not None
    return processor(value)


offsets = st.integers(min_value=-14 * 60, max_value=14 * 60).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)


@given(
    st.datetimes(
        min_value=datetime(1, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.one_of(st.just(UTC), offsets),
    )
)
def test_the_stored_text_is_sqlalchemys(value: datetime) -> None:
    assert _ours(value) == _sqlalchemys(value)


def test_examples() -> None:
    assert _ours(datetime(2030, 1, 2, 3, 4, 5, tzinfo=UTC)) == "2030-01-02 03:04:05.000000"
    moment = datetime(2030, 1, 2, 1, 0, 0, 7, tzinfo=timezone(timedelta(hours=2)))
    assert _ours(moment) == "2030-01-01 23:00:00.000007" == _sqlalchemys(moment)
    assert _ours(None) is None


def test_naive_datetimes_are_refused_as_before() -> None:
    with pytest.raises(ValueError, match="naive"):
        _ours(datetime(2030, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        _sqlalchemys(datetime(2030, 1, 1))


def test_postgresql_keeps_sqlalchemys_processing() -> None:
    dialect = postgresql.dialect()  # type: ignore[no-untyped-call]
    ours = UTCDateTime().dialect_impl(dialect).bind_processor(dialect)
    moment = datetime(2030, 1, 2, 1, 0, tzinfo=timezone(timedelta(hours=2)))
    value = ours(moment) if ours is not None else UTCDateTime().process_bind_param(moment, dialect)
    assert value == moment and value.tzinfo is not None
