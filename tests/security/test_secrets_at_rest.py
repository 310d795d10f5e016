"""Secrets at rest (issue 12, item 1): another local user cannot read the database or the
signing keys, a key store open to others stops the start, and private keys can be encrypted
with a key the database does not hold."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import tempfile
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select
from structlog.testing import capture_logs

from iod.auth import keys
from iod.auth.keys import ENCRYPTED_PEM, KeyDecryptionError, KeyStore
from iod.auth.tokens import TokenService
from iod.infra.clock import FrozenClock
from iod.infra.config import Settings
from iod.infra.db import Database
from iod.infra.runtime import SchemaBehind, open_database
from iod.models import SigningKey
from iod.network.factory import make_driver

KEK = b"k" * 40
UNPRIVILEGED = "nobody"


@pytest.fixture(autouse=True)
def keep_umask() -> Iterator[None]:
    """open_database() makes the process umask 077: the test session gets its own back."""
    previous = os.umask(0o022)
    os.umask(previous)
    yield
    os.umask(previous)


@pytest.fixture
def loose_umask() -> None:
    """The usual umask (022): without the service's care files would be 0644."""
    os.umask(0o022)


@pytest.fixture
def world_traversable() -> Iterator[Path]:
    """A directory every user may enter (pytest's tmp_path is 0700, which alone would keep
    the unprivileged user out and prove nothing)."""
    base = Path(tempfile.mkdtemp(prefix="iod-at-rest-"))
    base.chmod(0o755)
    yield base
    subprocess.run(["rm", "-rf", str(base)], check=False)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _as_unprivileged(path: Path) -> subprocess.CompletedProcess[str]:
    """Reads `path` as the unprivileged user (`cat`); exit 0 if it could."""
    return subprocess.run(
        ["/bin/cat", str(path)], user=UNPRIVILEGED, cwd="/", capture_output=True, text=True,
        errors="replace",
    )  # fmt: skip


def _settings(data_dir: Path, **more: object) -> Settings:
    return Settings(data_dir=data_dir, **more)  # type: ignore[arg-type]


# The drivers _open_everything made, kept until the test ends: a driver left to the garbage
# collector closes its store whenever a collection runs, and SQLite then removes its -shm
# and -wal files, possibly between the test's listing of the directory and its stat().
_KEPT_OPEN: list[object] = []


def _open_everything(settings: Settings) -> Database:
    """What `iod serve` does with its data directory: the database with its first signing
    key (WAL and SHM in use) and the simulated network's store."""
    db = open_database(settings)
    KeyStore(db, FrozenClock()).ensure()
    _KEPT_OPEN.append(make_driver(settings))
    return db


needs_root = pytest.mark.skipif(
    os.geteuid() != 0, reason="running as another user (setuid to 'nobody') needs root"
)


@needs_root
def test_another_local_user_cannot_read_the_database_or_the_keys(
    world_traversable: Path, loose_umask: None
) -> None:
    data_dir = world_traversable / "data"
    settings = _settings(data_dir)
    db = _open_everything(settings)
    try:
        files = sorted(p for p in data_dir.iterdir())
        names = {p.name for p in files}
        assert {"iod.sqlite3", "iod.sqlite3-wal", "iod.sqlite3-shm"} <= names
        assert "simulated-network.sqlite3" in names
        assert _mode(data_dir) == 0o700
        for path in files:
            assert _mode(path) == 0o600, path
            refused = _as_unprivileged(path)
            assert refused.returncode != 0 and "Permission denied" in refused.stderr, path
    finally:
        db.dispose()
        _KEPT_OPEN.clear()


@needs_root
def test_an_open_data_directory_is_tightened_at_start_with_a_warning(
    world_traversable: Path, loose_umask: None
) -> None:
    # What an earlier release left: 0755 and 0644, readable by anyone (the control: the
    # unprivileged user reads the database here, so the test can fail).
    data_dir = world_traversable / "data"
    data_dir.mkdir(mode=0o755)
    database = data_dir / "iod.sqlite3"
    sqlite3.connect(database).execute("CREATE TABLE t (x)").connection.close()
    (data_dir / "demo-client.json").write_text("{}")
    assert _mode(database) == 0o644
    assert _as_unprivileged(database).returncode == 0

    with capture_logs() as logs:
        open_database(_settings(data_dir)).dispose()
    assert _mode(data_dir) == 0o700
    assert _mode(database) == 0o600
    assert _mode(data_dir / "demo-client.json") == 0o600
    assert "Permission denied" in _as_unprivileged(database).stderr
    warned = {e["path"] for e in logs if e["event"] == "files.tightened"}
    assert warned == {str(data_dir), str(database), str(data_dir / "demo-client.json")}
    assert all(e["log_level"] == "warning" for e in logs if e["event"] == "files.tightened")


def test_a_sqlite_key_store_open_to_others_refuses_to_start_unless_allowed(
    tmp_path: Path,
) -> None:
    elsewhere = tmp_path / "elsewhere.sqlite3"
    sqlite3.connect(elsewhere).close()
    elsewhere.chmod(0o644)
    settings = _settings(tmp_path / "data", database_url=f"sqlite:///{elsewhere}")
    with pytest.raises(SchemaBehind, match=r"elsewhere.sqlite3 is accessible by others.*chmod 600"):
        open_database(settings)
    assert _mode(elsewhere) == 0o644  # the operator's file: refused, not changed

    allowed = settings.model_copy(update={"allow_insecure_key_store": True})
    open_database(allowed).dispose()
    elsewhere.chmod(0o600)
    open_database(settings).dispose()


def test_a_key_encryption_key_file_must_be_private_and_long_enough(tmp_path: Path) -> None:
    key_file = tmp_path / "kek"
    key_file.write_bytes(KEK)
    key_file.chmod(0o640)
    settings = _settings(tmp_path / "data", key_encryption_key_file=key_file)
    with pytest.raises(SchemaBehind, match="kek is accessible by others"):
        open_database(settings)
    key_file.chmod(0o600)
    open_database(settings).dispose()

    key_file.write_bytes(b"short")
    with pytest.raises(SchemaBehind, match="at least 32 are needed"):
        open_database(settings)
    missing = settings.model_copy(update={"key_encryption_key_file": tmp_path / "nope"})
    with pytest.raises(SchemaBehind, match="cannot read IOD_KEY_ENCRYPTION_KEY_FILE"):
        open_database(missing)


def _pems(db: Database) -> dict[str, str]:
    with db.read() as session:
        return {row.kid: row.private_pem for row in session.scalars(select(SigningKey))}


def _tokens(store: KeyStore, clock: FrozenClock) -> TokenService:
    return TokenService(store, clock, issuer="http://iod", audience="iod", ttl=600)


def test_private_keys_are_encrypted_at_rest_with_the_configured_key(
    database: Database, clock: FrozenClock
) -> None:
    store = KeyStore(database, clock, encryption_key=KEK)
    store.ensure()
    with database.write() as session:
        keys.rotate(session, clock.now(), timedelta(0), KEK)
    pems = _pems(database)
    assert len(pems) == 2
    assert all(pem.startswith(ENCRYPTED_PEM) for pem in pems.values())
    store.reload()
    token = _tokens(store, clock).issue("cli_x", "cus_x", ["read"])
    assert _tokens(KeyStore(database, clock, encryption_key=KEK), clock).verify(token)

    with pytest.raises(KeyDecryptionError, match="is encrypted: set IOD_KEY_ENCRYPTION_KEY"):
        KeyStore(database, clock).reload()
    with pytest.raises(KeyDecryptionError, match="cannot be decrypted"):
        KeyStore(database, clock, encryption_key=b"w" * 40).reload()


def test_keys_stored_in_the_clear_stay_readable_and_are_encrypted_once_a_key_is_set(
    database: Database, clock: FrozenClock
) -> None:
    before = KeyStore(database, clock)
    before.ensure()
    (kid, pem), *_ = _pems(database).items()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    token = _tokens(before, clock).issue("cli_x", "cus_x", ["read"])

    after = KeyStore(database, clock, encryption_key=KEK)
    after.ensure()
    stored = _pems(database)
    assert list(stored) == [kid]
    assert stored[kid].startswith(ENCRYPTED_PEM)
    assert _tokens(after, clock).verify(token).client_id == "cli_x"  # same key, same tokens
    assert after.signing_key.kid == kid
