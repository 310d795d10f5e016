"""Shared fixtures: migrated SQLite and PostgreSQL databases, services, an ASGI client."""

from __future__ import annotations

import gc
import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import structlog
from fastapi.testclient import TestClient
from hypothesis import settings as hypothesis_settings
from sqlalchemy import func, select, text
from sqlalchemy.engine import Connection as DBConnection

from iod.app import Services, build_services, create_app
from iod.customers import service as customers
from iod.infra import migrate
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Base, Database, make_engine
from iod.locations import catalog
from iod.locations import service as locations
from iod.models import AuditEvent, BandwidthChange, Connection, Job
from iod.network.simulated import SimulatedDriver
from tests import parallel

# Hypothesis example counts: "ci" (the default, `make test`) keeps hypothesis's own 100 for
# tests that do not set a count; "fuzz" (`make fuzz`) runs the fuzz tests (tests/unit/
# test_fuzz.py, tests/api/test_fuzz_api.py) with IOD_FUZZ_EXAMPLES each. No profile has a
# deadline: hypothesis's 200 ms an example failed tests on a loaded machine, not the code.
hypothesis_settings.register_profile("ci", max_examples=100, deadline=None)
hypothesis_settings.register_profile(
    "fuzz", max_examples=int(os.environ.get("IOD_FUZZ_EXAMPLES", "20000")), deadline=None
)
# "thorough" (`make fuzz` too): the property tests of tests/unit with the counts they ask for
# through thorough(N); under "ci" they run the profile's 100, which is all `make test` needs.
hypothesis_settings.register_profile("thorough", max_examples=100, deadline=None)
HYPOTHESIS_PROFILE = os.environ.get("IOD_HYPOTHESIS_PROFILE", "ci")
hypothesis_settings.load_profile(HYPOTHESIS_PROFILE)


def thorough(examples: int) -> int:
    """A property test's example count: `examples` under the "thorough" and "fuzz" profiles
    (`make fuzz`), the profile's own 100 under `make test`."""
    return examples if HYPOTHESIS_PROFILE in ("thorough", "fuzz") else 100


# The apps of these tests log through structlog's default configuration, whose console
# renderer drew a logged exception (each 500) with rich: about 10 s of CPU each. The same
# traceback, plain. (Served processes configure their own logging.)
structlog.configure(
    processors=[
        *structlog.get_config()["processors"][:-1],
        structlog.dev.ConsoleRenderer(exception_formatter=structlog.dev.plain_traceback),
    ]
)

PG_URL = os.environ.get("IOD_TEST_DATABASE_URL")
REQUIRE_PG = os.environ.get("IOD_REQUIRE_POSTGRES") == "1"
BACKENDS = ["sqlite", "postgres"]


def pytest_configure(config: pytest.Config) -> None:
    """An xdist worker tests PostgreSQL in a database of its own (tests/parallel.py)."""
    global PG_URL
    worker = parallel.worker_id()
    if PG_URL and worker:
        PG_URL = parallel.create_worker_database(PG_URL, worker)
        os.environ["IOD_TEST_DATABASE_URL"] = PG_URL  # what served processes are given


def pytest_unconfigure(config: pytest.Config) -> None:
    if PG_URL and parallel.worker_id():
        parallel.drop_database(PG_URL)
    elif PG_URL and getattr(config.option, "numprocesses", None):
        parallel.drop_worker_databases(PG_URL)  # the controller: what a killed worker left


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Every test of tests/dataplane and tests/faults runs in `make pytest`'s serial pass."""
    parallel.mark(items, config)


def postgres_url() -> str:
    """The PostgreSQL the tests may wipe; CI must provide it, a laptop may skip it."""
    if PG_URL:
        return PG_URL
    if REQUIRE_PG:
        pytest.fail("IOD_REQUIRE_POSTGRES=1 but IOD_TEST_DATABASE_URL is not set")
    pytest.skip("PostgreSQL tests need IOD_TEST_DATABASE_URL (set by .ci/run)")


def migrate_to(database: Database, revision: str, *, down: bool) -> None:
    """Upgrades (or, `down`, downgrades) `database` to `revision`: the migrations' tests."""
    from alembic import command

    config = migrate.alembic_config()
    with database.engine.begin() as conn:
        config.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(config, revision)


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    migrate.upgrade(engine)
    engine.dispose()
    return path


_pg_ready = False


def _prepare_postgres() -> Database:
    global _pg_ready
    engine = make_engine(postgres_url(), pool_size=5, max_overflow=5)
    if not _pg_ready:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        migrate.upgrade(engine)
        _pg_ready = True
    with engine.begin() as conn:
        _empty_tables(conn)
    return Database(engine)


# Every sequence a test used back at its start, as `TRUNCATE ... RESTART IDENTITY` did.
_RESTART_SEQUENCES = text(
    "SELECT setval(format('%I.%I', schemaname, sequencename)::regclass, start_value, false)"
    " FROM pg_sequences WHERE schemaname = current_schema() AND last_value IS NOT NULL"
)


def _empty_tables(conn: DBConnection) -> None:
    """The tables as a fresh migration leaves them: a DELETE per table, children first, and
    the sequences restarted. Not `TRUNCATE`: it gives each of the 38 tables and their indexes
    new files, 0.3 to 0.5 s a test on a slow disk (about 200 s of the suite on two workers),
    where deleting the few rows a test leaves takes 10 ms."""
    for table in reversed(Base.metadata.sorted_tables):
        conn.execute(table.delete())
    conn.execute(_RESTART_SEQUENCES)


@pytest.fixture(params=BACKENDS)
def database(
    request: pytest.FixtureRequest, sqlite_template: Path, tmp_path: Path
) -> Iterator[Database]:
    """An empty, migrated database of each backend."""
    if request.param == "sqlite":
        path = tmp_path / "iod.sqlite3"
        shutil.copy(sqlite_template, path)
        db = Database(make_engine(f"sqlite:///{path}"))
    else:
        db = _prepare_postgres()
    yield db
    db.dispose()


@pytest.fixture
def sqlite_database(sqlite_template: Path, tmp_path: Path) -> Iterator[Database]:
    path = tmp_path / "iod.sqlite3"
    shutil.copy(sqlite_template, path)
    db = Database(make_engine(f"sqlite:///{path}"))
    yield db
    db.dispose()


@pytest.fixture
def clock() -> FrozenClock:
    return FrozenClock()


@pytest.fixture
def driver() -> SimulatedDriver:
    return SimulatedDriver()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        simulated_provision_seconds=0,
        simulated_change_seconds=0,
        job_backoff_seconds=0,
        client_cache_seconds=0,
        token_ttl=86400,
        # Off here, so a fast test machine cannot trip them; tests/security turns them on
        # with a clock of its own.
        rate_limit_reads_per_second=0,
        rate_limit_writes_per_second=0,
        # Tests count jobs; tests/integration/test_periodic.py runs the scheduler itself.
        periodic_tasks=False,
    )


@pytest.fixture
def services(
    database: Database, clock: FrozenClock, driver: SimulatedDriver, settings: Settings
) -> Services:
    services = build_services(settings, db=database, clock=clock, driver=driver)
    with database.write() as session:
        locations.upsert(session, clock, locations.parse_catalog(catalog.DEMO_LOCATIONS))
    return services


@dataclass
class Tenant:
    customer_id: str
    client_id: str
    client_secret: str


@pytest.fixture
def make_tenant(services: Services):  # type: ignore[no-untyped-def]
    def make(scopes: str = "read write", name: str = "Acme") -> Tenant:
        with services.db.write() as session:
            customer = customers.create_customer(session, services.clock, name)
            new = customers.create_client(
                session, services.clock, customer.id, scopes, hasher=services.secret_hasher
            )
        return Tenant(customer.id, new.client_id, new.client_secret)

    return make


@pytest.fixture
def api(services: Services) -> Iterator[TestClient]:
    app = create_app(services, run_worker=False)
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def get_token(api: TestClient, tenant: Tenant, scope: str | None = None) -> str:
    form = {"grant_type": "client_credentials"}
    if scope is not None:
        form["scope"] = scope
    response = api.post("/oauth2/token", data=form, auth=(tenant.client_id, tenant.client_secret))
    assert response.status_code == 200, response.text
    return str(response.json()["access_token"])


@pytest.fixture
def tenant(make_tenant) -> Tenant:  # type: ignore[no-untyped-def]
    return make_tenant()


@pytest.fixture
def headers(api: TestClient, tenant: Tenant) -> dict[str, str]:
    return {"Authorization": f"Bearer {get_token(api, tenant)}"}


def run_jobs(services: Services) -> int:
    """Runs every due job to completion, as the worker would."""
    return services.worker().run_until_idle()


def counts(services: Services) -> tuple[int, int, int]:
    """Rows in connections, bandwidth_changes and jobs."""
    with services.db.read() as session:
        return tuple(  # type: ignore[return-value]
            session.scalar(select(func.count()).select_from(model)) or 0
            for model in (Connection, BandwidthChange, Job)
        )


def audit_count(services: Services) -> int:
    with services.db.read() as session:
        return session.scalar(select(func.count()).select_from(AuditEvent)) or 0


@contextmanager
def nothing_written(services: Services) -> Iterator[None]:
    """Asserts that the block (a rejected request) wrote no rows, audit records included."""
    before = counts(services), audit_count(services)
    yield
    assert (counts(services), audit_count(services)) == before, "a rejected request wrote rows"


def pytest_collection_finish(session: pytest.Session) -> None:
    """What is alive once the tests are collected (the modules, the app's classes, the
    collected items) lives as long as the run: out of the cyclic collector's reach, its
    full collections stop walking them again and again."""
    gc.collect()
    gc.freeze()


def reads_meet(monkeypatch: pytest.MonkeyPatch, owner: object, name: str) -> None:
    """Makes `owner.name` (a read) wait, once it has read, until two callers have read: two
    transactions then act on the same snapshot unless the read locks, in which case the
    second blocks in it, the wait gives up after a second, and they run one after the
    other (the concurrency tests' way to show a lost update)."""
    import contextlib
    import threading

    both_read = threading.Barrier(2, timeout=1)
    read = getattr(owner, name)

    def read_then_wait(*args: object, **kwargs: object) -> object:
        found = read(*args, **kwargs)
        with contextlib.suppress(threading.BrokenBarrierError):
            both_read.wait()
        return found

    monkeypatch.setattr(owner, name, read_then_wait)
