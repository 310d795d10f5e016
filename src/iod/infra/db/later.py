"""Statements sent later, together: a write's statements whose results nothing waits for
go to PostgreSQL in one round trip with the next statement that is waited for, or with the
COMMIT (psycopg's pipeline mode; issue 14).

A write transaction on PostgreSQL was a round trip per statement: the thread sent it, gave
up the GIL, waited for the server, and waited again for the GIL to read the answer. Under
load each of those waits is milliseconds, and the rows a transaction has locked stay locked
through them: a change held its location's row (the capacity counter) across five round
trips after its check, so the changes at one location were accepted one after another at
that pace. Queued with `later`, an INSERT of an audit row, a job, an idempotency answer, or
the checked capacity UPDATE is sent with what comes next.

What stays the same:
- the order: the queue is sent before any other statement of the transaction, whether run
  straight on its DBAPI connection (`db._run`, a COPY) or by SQLAlchemy (the engine's
  `before_cursor_execute`), before a SAVEPOINT, and before the COMMIT (the `commit`
  event), so the server runs every statement in the order the code issued it;
- the atomicity: a statement that fails fails the transaction, at the round trip it was
  sent in; a check on a result (`then`: a row count, a capacity refused) runs as soon as
  the result is back, before anything is committed (the COMMIT is sent with the queue only
  when no such check is pending), and its exception rolls the transaction back: one that
  a caller caught is raised again before the commit (`raise_failed`);
- a rollback drops the queue unsent.

Only on PostgreSQL with psycopg 3, outside a savepoint, and on an engine `enable`d for it
(`Database` does it for its engine); anywhere else `later` runs the statement at once and
calls `then` with its result, as before.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from typing import Any, NamedTuple

from sqlalchemy import Connection, Engine, event, exc


class Later(NamedTuple):
    sql: str
    bound: Any
    fetch: bool  # the rows (`then` gets them), else the row count
    many: bool
    then: Callable[[Any], None] | None


_QUEUE = "iod_later"
_FAILED = "iod_later_failed"  # a check (`then`) that raised: the transaction must not commit
_ENABLED: weakref.WeakSet[Engine] = weakref.WeakSet()


def enable(engine: Engine) -> None:
    """Lets statements on `engine`'s connections be sent later: the listeners that send the
    queue before anything else runs and drop it at a rollback. PostgreSQL with psycopg 3
    only (its pipeline mode); a no-op otherwise or when done already."""
    if engine.dialect.name != "postgresql" or engine.dialect.driver != "psycopg":
        return
    import psycopg

    if not psycopg.Pipeline.is_supported():  # a libpq older than 14: one at a time
        return
    if engine in _ENABLED:
        return
    event.listen(engine, "before_cursor_execute", _before_execute)
    event.listen(engine, "savepoint", _before_savepoint)
    event.listen(engine, "commit", _before_commit)
    event.listen(engine, "rollback", _drop)
    event.listen(engine.pool, "checkin", _drop_at_checkin)  # a connection given back unsent
    _ENABLED.add(engine)


def defers(connection: Connection) -> bool:
    """Whether a statement on `connection` (a transaction's) may be sent later."""
    return connection.engine in _ENABLED and not connection.in_nested_transaction()


def queue(connection: Connection, item: Later) -> None:
    """Queues `item` on `connection` (where `defers` said so)."""
    connection.info.setdefault(_QUEUE, []).append(item)


def pending(connection: Connection) -> bool:
    """Whether statements are queued on `connection`."""
    return bool(connection.info.get(_QUEUE))


def send(connection: Connection, *, commit: bool = False) -> None:
    """Sends what is queued on `connection` in one round trip (with the COMMIT if
    `commit`), then runs the items' `then` with their results, in order. A DBAPI error comes
    out as SQLAlchemy's wrapped exception, the connection invalidated if it was lost."""
    items: list[Later] | None = connection.info.pop(_QUEUE, None)
    if not items:
        if commit:
            _dbapi(connection).commit()
        return
    dbapi_connection = _dbapi(connection)
    dialect = connection.dialect
    error_type = dialect.loaded_dbapi.Error
    cursors = []
    try:
        try:
            with dbapi_connection.pipeline():
                for item in items:
                    cursor = dbapi_connection.cursor()
                    cursors.append(cursor)
                    if item.many:
                        cursor.executemany(item.sql, item.bound)
                    else:
                        cursor.execute(item.sql, item.bound)
                if commit:
                    dbapi_connection.commit()
            results = [
                cursor.fetchall() if item.fetch else cursor.rowcount
                for item, cursor in zip(items, cursors, strict=True)
            ]
        finally:
            for cursor in cursors:
                cursor.close()
    except error_type as error:
        dead = dialect.is_disconnect(error, dbapi_connection, None)
        if dead:
            connection.invalidate(error)
        sql = ";\n".join(item.sql for item in items)
        raise exc.DBAPIError.instance(
            sql, [item.bound for item in items], error, error_type,
            connection_invalidated=dead, dialect=dialect,
        ) from error  # fmt: skip
    for item, result in zip(items, results, strict=True):
        if item.then is not None:
            try:
                item.then(result)
            except BaseException as error:
                # Kept until the rollback: if a caller swallows it (an `except` around a
                # savepoint or a statement that happened to send the queue), the commit
                # raises it again (`raise_failed`) rather than committing past the check.
                connection.info[_FAILED] = error
                raise


def raise_failed(connection: Connection) -> None:
    """Raises again a check of this transaction's queued results that failed (`send`),
    whatever caught it since: called before the commit."""
    failed = connection.info.get(_FAILED)
    if failed is not None:
        raise failed


def checks_pending(connection: Connection) -> bool:
    """Whether a queued item checks its result (`then`): the COMMIT must then wait for it."""
    return any(item.then is not None for item in connection.info.get(_QUEUE, ()))


def _dbapi(connection: Connection) -> Any:
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None  # the transaction's, checked out
    return dbapi_connection


def _before_execute(
    connection: Connection, _cursor: Any, _sql: str, _params: Any, _context: Any, _many: bool
) -> None:
    if connection.info.get(_QUEUE):
        send(connection)


def _before_savepoint(connection: Connection, _name: str) -> None:
    if connection.info.get(_QUEUE):
        send(connection)


def _before_commit(connection: Connection) -> None:
    # A fallback: `Database.write` sends the queue and raises a failed check before it
    # commits, while its session can still run SQL (a check's refusal reads the figures
    # it reports).
    raise_failed(connection)
    if connection.info.get(_QUEUE):
        send(connection)


def _drop(connection: Connection) -> None:
    if connection.invalidated:  # its DBAPI connection is gone, and its `info` with it
        return
    connection.info.pop(_QUEUE, None)
    connection.info.pop(_FAILED, None)


def _drop_at_checkin(_dbapi_connection: Any, record: Any) -> None:
    if record is not None:
        record.info.pop(_QUEUE, None)
        record.info.pop(_FAILED, None)
