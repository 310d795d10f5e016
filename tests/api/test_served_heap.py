"""A served process's heap (`create_app(..., freeze_heap=True)`, as `iod serve` builds it):
what was alive at start-up is frozen out of the cyclic collector's reach, and the collector,
which `iod` turns off while it starts (cli/main.py), runs again from the first request."""

from __future__ import annotations

import gc
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from iod.app import Services, create_app


@pytest.fixture
def collector_off() -> Iterator[int]:
    """As `iod` leaves it while a command starts; put back as it was afterwards, the test
    run's own frozen heap included (tests/conftest.py freezes it after collection, and a
    served app unfreezes everything when it stops). Yields the frozen count before."""
    was, frozen = gc.isenabled(), gc.get_freeze_count()
    gc.disable()
    try:
        yield frozen
    finally:
        if frozen and not gc.get_freeze_count():
            gc.freeze()
        gc.enable() if was else gc.disable()


def test_the_collector_runs_from_the_first_request(services: Services, collector_off: int) -> None:
    with TestClient(create_app(services, freeze_heap=True)) as client:
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
        assert client.get("/healthz").status_code == 200
    assert gc.get_freeze_count() == 0  # unfrozen when the app stops


def test_an_app_for_tests_leaves_the_collector_alone(
    services: Services, collector_off: int
) -> None:
    def untouched() -> bool:  # neither frozen more nor unfrozen (frozen objects may die)
        return collector_off // 2 <= gc.get_freeze_count() <= collector_off

    with TestClient(create_app(services)) as client:
        assert not gc.isenabled()
        assert untouched()
        assert client.get("/healthz").status_code == 200
    assert untouched()
