"""Client secret hashing: the keyed hash, argon2 for chosen secrets and old hashes, the key file."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from iod.auth.passwords import (
    KEY_BYTES,
    SecretHasher,
    SecretHashKeyError,
    hash_password,
    is_generated,
    load_key,
    new_secret,
    open_hasher,
    verify_password,
)

KEY = bytes(range(KEY_BYTES))
OTHER_KEY = bytes(range(1, KEY_BYTES + 1))


@pytest.fixture
def hasher() -> SecretHasher:
    return SecretHasher(KEY)


def test_generated_secrets_get_the_keyed_hash(hasher: SecretHasher) -> None:
    secret = new_secret()
    stored = hasher.hash(secret)
    assert stored.startswith(f"hmac-sha256${hasher.key_id}$")
    assert secret not in stored and len(stored) <= 255
    assert hasher.verify(stored, secret).ok
    assert hasher.verify(stored, secret).upgrade is None
    assert hasher.is_current(stored)
    # The same secret, the same key: the same value (no salt is needed for 256 random bits).
    assert hasher.hash(secret) == stored


def test_a_wrong_secret_or_no_client_is_refused(hasher: SecretHasher) -> None:
    secret = new_secret()
    stored = hasher.hash(secret)
    wrong = secret[:-1] + ("A" if secret[-1] != "A" else "B")
    assert not hasher.verify(stored, wrong).ok
    assert not hasher.verify(stored, "").ok
    assert not hasher.verify(None, secret).ok
    assert not hasher.verify(stored, secret + "x").ok


def test_the_stored_value_is_useless_without_the_key(hasher: SecretHasher) -> None:
    secret = new_secret()
    stored = hasher.hash(secret)
    other = SecretHasher(OTHER_KEY)
    assert other.key_id != hasher.key_id
    assert not other.verify(stored, secret).ok
    # Even a forged value under the other key's id: the digest does not match.
    forged = stored.replace(hasher.key_id, other.key_id)
    assert not other.verify(forged, secret).ok


def test_damaged_stored_values_are_refused_not_raised(hasher: SecretHasher) -> None:
    secret = new_secret()
    prefix = f"hmac-sha256${hasher.key_id}$"
    for stored in (prefix, prefix + "!!!", prefix + "a$b", "hmac-sha256$", "plain", "$argon2id$x"):
        assert not hasher.verify(stored, secret).ok


def test_chosen_secrets_stay_with_argon2(hasher: SecretHasher) -> None:
    for chosen in ("p@ss:w/rd+x %", "short", "a" * 42, "x" * 50 + "!"):
        assert not is_generated(chosen)
        stored = hasher.hash(chosen)
        assert stored.startswith("$argon2id$")
        verified = hasher.verify(stored, chosen)
        assert verified.ok and verified.upgrade is None
    assert is_generated(new_secret())


def test_an_argon2_stored_generated_secret_verifies_and_offers_its_keyed_hash(
    hasher: SecretHasher,
) -> None:
    secret = new_secret()
    legacy = hash_password(secret)
    verified = hasher.verify(legacy, secret)
    assert verified.ok
    assert verified.upgrade is not None and hasher.is_current(verified.upgrade)
    assert hasher.verify(verified.upgrade, secret).ok
    refused = hasher.verify(legacy, new_secret())
    assert not refused.ok and refused.upgrade is None


def test_passwords_are_argon2() -> None:
    stored = hash_password("correct horse")
    assert stored.startswith("$argon2id$")
    assert verify_password(stored, "correct horse")
    assert not verify_password(stored, "wrong horse")
    assert not verify_password(None, "correct horse")


def test_short_keys_are_refused() -> None:
    with pytest.raises(SecretHashKeyError):
        SecretHasher(b"k" * (KEY_BYTES - 1))


def test_the_key_file_is_created_once_with_mode_0600(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "secret-hash.key"
    first = open_hasher(path)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert len(load_key(path)) == KEY_BYTES
    second = open_hasher(path)
    assert second.key_id == first.key_id
    secret = new_secret()
    assert second.verify(first.hash(secret), secret).ok
    assert [p.name for p in path.parent.iterdir()] == ["secret-hash.key"]  # nothing left aside


def test_processes_starting_together_agree_on_one_key(tmp_path: Path) -> None:
    path = tmp_path / "secret-hash.key"
    ids: list[str] = []
    start = threading.Barrier(8)

    def open_one() -> None:
        start.wait()
        ids.append(open_hasher(path).key_id)

    threads = [threading.Thread(target=open_one) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["secret-hash.key"]


def test_bad_key_files_are_refused_with_the_reason(tmp_path: Path) -> None:
    path = tmp_path / "key"
    with pytest.raises(SecretHashKeyError, match="cannot read"):
        open_hasher(path, create=False)
    path.write_text("not base64 at all!\n")
    with pytest.raises(SecretHashKeyError, match="base64"):
        open_hasher(path)
    path.write_text("c2hvcnQ\n")  # "short"
    with pytest.raises(SecretHashKeyError, match="at least 32"):
        open_hasher(path)


def test_a_key_file_from_an_operator_is_used_as_it_is(tmp_path: Path) -> None:
    import base64

    path = tmp_path / "shared.key"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
    os.write(fd, base64.urlsafe_b64encode(KEY) + b"\n")
    os.close(fd)
    assert open_hasher(path).key_id == SecretHasher(KEY).key_id


def test_a_missing_key_is_created_only_when_no_stored_hash_names_another(tmp_path: Path) -> None:
    path = tmp_path / "k"
    with pytest.raises(SecretHashKeyError, match="abc123def456"):
        open_hasher(path, stored_key_ids=lambda: {"abc123def456"})
    assert not path.exists()
    created = open_hasher(path, stored_key_ids=set)
    # An existing file is used as it is: the stored ids are not even asked for.
    assert open_hasher(path, stored_key_ids=lambda: {"x"}).key_id == created.key_id
