"""`make pytest`'s two passes (tests/two_passes.py) and what keeps its parallel pass apart
(tests/parallel.py): the exit status, the serial directories, the workers' databases."""

from __future__ import annotations

import pytest

from tests import parallel, two_passes


@pytest.mark.parametrize(
    ("codes", "status"),
    [
        ([0, 0], 0),
        ([1, 0], 1),  # a failure in the parallel pass fails the run
        ([0, 1], 1),  # ... and one in the serial pass
        ([2, 1], 2),  # the first failing pass's status
        ([0, 5], 0),  # no serial test among the arguments: passed
        ([5, 0], 0),
        ([5, 1], 1),
        ([5, 5], 5),  # nothing at all ran
    ],
)
def test_the_run_fails_when_either_pass_fails(codes: list[int], status: int) -> None:
    assert two_passes.combine(codes) == status


def test_the_passes_split_on_the_serial_marker() -> None:
    (_, first), (_, second) = two_passes.passes(["tests/api", "-k", "etag"], "3")
    first, second = first[first.index("pytest") :], second[second.index("pytest") :]
    assert first[first.index("-n") + 1] == "3" and "loadgroup" in first
    assert first[first.index("-m") + 1] == "not serial"
    assert second[second.index("-m") + 1] == "serial" and "-n" not in second
    assert first[-3:] == second[-3:] == ["tests/api", "-k", "etag"]


def test_every_test_of_the_serial_directories_is_serial() -> None:
    assert parallel.is_serial_path(parallel.TESTS / "faults" / "test_added_later.py")
    assert parallel.is_serial_path(parallel.TESTS / "dataplane" / "sub" / "test_x.py")
    assert not parallel.is_serial_path(parallel.TESTS / "api" / "test_faults.py")
    assert not parallel.is_serial_path(parallel.TESTS / "e2e" / "test_served.py")


def test_a_worker_database_is_named_after_the_given_one() -> None:
    url = "postgresql+psycopg://postgres:secret@127.0.0.1:5432/iod_ci_1_2"
    assert parallel.worker_url(url, "gw1") == (
        "postgresql+psycopg://postgres:secret@127.0.0.1:5432/iod_ci_1_2_gw1"
    )
    with pytest.raises(ValueError, match="names no database"):
        parallel.worker_url("postgresql+psycopg://postgres@127.0.0.1:5432", "gw0")
