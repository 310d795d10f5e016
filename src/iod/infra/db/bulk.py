"""Many rows into one table with one statement: `COPY … FROM STDIN` on PostgreSQL (psycopg's
`cursor.copy`), an executemany INSERT on SQLite and for a few rows: `insert_rows` (dicts),
`insert_tuples` (tuples: no dict per row), `rows_into` (each row into the COPY as it is
built).

An executemany INSERT on PostgreSQL is one statement per row (psycopg pipelines them):
about 90 µs a row on the development machine, against a few µs a row for COPY
(docs/performance.md, issue 17). The rows are stored as SQLAlchemy would store them: JSON
columns get the JSON text of their value (`None` is JSON `null` unless the column says
`none_as_null`, as SQLAlchemy does), datetimes must carry their time zone (`UTCDateTime`).
"""

from __future__ import annotations

import gc
import json
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from operator import itemgetter
from typing import Any

from psycopg import sql
from sqlalchemy import JSON, BigInteger, Boolean, DateTime, Integer, String, Table, insert
from sqlalchemy.orm import Session
from sqlalchemy.types import TypeDecorator, TypeEngine

from iod.infra.db import later

# `json.dumps` with its defaults (as SQLAlchemy's JSON type calls it), without its wrapper.
_to_json = json.JSONEncoder().encode
# Below this many rows one INSERT is as quick, and COPY's set-up is not worth it.
COPY_FROM = 100


_paused_lock = threading.Lock()
_paused = 0  # blocks inside `gc_paused` now, over all threads
_paused_reenable = False  # whether the first of them found the collector enabled


@contextmanager
def gc_paused() -> Iterator[None]:
    """The cyclic garbage collector paused while a batch's rows are built and written.

    A batch holds hundreds of thousands of small containers (tuples, payload dicts) until it
    is written; their allocation keeps triggering collections, the full ones walking every
    object of the process (its modules, the ORM's mappings): 40 % of the schedule
    planner's CPU (docs/performance.md, issue 17). Reference counting still frees
    everything that is not in a cycle; cycles wait until the block ends. Over all threads:
    the collector is enabled again when the last block ends, if it was when the first
    began."""
    global _paused, _paused_reenable
    with _paused_lock:
        if _paused == 0:
            _paused_reenable = gc.isenabled()
            gc.disable()
        _paused += 1
    try:
        yield
    finally:
        with _paused_lock:
            _paused -= 1
            if _paused == 0 and _paused_reenable:
                gc.enable()


class Encoded(dict[str, Any]):
    """A JSON object that carries its own JSON text, exactly as `json.dumps` writes it (the
    caller vouches: e.g. built from a template with strings that need no escaping): a COPY
    writes that text instead of encoding the object again; anything else sees a dict."""

    __slots__ = ("text",)

    def __init__(self, text: str, /, **values: Any) -> None:
        super().__init__(values)
        self.text = text


def insert_rows(session: Session, table: Table, rows: Sequence[dict[str, Any]]) -> None:
    """Inserts `rows` (dicts with the same keys: column names) in the session's transaction;
    columns not given take their defaults (a serial id)."""
    if not rows:
        return
    names = list(rows[0])
    pick = itemgetter(*names)
    with rows_into(session, table, names, len(rows)) as write:
        if len(names) == 1:
            for row in rows:
                write((pick(row),))
        else:
            for row in rows:
                write(pick(row))


def insert_tuples(
    session: Session, table: Table, names: Sequence[str], rows: Sequence[Sequence[Any]]
) -> None:
    """Inserts `rows`, each the values of the columns `names` in that order."""
    if rows:
        with rows_into(session, table, names, len(rows)) as write:
            for row in rows:
                write(row)


@contextmanager
def rows_into(
    session: Session, table: Table, names: Sequence[str], expected: int
) -> Iterator[Callable[[Sequence[Any]], None]]:
    """A writer of rows (the values of the columns `names`, in that order) into `table`,
    `expected` of them about (at most): on PostgreSQL from `COPY_FROM` on, each row goes
    into a COPY as it is written, so the server takes them in while the caller builds the
    next ones (psycopg sends them in 32 KiB chunks); else they are kept and inserted at the
    end with one executemany INSERT. The rows are in the table when the block ends."""
    connection = session.connection()
    if connection.dialect.name != "postgresql" or expected < COPY_FROM:
        kept: list[Sequence[Any]] = []
        yield kept.append
        if kept:
            connection.execute(insert(table), [dict(zip(names, row, strict=True)) for row in kept])
        return
    # (index, whether None stays SQL NULL) of the JSON columns
    json_columns = [
        (index, bool(getattr(table.c[name].type, "none_as_null", False)))
        for index, name in enumerate(names)
        if isinstance(table.c[name].type, JSON)
    ]
    statement = sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(
        sql.Identifier(table.name), sql.SQL(", ").join(sql.Identifier(name) for name in names)
    )
    if later.pending(connection):  # the transaction's statements in their order first
        later.send(connection)
    driver = connection.connection.driver_connection
    assert driver is not None  # an open connection of the transaction
    with driver.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types([_binary_type(table.c[name].type) for name in names])
        if not json_columns:
            yield copy.write_row
            return
        write_row = copy.write_row

        def write(row: Sequence[Any]) -> None:
            values = list(row)
            for index, none_as_null in json_columns:
                value = values[index]
                if type(value) is Encoded:
                    values[index] = value.text
                elif value is not None:
                    values[index] = _to_json(value)
                elif not none_as_null:
                    values[index] = "null"
            write_row(values)

        yield write


def _binary_type(column_type: TypeEngine[Any]) -> str:
    """The type whose binary format psycopg sends for a column: JSON as its text (json's
    binary format is its text; the values are serialised above), strings as text."""
    if isinstance(column_type, TypeDecorator):
        column_type = column_type.impl_instance
    if isinstance(column_type, JSON | String):
        return "text"
    if isinstance(column_type, Boolean):
        return "bool"
    if isinstance(column_type, BigInteger):
        return "int8"
    if isinstance(column_type, Integer):
        return "int4"
    if isinstance(column_type, DateTime):
        return "timestamptz" if column_type.timezone else "timestamp"
    raise TypeError(f"no binary COPY for a column of type {column_type!r}")
