"""Secrets at rest: the data directory and the key store are readable by their owner only.

The embedded SQLite database holds the signing keys' private PEM and the client secrets'
hashes: whoever can read it can mint tokens the API accepts. So the data directory is made
0700 and every file in it 0600 (the database, its WAL and SHM, the simulated network's
store, the demo secret); what an earlier release or a loose umask left open is tightened at
start, with a warning. A key store outside the data directory (a SQLite file named by
`IOD_DATABASE_URL`, the key encryption key file) is the operator's: like ssh with a private
key, the process refuses to start while group or others may read it, unless
`IOD_ALLOW_INSECURE_KEY_STORE` says otherwise.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import structlog
from sqlalchemy.engine import make_url

from iod.infra.config import Settings

log = structlog.get_logger("iod.secure")

OTHERS = 0o077  # group and others: any of these bits makes a file not private
# The key encryption key must carry at least this many bytes (e.g. `openssl rand -base64 32`).
MIN_KEY_ENCRYPTION_KEY_BYTES = 32


class InsecureKeyStore(Exception):
    """The process must not start: the message names the file and what to do."""


def private_umask() -> None:
    """Everything this process creates is its owner's alone (0700 directories, 0600 files)."""
    os.umask(os.umask(OTHERS) | OTHERS)


def create_private_file(path: Path) -> None:
    """Creates an empty file 0600 if it does not exist, so SQLite (which gives its WAL and
    SHM files the database file's mode) never creates one with the umask's mode."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return
    os.close(fd)


def secure_directory(directory: Path) -> list[Path]:
    """Creates `directory` 0700, or takes group and others' bits off it and everything in
    it; returns what was tightened (logged as a warning each). Symbolic links are left."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    tightened = []
    for path in [directory, *sorted(directory.rglob("*"))]:
        try:
            mode = path.lstat().st_mode
        except FileNotFoundError:  # removed meanwhile (a SQLite journal)
            continue
        if stat.S_ISLNK(mode) or not mode & OTHERS:
            continue
        try:
            os.chmod(path, stat.S_IMODE(mode) & ~OTHERS)
        except OSError as exc:  # not ours: the key store check decides
            log.warning("files.not_tightened", path=str(path), error=str(exc))
            continue
        log.warning(
            "files.tightened",
            path=str(path),
            was=oct(stat.S_IMODE(mode)),
            now=oct(stat.S_IMODE(mode) & ~OTHERS),
        )
        tightened.append(path)
    return tightened


def sqlite_path(url: str) -> Path | None:
    """The file of a SQLite URL; None for another database or an in-memory one."""
    parsed = make_url(url)
    if not parsed.drivername.startswith("sqlite") or parsed.database in (None, "", ":memory:"):
        return None
    return Path(parsed.database)


def key_store_files(settings: Settings) -> list[Path]:
    """The files that hold private keys (or the key to them) and exist now."""
    files = []
    database = sqlite_path(settings.effective_database_url)
    if database is not None:
        files += [database, Path(f"{database}-wal"), Path(f"{database}-shm")]
    if settings.key_encryption_key_file is not None:
        files.append(settings.key_encryption_key_file)
    return [path for path in files if path.exists()]


def check_key_store(settings: Settings) -> None:
    """Refuses (InsecureKeyStore) a key store that group or others may read or write."""
    for path in key_store_files(settings):
        mode = stat.S_IMODE(path.stat().st_mode)
        if not mode & OTHERS:
            continue
        message = (
            f"{path} is accessible by others (mode {mode:#o}): it holds private signing keys "
            f"or the key to them; run `chmod 600 {path}`"
        )
        if settings.allow_insecure_key_store:
            log.warning("files.insecure_key_store_allowed", path=str(path), mode=oct(mode))
            continue
        raise InsecureKeyStore(f"{message} (or set IOD_ALLOW_INSECURE_KEY_STORE=true)")


def secure_storage(settings: Settings) -> None:
    """What every process does before it opens the database: a private umask, a private data
    directory (when the embedded SQLite or the simulated network lives there), then the key
    store check."""
    private_umask()
    database = sqlite_path(settings.effective_database_url)
    uses_data_dir = settings.database_url is None or settings.network_driver == "simulated"
    if uses_data_dir or settings.data_dir.exists():
        secure_directory(settings.data_dir)
    if database is not None and settings.database_url is None:
        create_private_file(database)
    check_key_store(settings)
    key_encryption_key(settings)  # a missing, short or open key file stops the start too


def key_encryption_key(settings: Settings) -> bytes | None:
    """The secret that encrypts private signing keys at rest (IOD_KEY_ENCRYPTION_KEY, or the
    contents of IOD_KEY_ENCRYPTION_KEY_FILE), or None when neither is set."""
    if settings.key_encryption_key is not None and settings.key_encryption_key_file is not None:
        raise InsecureKeyStore(
            "set IOD_KEY_ENCRYPTION_KEY or IOD_KEY_ENCRYPTION_KEY_FILE, not both"
        )
    if settings.key_encryption_key is not None:
        secret = settings.key_encryption_key.get_secret_value().strip().encode()
        source = "IOD_KEY_ENCRYPTION_KEY"
    elif settings.key_encryption_key_file is not None:
        path = settings.key_encryption_key_file
        try:
            secret = path.read_bytes().strip()
        except OSError as exc:
            raise InsecureKeyStore(
                f"cannot read IOD_KEY_ENCRYPTION_KEY_FILE {path}: {exc}"
            ) from exc
        source = str(path)
    else:
        return None
    if len(secret) < MIN_KEY_ENCRYPTION_KEY_BYTES:
        raise InsecureKeyStore(
            f"the key encryption key ({source}) has {len(secret)} bytes, at least "
            f"{MIN_KEY_ENCRYPTION_KEY_BYTES} are needed: e.g. `openssl rand -base64 32`"
        )
    return secret
