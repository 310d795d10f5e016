"""`bulk.gc_paused`: the cyclic collector off inside, back as it was after the last block."""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator

import pytest

from iod.infra.db import bulk


@pytest.fixture
def collector_enabled() -> Iterator[None]:
    was = gc.isenabled()
    gc.enable()
    yield
    if not was:
        gc.disable()


def test_paused_inside_and_enabled_after(collector_enabled: None) -> None:
    with bulk.gc_paused():
        assert not gc.isenabled()
        with bulk.gc_paused():
            assert not gc.isenabled()
        assert not gc.isenabled()  # the outer block still runs
    assert gc.isenabled()


def test_enabled_again_after_an_exception(collector_enabled: None) -> None:
    with pytest.raises(RuntimeError), bulk.gc_paused():
        raise RuntimeError("boom")
    assert gc.isenabled()


def test_a_disabled_collector_stays_disabled(collector_enabled: None) -> None:
    gc.disable()
    with bulk.gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_overlapping_blocks_in_threads(collector_enabled: None) -> None:
    """The first block's thread ends first: the collector stays paused for the second."""
    inside, leave = threading.Event(), threading.Event()

    def hold() -> None:
        with bulk.gc_paused():
            inside.set()
            assert leave.wait(timeout=30)

    other = threading.Thread(target=hold)
    with bulk.gc_paused():
        other.start()
        assert inside.wait(timeout=30)
    assert not gc.isenabled()  # the other thread's block still runs
    leave.set()
    other.join(timeout=30)
    assert not other.is_alive()
    assert gc.isenabled()
