"""Engine, sessions and the metadata naming convention.

The edge (a request handler or the job runner) opens a session with `Database.read()` or
`Database.write()` and that context manager commits or rolls back; services only flush.
`Database.write()` is the unit of work (`uow.py`): its commit writes the domain events the
transaction recorded and then wakes the listeners of the topics it touched.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import os
import select as io_select
import sqlite3
import threading
import time
import weakref
from collections import deque, namedtuple
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, TypeAlias, TypeVar, cast

import anyio
import anyio.to_thread
import structlog
from sqlalchemy import (
    Connection,
    DateTime,
    Engine,
    Insert,
    MetaData,
    Select,
    Table,
    TextualSelect,
    TypeDecorator,
    Update,
    bindparam,
    create_engine,
    event,
    exc,
    inspect,
    make_url,
    update,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.engine.base import OptionEngine
from sqlalchemy.orm import DeclarativeBase, Session, make_transient_to_detached, sessionmaker
from sqlalchemy.orm.attributes import instance_dict, set_committed_value
from sqlalchemy.orm.exc import StaleDataError
from sqlalchemy.pool import ConnectionPoolEntry, Pool, PoolProxiedConnection, QueuePool

from iod.infra.clock import as_utc
from iod.infra.db import later, uow
from iod.infra.db.notify import Notifier

_T = TypeVar("_T")

_log = structlog.get_logger("iod.db")

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class UTCDateTime(TypeDecorator[datetime]):
    """Timezone-aware in Python on every backend; SQLite stores naive UTC."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        value = as_utc(value)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        return None if value is None else as_utc(value)

    def bind_processor(self, dialect: Any) -> Callable[[datetime | None], Any] | None:
        """On SQLite, the text SQLAlchemy's SQLite `DATETIME` stores ("YYYY-MM-DD
        HH:MM:SS.ffffff", naive UTC) made in one step by `isoformat`, rather than
        `process_bind_param` and then the dialect's `%`-formatting of a dict of fields: every
        write binds several datetimes, and the two steps were 6 % of a create (issue 14).
        Checked against SQLAlchemy's own processing (tests/unit/test_utc_datetime.py)."""
        if dialect.name != "sqlite":
            return super().bind_processor(dialect)

        def process(value: datetime | None) -> str | None:
            if value is None:
                return None
            if value.tzinfo is None:
                raise ValueError("naive datetimes are not stored")
            if value.utcoffset():
                value = value.astimezone(UTC)
            return value.replace(tzinfo=None).isoformat(" ", "microseconds")

        return process


def _sqlite_connect(busy_timeout_ms: int) -> Any:
    def connect(dbapi_connection: Any, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy emit BEGIN itself (see _sqlite_begin) and tune the file for
        # concurrency. A writer waits busy_timeout for the write lock, then gets "database
        # is locked" (an OperationalError: 503 at the API, see is_unavailable).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute(f"PRAGMA busy_timeout={busy_timeout_ms:d}")
        cursor.close()

    return connect


# A write run on the event loop (`Database.in_writer`, `on_loop`): its BEGINs do not wait
# for SQLite's lock (`nowait`), its sessions use the loop's own pool (`engine`), and `began`
# says whether its first BEGIN got the lock.
_on_loop = threading.local()


def _sqlite_begin(conn: Connection) -> None:
    # A writing transaction takes SQLite's write lock at BEGIN, so its reads (capacity, state)
    # cannot be overtaken by another writer before it writes. Run straight on the DBAPI
    # connection (`_run`: its errors as SQLAlchemy's, e.g. "database is locked" an
    # OperationalError): SQLAlchemy's execution of it cost more than the statement, on every
    # transaction (issue 14).
    options = conn.get_execution_options()
    immediate = options.get("sqlite_immediate", False)
    if immediate and getattr(_on_loop, "nowait", False):
        # On the event loop: another process holding the lock must not stop the loop for
        # the busy timeout. A first BEGIN refused sends the work to the writer thread
        # (`in_writer`); a later one in the same work (a refusal stored for its
        # Idempotency-Key) is "database is locked" at once, a 503 (`is_unavailable`).
        busy_ms = round(float(options.get("iod_busy_timeout", 10.0)) * 1000)
        _run(conn, "PRAGMA busy_timeout=0", (), fetch=False)
        try:
            _run(conn, "BEGIN IMMEDIATE", (), fetch=False)
        finally:
            _run(conn, f"PRAGMA busy_timeout={busy_ms:d}", (), fetch=False)
        _on_loop.began = True
        return
    _run(conn, "BEGIN IMMEDIATE" if immediate else "BEGIN", (), fetch=False)


class _OwnPoolEngine(OptionEngine):
    """An engine as `engine.execution_options()` makes it (the same events, options and
    compiled cache) but with a pool of its own: the writes on the event loop take their
    connection from a pool no thread uses, so checking one out never waits (one write on a
    loop at a time, `Database._loop_turn`)."""

    def __init__(self, proxied: Engine, pool: Pool) -> None:
        super().__init__(proxied, {})
        self._own_pool = pool

    @property
    def pool(self) -> Pool:
        return self._own_pool

    @pool.setter
    def pool(self, pool: Pool) -> None:
        self._own_pool = pool


def tcp_options(tcp_timeout: float) -> dict[str, str]:
    """libpq's TCP settings for a PostgreSQL connection that gives up on a server which has
    not answered for `tcp_timeout` seconds (0: the operating system's defaults, which on
    Linux wait about 15 minutes for a server that silently stopped answering).

    `tcp_user_timeout` bounds how long sent data may go unacknowledged (a query, a
    pre-ping); the keepalives find a dead server under a connection that waits for a result
    or idles (the jobs' LISTEN), probing after half the timeout."""
    if tcp_timeout <= 0:
        return {}
    idle = max(1, round(tcp_timeout / 2))
    return {
        "keepalives": "1",
        "keepalives_idle": str(idle),
        "keepalives_interval": str(max(1, round(tcp_timeout / 6))),
        "keepalives_count": "3",
        "tcp_user_timeout": str(max(1000, round(tcp_timeout * 1000))),
    }


def make_engine(
    url: str,
    *,
    connect_timeout: float = 10.0,
    pool_timeout: float = 30.0,
    busy_timeout: float = 10.0,
    tcp_timeout: float = 20.0,
    **kwargs: Any,
) -> Engine:
    """The engine for `url`. The timeouts bound how long a request waits for the database
    before it is answered 503: `connect_timeout` for a new PostgreSQL connection,
    `pool_timeout` for a pooled one, `busy_timeout` for SQLite's write lock, `tcp_timeout`
    for a PostgreSQL server that stopped answering on an open connection (`tcp_options`:
    they go into the URL's query, where the URL does not set them itself, so the jobs'
    and events' LISTEN connections, made from the engine's URL, get them too)."""
    if url.startswith("sqlite"):
        if make_url(url).database not in (None, "", ":memory:"):  # a file: a QueuePool
            kwargs.setdefault("pool_timeout", pool_timeout)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False},
            # Database.write()'s turn waits as long as SQLite's busy handler would.
            execution_options={"iod_busy_timeout": busy_timeout},
            **kwargs,
        )
        event.listen(engine, "connect", _sqlite_connect(round(busy_timeout * 1000)))
        event.listen(engine, "begin", _sqlite_begin)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_timeout", pool_timeout)
    kwargs.setdefault("connect_args", {"connect_timeout": max(1, round(connect_timeout))})
    parsed = make_url(url)
    options = {k: v for k, v in tcp_options(tcp_timeout).items() if k not in parsed.query}
    # The check without a round trip needs psycopg 3's connection (`broken`, `fileno`);
    # another driver (psycopg2 for a bare postgresql:// URL) keeps SQLAlchemy's pre-ping.
    psycopg3 = parsed.get_driver_name() == "psycopg"
    if not psycopg3:
        kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(parsed.update_query_dict(options), **kwargs)
    if psycopg3 and "pool_pre_ping" not in kwargs:
        event.listen(engine, "checkout", _ping_if_disturbed(engine.dialect))
    return engine


def _ping_if_disturbed(dialect: Dialect) -> Callable[..., None]:
    """A pooled PostgreSQL connection is checked before use, so after a database restart
    the first request reconnects instead of failing on a dead socket: recovery needs no
    restart of the service. `pool_pre_ping` did it with a round trip on every checkout
    (about 70 µs of CPU each, measured alone: docs/performance.md, "Tenth step").

    An idle connection in the pool has nothing to read: every answer to its last
    transaction was read before it went back. A server that stops or restarts (or an
    administrator's `pg_terminate_backend`) sends a FATAL message and closes the socket,
    which makes it readable. So the socket is polled without waiting, a system call and
    no round trip; only a readable one (or one psycopg knows is broken) gets the
    dialect's ping, and one that fails it is replaced (`DisconnectionError`: the pool
    connects anew). A server that vanished without closing the socket (a host that
    crashed, a failover that moved the address) is not seen by the poll until the TCP
    keepalives give up (`tcp_timeout`): meanwhile the request's first statement fails
    after that timeout and is answered 503 with nothing stored (the pre-ping waited as
    long, then connected anew and served it)."""

    def checkout(dbapi_connection: Any, _record: ConnectionPoolEntry, _proxy: Any) -> None:
        if dbapi_connection.closed or dbapi_connection.broken:
            raise exc.DisconnectionError("the connection was closed")
        poller = io_select.poll()  # not select(): a process may hold more than 1,024 files
        poller.register(dbapi_connection.fileno(), io_select.POLLIN)
        if not poller.poll(0):
            return
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as error:
            raise exc.DisconnectionError(f"the connection failed its ping: {error}") from error

    return checkout


def is_unavailable(error: BaseException) -> bool:
    """Whether `error` means the database cannot be used right now (down, restarting,
    unreachable, out of pooled connections, SQLite locked beyond its busy timeout) rather
    than a bug: such a request is answered 503 with Retry-After and may be retried."""
    if isinstance(error, exc.DBAPIError) and error.connection_invalidated:
        return True
    return isinstance(error, exc.OperationalError | exc.InterfaceError | exc.TimeoutError)


def _is_busy(error: exc.OperationalError) -> bool:
    """SQLite's "database is locked": another connection holds the write lock."""
    code = getattr(error.orig, "sqlite_errorcode", None)  # the extended code
    return code is not None and code & 0xFF == sqlite3.SQLITE_BUSY


class Database:
    """Sessions for the edges: short read transactions and serialised write transactions."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.is_sqlite = engine.dialect.name == "sqlite"
        writer = engine.execution_options(sqlite_immediate=True) if self.is_sqlite else engine
        later.enable(engine)  # PostgreSQL: a write's statements sent together (`later.py`)
        self._read = sessionmaker(engine, expire_on_commit=False, autoflush=False)
        self._write = sessionmaker(writer, expire_on_commit=False, autoflush=False)
        event.listen(self._write, "after_soft_rollback", uow.discard_savepoint)
        # topic -> callables run after a commit that woke it (`uow.wake`), in this process;
        # on PostgreSQL other processes hear it on channel `iod_<topic>` (`notify.py`).
        self._listeners: dict[str, list[Callable[[], None]]] = {}
        self._on_dispose: list[Callable[[], None]] = []
        self._prepared: dict[int, tuple[Select[Any], PreparedSelect]] = {}
        self._readers = _Readers(engine)
        # SQLite has one writer at a time: this process's writers take turns on a lock of
        # its own before BEGIN IMMEDIATE (see `write`), in the order they came. Reentrant: a
        # nested write in one thread meets SQLite's lock, as it did without this one.
        self._writer_turn = _FairTurn()
        self._wakes: Notifier | None = None  # made at the first commit that wakes a topic
        self._wakes_lock = threading.Lock()
        self._writer: tuple[int, ThreadPoolExecutor] | None = None  # (its pid, the thread)
        self._turn_timeout = float(engine.get_execution_options().get("iod_busy_timeout", 10.0))
        # Writes on an event loop (`in_writer`, `on_loop`): each loop's turns (`_loop_turn`),
        # and the engine of their sessions, with a pool of its own (a file's QueuePool
        # only: an in-memory database's pool keeps a connection per thread).
        self._loop_turns: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopTurns] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_engine: Engine | None = None
        if self.is_sqlite and isinstance(engine.pool, QueuePool):
            self._loop_engine = _OwnPoolEngine(writer, engine.pool.recreate())

    @contextmanager
    def read(self) -> Iterator[Session]:
        # Closing (not rolling back) ends the transaction without expiring loaded rows.
        with self._read() as session:
            yield session

    def prepared(self, statement: Select[Any]) -> PreparedSelect:
        """`statement` compiled once for this database. The statement is kept with it, so
        its id cannot be reused by another one."""
        entry = self._prepared.get(id(statement))
        if entry is None or entry[0] is not statement:
            entry = (statement, PreparedSelect(self.engine, self._readers, statement))
            self._prepared[id(statement)] = entry
        return entry[1]

    def listen(self, topic: str, callback: Callable[[], None]) -> None:
        """Calls `callback` after each commit of this process that woke `topic`."""
        self._listeners.setdefault(topic, []).append(callback)

    @contextmanager
    def write(self) -> Iterator[Session]:
        """One transaction, committed at the end (rolled back on any exception): the unit
        of work. Recorded events are written just before the commit, in the transaction.

        On SQLite the process's write transactions queue on a lock first: only one of them
        at a time asks SQLite for its write lock. Otherwise each waiting thread holds a pooled
        connection in SQLite's busy handler, which sleeps and polls (up to 100 ms a try):
        p99s of a second under 32 concurrent writers, and CPU spent on the pool's hand-overs
        (docs/performance.md, issue 14 item 2). Waiting longer than the busy timeout is the
        same 503 as SQLite's "database is locked" (`is_unavailable`); other processes on the
        same file still meet SQLite's busy handler."""
        on_loop = getattr(_on_loop, "engine", None)
        with self._turn(), self._write(bind=on_loop) if on_loop else self._write() as session:
            try:
                yield session
                uow.before_commit(session)
                topics = uow.take_topics(session)
                _send_with_commit(session)
                session.commit()
            except BaseException:
                uow.discard(session)
                session.rollback()
                raise
        if topics and not self.is_sqlite:  # other processes' listeners, after the commit
            try:
                self._notifier().wake(f"iod_{topic}" for topic in topics)
            except Exception:  # committed all the same: the listeners will poll
                _log.exception("db.notify_wake_failed")
        for topic in topics:
            for callback in self._listeners.get(topic, ()):
                callback()

    async def in_writer(self, work: Callable[..., _T], *args: Any, on_loop: bool = False) -> _T:
        """`work(*args)`, a function that writes (`write()`), called off the event loop:
        on SQLite on this process's writer thread, one after another in the order they
        came; on PostgreSQL, whose writers run side by side, in the threadpool.

        SQLite has one writer at a time anyway (`write` queues a process's writers on a
        lock): a thread of the pool for each waiting write cost a wake-up and a hand-over of
        that lock per write, where the writer thread goes from one to the next (issue 14).
        A write that waited longer than the busy timeout in the queue is the same 503 as one
        that waited that long for the lock. As in the threadpool, a caller cancelled while
        its work runs waits until the work has ended; one cancelled while its work waits in
        the queue never runs it (in the threadpool, a thread waiting for the turn wrote).

        `on_loop` (SQLite): the work runs on the event loop itself when this process's turn
        to write is free and SQLite's lock too (`_write_on_loop`), one write a turn of the
        loop (`_loop_turn`); otherwise on the writer thread as above. The work may then be
        started twice: once on the loop, refused at its first BEGIN
        (another process writes), and again on the thread; it must do nothing before its
        transaction's first statement that it cannot do again."""
        if not self.is_sqlite:
            return await anyio.to_thread.run_sync(functools.partial(work, *args))
        if on_loop:
            await self._loop_turn()
            ran, result = self._write_on_loop(work, args)
            if ran:
                return cast(_T, result)
        queued = time.monotonic()
        call = functools.partial(contextvars.copy_context().run, self._queued_work, queued, work)
        try:
            done: Future[_T] = self._writer_thread().submit(call, *args)
        except RuntimeError:  # that thread was shut down meanwhile (`dispose`): a new one
            done = self._writer_thread().submit(call, *args)
        waited = asyncio.wrap_future(done)
        try:
            return await asyncio.shield(waited)
        except asyncio.CancelledError:
            if done.cancel():
                raise
            # Running: wait for its end. Shielded from anyio's cancel scopes, which cancel
            # the task again at every turn of the loop (a busy loop until the write ends).
            with anyio.CancelScope(shield=True):
                while not waited.done():
                    try:
                        await asyncio.shield(waited)
                    except asyncio.CancelledError:
                        continue
                    except BaseException:
                        break
            raise

    async def _loop_turn(self) -> None:
        """Waits for a turn of the event loop without a write on the loop yet: one write a
        turn, the others waiting in the order they came, so the loop still reads sockets,
        accepts connections and answers reads between them. Without it, 32 writes in
        flight made turns of 45 ms, and a connection opened meanwhile waited for one turn for
        each connection accepted before it (uvloop accepts one a turn)."""
        loop = asyncio.get_running_loop()
        turns = self._loop_turns.get(loop)
        if turns is None:
            turns = self._loop_turns[loop] = _LoopTurns()
        await turns.wait(loop)

    def _write_on_loop(self, work: Callable[..., _T], args: tuple[Any, ...]) -> tuple[bool, Any]:
        """`in_writer(..., on_loop=True)` on SQLite: `work(*args)` run right here, on the
        event loop, when this process's turn to write is free with no one waiting for it and
        SQLite's lock is free (its BEGIN does not wait, `_sqlite_begin`): (True, its result).
        Otherwise (False, None), nothing written, and the work goes to the writer thread.
        Its sessions take their connection from the loop's own pool (`_OwnPoolEngine`), so
        the loop never waits for the pool the threads share either.

        A write is a millisecond or two of Python on SQLite's single writer; handing it to
        the writer thread and back cost about a quarter of that again in thread switches
        and hand-overs of the interpreter lock (docs/performance.md, "Sixteenth step")."""
        if self._loop_engine is None or not self._writer_turn.try_acquire():
            return False, None
        _on_loop.nowait, _on_loop.began, _on_loop.engine = True, False, self._loop_engine
        try:
            return True, contextvars.copy_context().run(work, *args)
        except exc.OperationalError as error:
            if _on_loop.began or not _is_busy(error):
                raise
            return False, None  # another process writes: the thread waits for it
        finally:
            _on_loop.nowait, _on_loop.began, _on_loop.engine = False, False, None
            self._writer_turn.release()

    def _queued_work(self, queued: float, work: Callable[..., _T], *args: Any) -> _T:
        # A busy timeout of 0 means no waiting for a lock someone holds: a write alone in
        # the queue goes ahead (`_turn` then says whether someone holds the turn).
        if self._turn_timeout > 0 and time.monotonic() - queued > self._turn_timeout:
            raise exc.TimeoutError(
                f"no turn to write within {self._turn_timeout:g} s: other writes of this"
                " process were ahead of it"
            )
        return work(*args)

    def _writer_thread(self) -> ThreadPoolExecutor:
        writer = self._writer
        if writer is None or writer[0] != os.getpid():  # none yet, or a forked child's
            with self._wakes_lock:
                writer = self._writer
                if writer is None or writer[0] != os.getpid():
                    executor = ThreadPoolExecutor(1, thread_name_prefix="iod-sqlite-writer")
                    writer = self._writer = (os.getpid(), executor)
        return writer[1]

    def _notifier(self) -> Notifier:
        """The NOTIFYs of this database's commits (PostgreSQL), sent after each commit on a
        connection of the notifier's own, coalesced (`notify.py`)."""
        notifier = self._wakes
        if notifier is None:
            with self._wakes_lock:
                notifier = self._wakes
                if notifier is None:
                    notifier = self._wakes = Notifier(self.engine.url)
        return notifier

    def flush_notifications(self, timeout: float = 5.0) -> bool:
        """Waits until the NOTIFYs of the commits so far are sent (tests); True on SQLite."""
        return self._wakes is None or self._wakes.flush(timeout)

    @contextmanager
    def _turn(self) -> Iterator[None]:
        """On SQLite, this process's turn to write (see `write`); on PostgreSQL, nothing."""
        if not self.is_sqlite:
            yield
            return
        if not self._writer_turn.acquire(timeout=self._turn_timeout):
            raise exc.TimeoutError(
                f"no turn to write within {self._turn_timeout:g} s: other writers of this"
                " process hold SQLite's write lock"
            )
        try:
            yield
        finally:
            self._writer_turn.release()

    def on_dispose(self, callback: Callable[[], None]) -> None:
        """Calls `callback` when this database is disposed (a listening thread stops then)."""
        self._on_dispose.append(callback)

    def dispose(self) -> None:
        for callback in self._on_dispose:
            callback()
        with self._wakes_lock:
            wakes, self._wakes = self._wakes, None  # a later commit makes a new one
        if wakes is not None:
            wakes.close()  # what is pending is sent first
        with self._wakes_lock:
            writer, self._writer = self._writer, None
        if writer is not None and writer[0] == os.getpid():
            writer[1].shutdown(wait=True)  # what was queued is written first
        self._readers.close_all()
        if self._loop_engine is not None:
            self._loop_engine.pool.dispose()
        self.engine.dispose()


def _send_with_commit(session: Session) -> None:
    """On PostgreSQL, the statements the transaction queued to send later (`later.py`) go
    with its COMMIT in one round trip, when nothing else is left to run first: no check of a
    queued result (those are sent now, and checked, before the COMMIT), no change of the
    ORM's to flush, no savepoint. Otherwise (and on SQLite) `session.commit()` sends them
    before its COMMIT. A check that failed earlier, even if caught, is raised again."""
    kept = session.info.get(_CONNECTION)
    if kept is None or not session.is_active:
        return
    connection = kept[1]
    later.raise_failed(connection)  # a check that failed and was caught: no commit
    if not later.pending(connection):
        return
    if later.checks_pending(connection):
        # Sent now, while the session can still run SQL (a refusal reads the figures it
        # reports), not from `session.commit()`; the COMMIT goes alone.
        later.send(connection)
        return
    if connection.in_nested_transaction() or session.new or session.dirty or session.deleted:
        return
    later.send(connection, commit=True)


class _Readers:
    """One DBAPI connection per thread, in autocommit mode, kept for `PreparedSelect` reads.
    In `iod serve` one thread reads this way, the event loop's (the fast GET and the list
    run there), so each API process holds one more database connection than its pool's:
    count it in PostgreSQL's `max_connections`. A thread that ends closes its own.

    Checking a connection out of the pool for each read costs the pool's bookkeeping and,
    on PostgreSQL, a round trip that waits on the event loop: the ROLLBACK when it goes
    back (and, before `_ping_if_disturbed`, `pool_pre_ping`'s SELECT 1). A kept
    autocommit connection costs neither; a connection the server has closed (a restart)
    is noticed by the read itself, which is then tried once more on a new one. The kept
    connections come from a pool of their own, configured as the engine's
    (`Pool.recreate`: the same size, timeout and connect events), so they never take a
    connection the sessions need and never go back to a pool in autocommit mode: a kept
    connection is closed when it fails or when the database is disposed."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        # An in-memory SQLite database lives in its connections: there is no second pool.
        pooled = isinstance(engine.pool, QueuePool)
        self.pool = engine.pool.recreate() if pooled else engine.pool
        # Event loop threads take theirs from a pool no other thread uses, so a loop never
        # waits for a pool that threads hold (the threadpool's token checks, the list threads
        # keep one each): its first checkout and a reconnect wait for nothing but the
        # database. One loop per process (a few in tests), far below the pool's size.
        self.loop_pool = engine.pool.recreate() if pooled else engine.pool
        self._local = threading.local()
        self._lock = threading.Lock()
        self._kept: set[PoolProxiedConnection] = set()

    def get(self) -> PoolProxiedConnection:
        holder: _Kept | None = getattr(self._local, "kept", None)
        if holder is not None and holder.connection.is_valid:
            return holder.connection
        connection = self._connect()
        try:
            dbapi_connection = connection.dbapi_connection
            assert dbapi_connection is not None  # a connection just checked out
            self._engine.dialect.set_isolation_level(dbapi_connection, "AUTOCOMMIT")
        except BaseException as error:
            connection.invalidate(error if isinstance(error, Exception) else None)
            raise
        with self._lock:
            self._kept.add(connection)
        holder = self._local.kept = _Kept(connection)
        # A thread that ends takes its holder with it: its connection is closed then.
        weakref.finalize(holder, self._close, connection, None)
        return connection

    def drop(self, error: BaseException | None = None) -> None:
        """Closes the calling thread's kept connection, if any."""
        holder: _Kept | None = getattr(self._local, "kept", None)
        if holder is not None:
            self._local.kept = None
            self._close(holder.connection, error)

    def close_all(self) -> None:
        with self._lock:
            kept = list(self._kept)
        for connection in kept:
            self._close(connection, None)
        for pool in (self.pool, self.loop_pool):
            if pool is not self._engine.pool:
                pool.dispose()

    def _connect(self) -> PoolProxiedConnection:
        pool = self.loop_pool if _on_event_loop() else self.pool
        try:
            return pool.connect()
        except self._engine.dialect.loaded_dbapi.Error as error:  # as Engine.connect() does
            raise exc.DBAPIError.instance(
                None, None, error, self._engine.dialect.loaded_dbapi.Error,
                dialect=self._engine.dialect,
            ) from error  # fmt: skip

    def _close(self, connection: PoolProxiedConnection, error: BaseException | None) -> None:
        with self._lock:
            if connection not in self._kept:
                return  # closed already (by drop, close_all or the thread's end)
            self._kept.discard(connection)
        connection.invalidate(error)  # closed and forgotten by the pool; a thread that still
        # holds it sees `is_valid` false and takes a new one


class _LoopTurns:
    """The turns of one event loop for writes on it (`Database._loop_turn`): whether the
    current turn has had its write, and the writes waiting for a turn, first come first.
    It keeps no reference to its loop: `Database` keeps it by the loop, weakly."""

    def __init__(self) -> None:
        self._taken = False
        self._waiters: deque[asyncio.Future[None]] = deque()

    async def wait(self, loop: asyncio.AbstractEventLoop) -> None:
        if not self._taken and not self._waiters:
            self._taken = True
            loop.call_soon(self._next, loop)
            return
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        await waiter  # cancelled: `_next` passes it over

    def _next(self, loop: asyncio.AbstractEventLoop) -> None:
        """A new turn of the loop: the first waiting write goes."""
        self._taken = False
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                self._taken = True
                loop.call_soon(self._next, loop)
                return


class _FairTurn:
    """A reentrant lock handed to its waiters in the order they came (first come, first
    served): the process's writers wait about as long as each other, rather than as long as
    the lock's barging leaves them (issue 14: p99 of the writes)."""

    def __init__(self) -> None:
        self._guard = threading.Lock()
        self._owner: int | None = None
        self._depth = 0
        self._waiting: deque[tuple[int, threading.Lock]] = deque()

    def try_acquire(self) -> bool:
        """The lock if no one holds it or waits for it, without waiting."""
        with self._guard:
            if self._owner is None and not self._waiting:
                self._owner, self._depth = threading.get_ident(), 1
                return True
            return False

    def acquire(self, timeout: float) -> bool:
        me = threading.get_ident()
        with self._guard:
            if self._owner == me:
                self._depth += 1
                return True
            if self._owner is None and not self._waiting:
                self._owner, self._depth = me, 1
                return True
            handed = threading.Lock()
            handed.acquire()
            self._waiting.append((me, handed))
        if handed.acquire(timeout=timeout):
            return True  # the releaser made this thread the owner
        with self._guard:
            if self._owner == me:  # handed over just as the wait ran out
                return True
            self._waiting.remove((me, handed))
            return False

    def release(self) -> None:
        with self._guard:
            assert self._owner == threading.get_ident(), "released by a thread not holding it"
            self._depth -= 1
            if self._depth:
                return
            if self._waiting:
                self._owner, handed = self._waiting.popleft()
                self._depth = 1
                handed.release()
            else:
                self._owner = None


def _on_event_loop() -> bool:
    """Whether the calling thread is running an asyncio event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


class _Kept:
    """A thread's kept connection, in that thread's `threading.local`."""

    def __init__(self, connection: PoolProxiedConnection) -> None:
        self.connection = connection


Returning: TypeAlias = Select[Any] | Insert | Update | TextualSelect
"""A statement that gives rows: a SELECT, an INSERT or UPDATE with RETURNING, or a text
statement with its columns (`text(...).columns(...)`, one the Core cannot build)."""


def _bind_processors(dialect: Any, compiled: Any) -> list[tuple[str, Callable[[Any], Any]]]:
    """The bind processors of a compiled statement's parameters, by the name each is
    rendered with (a name bound twice is processed once)."""
    found: dict[str, Callable[[Any], Any]] = {}
    for bind, name in compiled.bind_names.items():
        process = bind.type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            found[name] = process
    return list(found.items())


class _CompiledSelect:
    """A SELECT (or an INSERT or UPDATE … RETURNING) compiled once for a dialect: its SQL,
    how its parameters are bound (their types' bind processors, e.g. `UTCDateTime`'s), and
    how its rows are converted (its columns' result processors) into named tuples."""

    def __init__(self, dialect: Any, statement: Returning) -> None:
        compiled = statement.compile(dialect=dialect)
        self.sql = str(compiled)
        self._positions: Sequence[str] | None = compiled.positiontup
        self._fixed = compiled.params  # the values bound in the statement itself
        # The binds the statement leaves to each call: a missing one is an error, not NULL.
        self._required = frozenset(k for k, v in self._fixed.items() if v is None)
        self._process = _bind_processors(dialect, compiled)
        columns = (
            statement.selected_columns
            if isinstance(statement, Select)
            else statement.exported_columns
        )
        self._convert: list[tuple[int, Callable[[Any], Any]]] = []
        for index, column in enumerate(columns):
            process = column.type.dialect_impl(dialect).result_processor(dialect, None)
            if process is not None:
                self._convert.append((index, process))
        row = namedtuple("Row", list(map(str, columns.keys())))  # type: ignore[misc]
        self._make: Callable[[Iterable[Any]], Any] = row._make

    def bind(self, params: dict[str, Any]) -> Any:
        if not self._required <= params.keys():
            raise TypeError(f"missing parameters: {sorted(self._required - params.keys())}")
        values = {**self._fixed, **params}
        for name, process in self._process:
            values[name] = process(values[name])
        return values if self._positions is None else tuple(values[k] for k in self._positions)

    def convert(self, fetched: Iterable[Any]) -> list[Any]:
        make, convert = self._make, self._convert
        if not convert:
            return [make(row) for row in fetched]
        result = []
        for row in fetched:
            values = list(row)
            for index, process in convert:
                values[index] = process(values[index])
            result.append(make(values))
        return result


class PreparedSelect:
    """A SELECT compiled once and run straight on a DBAPI connection, for the hottest reads
    (GET one connection, a list page; issue 6).

    SQLAlchemy's execution (a `Connection`, the execution context, the result object) costs
    about 60 µs a statement here; the read itself, in SQLite, 8 µs. This keeps what matters
    from SQLAlchemy (the SQL as the dialect renders it, its connections, the column types'
    result conversions, e.g. `UTCDateTime`) and skips the rest: the statement is compiled once,
    each row goes through its columns' result processors and comes back as a named tuple
    with the statement's column names. Bound parameters go through their types' bind
    processors (none for the strings of the hot reads).

    It runs on the calling thread's kept autocommit connection (`_Readers`): one statement
    is consistent by itself. A DBAPI error comes out as SQLAlchemy's wrapped exception
    (`exc.OperationalError`...), as from any other query, and closes that connection.
    """

    def __init__(self, engine: Engine, readers: _Readers, statement: Select[Any]) -> None:
        self._engine = engine
        self._readers = readers
        self._compiled = _CompiledSelect(engine.dialect, statement)
        self.sql = self._compiled.sql
        self._error = engine.dialect.loaded_dbapi.Error

    def rows(self, **params: Any) -> list[Any]:
        bound = self._compiled.bind(params)
        return self._compiled.convert(self._fetch(bound))

    def _fetch(self, bound: Any) -> list[Any]:
        for attempt in (1, 2):
            connection = self._readers.get()
            try:
                cursor = connection.cursor()
                try:
                    cursor.execute(self.sql, bound)
                    return list(cursor.fetchall())
                finally:
                    cursor.close()
            except self._error as error:
                dialect = self._engine.dialect
                dead = dialect.is_disconnect(error, connection.dbapi_connection, None)
                self._readers.drop(error)
                if dead and attempt == 1:
                    continue  # the server closed it (e.g. restarted): once more, on a new one
                raise exc.DBAPIError.instance(
                    self.sql, bound, error, self._error, connection_invalidated=dead,
                    dialect=dialect,
                ) from error  # fmt: skip
        raise AssertionError("unreachable")


class TransactionSelect:
    """A `PreparedSelect` for a write transaction: the SELECT compiled once per dialect and
    run straight on the DBAPI connection of the session's transaction, so it reads (and,
    with FOR UPDATE, locks) in that transaction, without SQLAlchemy's execution or the
    ORM's loading (issue 14: the hot reads of a write). Rows come back as named tuples, as
    from `PreparedSelect`; parameters go through their types' bind processors. An INSERT
    or UPDATE with RETURNING runs the same way (its rows are the RETURNING columns; no
    loaded object sees what it wrote). A DBAPI error comes out as SQLAlchemy's wrapped
    exception; a lost connection is invalidated. SQLAlchemy's statement events
    (`before_cursor_execute`...) do not see these statements."""

    def __init__(self, statement: Returning) -> None:
        self.statement = statement
        # By dialect and driver: psycopg and psycopg2 render and bind differently.
        self._compiled: dict[tuple[str, str], _CompiledSelect] = {}

    def rows(self, session: Session, **params: Any) -> list[Any]:
        connection = _connection(session)
        compiled = self._compiled_for(connection)
        bound = compiled.bind(params)
        return compiled.convert(_run(connection, compiled.sql, bound, fetch=True))

    def later(self, session: Session, then: Callable[[list[Any]], None], **params: Any) -> None:
        """`then(self.rows(session, **params))`, the statement sent with the transaction's
        next round trip where it can be (`later.py`: PostgreSQL), at once elsewhere. For an
        UPDATE … RETURNING whose rows only a check needs: `then` runs before the commit, and
        what it raises rolls the transaction back."""
        connection = _connection(session)
        if not later.defers(connection):
            then(self.rows(session, **params))
            return
        compiled = self._compiled_for(connection)
        later.queue(
            connection,
            later.Later(compiled.sql, compiled.bind(params), True, False,
                        lambda fetched: then(compiled.convert(fetched))),
        )  # fmt: skip

    def _compiled_for(self, connection: Connection) -> _CompiledSelect:
        dialect = connection.dialect
        which = (dialect.name, dialect.driver)
        compiled = self._compiled.get(which)
        if compiled is None:
            compiled = self._compiled[which] = _CompiledSelect(dialect, self.statement)
        return compiled


class TransactionSelectIn:
    """A `TransactionSelect` with one list parameter, `column IN (...)`: a batch's rows in
    one statement rather than one per item, still compiled once. SQLAlchemy's expanding IN
    renders the statement anew at each run; this compiles it once per power-of-two count of
    placeholders (1, 2, 4 … `CHUNK`), the list padded with its last item (a repeat in an IN
    changes nothing), and runs a longer list `CHUNK` items at a time (issue 14: the worker's
    batches). `build` makes the statement around the IN condition it is given."""

    CHUNK = 64

    def __init__(self, column: Any, build: Callable[[Any], Returning]) -> None:
        self._column = column
        self._build = build
        self._by_count: dict[int, TransactionSelect] = {}

    def rows(self, session: Session, values: Sequence[Any], **params: Any) -> list[Any]:
        found: list[Any] = []
        for start in range(0, len(values), self.CHUNK):
            chunk = list(values[start : start + self.CHUNK])
            count = 1 << (len(chunk) - 1).bit_length()
            statement = self._by_count.get(count)
            if statement is None:
                places = [bindparam(f"in_{i}", type_=self._column.type) for i in range(count)]
                statement = TransactionSelect(self._build(self._column.in_(places)))
                self._by_count[count] = statement
            chunk += chunk[-1:] * (count - len(chunk))
            found += statement.rows(
                session, **params, **{f"in_{i}": v for i, v in enumerate(chunk)}
            )
        return found


_CONNECTION = "iod_transaction_connection"


def _connection(session: Session) -> Connection:
    """`session.connection()`, kept in the session's info for the transaction (and savepoint)
    it belongs to: asking the session each time walked its transaction's state machine
    again, for each of a write's 15 or so statements (issue 14). A savepoint is a key of its
    own: the session emits its SAVEPOINT when its connection is first asked for in it. A
    session whose transaction failed (not `is_active`) asks the session again, which raises
    its PendingRollbackError as before."""
    where = (session.get_transaction(), session.get_nested_transaction())
    kept = session.info.get(_CONNECTION)
    if where[0] is not None and kept is not None and kept[0] == where and session.is_active:
        return cast(Connection, kept[1])
    connection = session.connection()
    session.info[_CONNECTION] = (
        (session.get_transaction(), session.get_nested_transaction()),
        connection,
    )
    return connection


def _run(connection: Connection, sql: str, bound: Any, *, fetch: bool, many: bool = False) -> Any:
    """Runs `sql` on the DBAPI connection of `connection` (a session's, in its transaction):
    the rows fetched (`fetch`), or the row count. DBAPI errors as SQLAlchemy's. What the
    transaction queued to send later goes first (`later.py`)."""
    if later.pending(connection):  # the queue and this statement in one round trip
        result: list[Any] = []
        later.queue(connection, later.Later(sql, bound, fetch, many, result.append))
        later.send(connection)
        return result[0]
    dialect = connection.dialect
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None  # the transaction's, checked out
    error_type = dialect.loaded_dbapi.Error
    try:
        cursor = dbapi_connection.cursor()
        try:
            if many:
                cursor.executemany(sql, bound)
            else:
                cursor.execute(sql, bound)
            return cursor.fetchall() if fetch else cursor.rowcount
        finally:
            cursor.close()
    except error_type as error:
        dead = dialect.is_disconnect(error, dbapi_connection, None)
        if dead:
            connection.invalidate(error)
        raise exc.DBAPIError.instance(
            sql, bound, error, error_type, connection_invalidated=dead, dialect=dialect
        ) from error


class _CompiledWrite:
    """An INSERT or UPDATE compiled once for a dialect and a set of parameter names, with
    its parameters' bind processors (e.g. `UTCDateTime`'s, JSON's)."""

    def __init__(self, dialect: Any, statement: Insert | Update, keys: frozenset[str]) -> None:
        compiled = statement.compile(dialect=dialect, column_keys=sorted(keys))
        self.sql = str(compiled)
        self._positions: Sequence[str] | None = compiled.positiontup
        # The values bound in the statement itself (`.values(state="running")`, `+ 1`).
        self._fixed = {
            name: value
            for name, value in compiled.params.items()
            if name not in keys and value is not None
        }
        names = set(compiled.bind_names.values())  # as rendered (anonymous ones too)
        if names != keys | self._fixed.keys() or compiled.prefetch:  # e.g. a column's
            # Python default, which only SQLAlchemy's execution would fill in: such a
            # statement is not for this
            raise TypeError(f"parameters {sorted(keys)} do not bind {sorted(names)}")
        self._process = _bind_processors(dialect, compiled)

    def bind(self, params: dict[str, Any]) -> Any:
        values = {**self._fixed, **params} if self._fixed else dict(params)
        for name, process in self._process:
            values[name] = process(values[name])
        return values if self._positions is None else tuple(values[k] for k in self._positions)


class TransactionWrite:
    """An INSERT or UPDATE (no RETURNING) run like a `TransactionSelect`: compiled once per
    dialect and set of parameter names, executed straight on the DBAPI connection of the
    session's transaction with the columns' bind processors, without SQLAlchemy's execution
    (issue 14: the rows a write adds or changes and never reads back as objects). Every
    parameter must be given, but for the values written in the statement itself (no column
    defaults are filled in); a list of several parameter sets is one `executemany` (a list
    of one, a single execute). Not seen by SQLAlchemy's statement events or the ORM."""

    def __init__(self, statement: Insert | Update) -> None:
        self.statement = statement
        self._compiled: dict[tuple[str, str, frozenset[str]], _CompiledWrite] = {}

    def execute(self, session: Session, params: dict[str, Any] | list[dict[str, Any]]) -> int:
        """Runs it once, or once per parameter set; the row count. A list of one set is run
        as one: psycopg's `executemany` enters and leaves pipeline mode, which cost more
        than the INSERT of the usual write's one audit row or event (issue 14)."""
        connection = _connection(session)
        bound = self._bound(connection, params)
        if bound is None:
            return 0
        sql, values, many = bound
        return int(_run(connection, sql, values, fetch=False, many=many))

    def later(
        self,
        session: Session,
        params: dict[str, Any] | list[dict[str, Any]],
        then: Callable[[int], None] | None = None,
    ) -> None:
        """`execute`, sent with the transaction's next round trip where it can be
        (`later.py`: PostgreSQL), at once elsewhere; `then`, if given, gets the row count
        before the commit (what it raises rolls the transaction back)."""
        connection = _connection(session)
        bound = self._bound(connection, params)
        if bound is None:
            return
        sql, values, many = bound
        if later.defers(connection):
            later.queue(connection, later.Later(sql, values, False, many, then))
            return
        count = int(_run(connection, sql, values, fetch=False, many=many))
        if then is not None:
            then(count)

    def _bound(
        self, connection: Connection, params: dict[str, Any] | list[dict[str, Any]]
    ) -> tuple[str, Any, bool] | None:
        """The SQL and its bound parameters (a list of them for `executemany`), None for no
        parameter set."""
        sets = params if isinstance(params, list) else [params]
        if not sets:
            return None
        dialect = connection.dialect
        keys = frozenset(sets[0])
        key = (dialect.name, dialect.driver, keys)
        compiled = self._compiled.get(key)
        if compiled is None:
            compiled = self._compiled[key] = _CompiledWrite(dialect, self.statement, keys)
        if len(sets) > 1:
            if any(frozenset(p) != keys for p in sets):
                raise TypeError("every parameter set must have the same names")
            return compiled.sql, [compiled.bind(p) for p in sets], True
        return compiled.sql, compiled.bind(sets[0]), False


def as_loaded(session: Session, model: type[Any], row: Any) -> Any:
    """The object of `model` for `row` (a named tuple of every column of its table, by
    attribute name, or such a dict), as if the ORM had loaded it with `populate_existing`:
    the object of the session's identity map with the row's values, or a new one added to
    the session as persistent. None when the session holds that object with changes not
    flushed yet (the caller then loads it through the ORM, which decides what they
    become)."""
    values = row if isinstance(row, dict) else row._asdict()
    mapper = inspect(model)
    key = session.identity_key(model, tuple(values[c.key] for c in mapper.primary_key))
    existing = session.identity_map.get(key)
    if existing is not None:
        if inspect(existing).modified:
            return None
        for name, value in values.items():
            set_committed_value(existing, name, value)
        return existing
    # Made as the ORM's loading makes it: no constructor, whose attribute events (history,
    # per column) cost more than the read (issue 14); `make_transient_to_detached` commits
    # the values as loaded.
    instance = mapper.class_manager.new_instance()
    instance_dict(instance).update(values)
    make_transient_to_detached(instance)
    session.add(instance)
    return instance


def insert_new(session: Session, table: Any, values: dict[str, Any]) -> bool:
    """INSERT … ON CONFLICT DO NOTHING on either database; True if the row was inserted.
    On PostgreSQL a concurrent insert of the same key waits for the other transaction and
    then does nothing, so exactly one of them inserts."""
    if session.get_bind().dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:
        from sqlalchemy.dialects.postgresql import insert  # type: ignore[assignment]
    # RETURNING, not the row count: psycopg's count is not 0 for a conflict skipped.
    key = next(iter(table.primary_key.columns))
    statement = insert(table).values(**values).on_conflict_do_nothing().returning(key)
    return session.execute(statement).first() is not None


# `update_loaded`'s statements, one per table and set of columns written, and
# `insert_loaded`'s, one per table.
_UPDATES: dict[tuple[Table, frozenset[str]], TransactionWrite] = {}
_INSERTS: dict[Table, TransactionWrite] = {}


def update_loaded(
    session: Session, instance: Any, values: dict[str, Any], *, send_later: bool = False
) -> None:
    """Writes `values` (attribute names: values) to the row of `instance`, a persistent
    object of this session, now: one Core UPDATE by its primary key, built once per table
    and set of columns, and the loaded object shows the values without becoming dirty. The
    ORM's flush of the same change (its unit of work, history, one UPDATE built per flush)
    cost several times the statement on the hot writes (issue 14). Run as a
    `TransactionWrite`.

    Inside a savepoint, or when the object has changes that are not flushed yet, the values
    are set on the object as usual instead (the next flush writes them in the ORM's order,
    and a savepoint that rolls back expires them, which an UPDATE behind the ORM's back
    would not).

    `send_later`: the UPDATE goes with the transaction's next round trip where it can
    (`TransactionWrite.later`), its row count checked then: for a row this transaction has
    locked, which cannot be gone."""
    state = inspect(instance)
    if not (state.persistent or state.pending) or state.session_id != session.hash_key:
        raise exc.InvalidRequestError(f"update_loaded: {instance!r} is not of this session")
    if state.pending or state.modified or session.in_nested_transaction():
        for name, value in values.items():
            setattr(instance, name, value)
        return
    mapper = state.mapper
    table = mapper.local_table
    assert isinstance(table, Table)
    key = (table, frozenset(values))
    statement = _UPDATES.get(key)
    if statement is None:
        (primary_key,) = table.primary_key.columns
        columns = {name: mapper.column_attrs[name].columns[0] for name in sorted(values)}
        binds = {column: bindparam(name, type_=column.type) for name, column in columns.items()}
        statement = _UPDATES[key] = TransactionWrite(
            update(table)
            .where(primary_key == bindparam("pk_", type_=primary_key.type))
            .values(binds)
        )
    (identity,) = state.identity

    def counted(count: int) -> None:
        if count != 1:  # as the ORM's flush would: the row this object stands for is gone
            raise StaleDataError(f"update_loaded: no {table.name} row {identity!r} to update")

    if send_later:
        statement.later(session, {**values, "pk_": identity}, counted)
    else:
        counted(statement.execute(session, {**values, "pk_": identity}))
    for name, value in values.items():
        set_committed_value(instance, name, value)


def insert_loaded(session: Session, instance: Any) -> None:
    """Writes `instance`, a new object with every column set (its primary key included),
    now, with one INSERT (a `TransactionWrite`), and adds it to the session as a persistent
    object, as if it had been flushed and loaded: the later `update_loaded`s of it are
    plain UPDATEs. Its row is written in the caller's order, not in a flush's: whatever it
    refers to must be written already."""
    state = inspect(instance)
    assert state.transient, "a new object"
    if session.in_nested_transaction():
        # A savepoint's rollback must take the object out of the session again, which it
        # does only for objects it saw flushed.
        session.add(instance)
        session.flush()
        return
    mapper = state.mapper
    table = mapper.local_table
    assert isinstance(table, Table)
    values = {
        attribute.columns[0].key: state.dict[attribute.key] for attribute in mapper.column_attrs
    }
    statement = _INSERTS.get(table)
    if statement is None:
        statement = _INSERTS[table] = TransactionWrite(table.insert())
    statement.execute(session, values)
    make_transient_to_detached(instance)
    session.add(instance)
