"""A busy worker lets its next batch gather (IOD_WORKER_GATHER_SECONDS): after a batch that
was not full it waits before claiming again; after a full one, and when idle and woken, it
goes on at once."""

from __future__ import annotations

import dataclasses
import itertools
import threading
import time

from iod.app import Services


def _run(services: Services, script: list[int], gather: float) -> list[float]:
    """Runs the worker's loop over `run_once` answers `script` (jobs run per batch; -1: none
    was due, and a job is enqueued meanwhile, which wakes the worker), then stops it; the
    times of the calls."""
    worker = services.worker()
    worker.policy = dataclasses.replace(worker.policy, gather_seconds=gather, batch_size=4)
    worker.periodic = False
    stop = threading.Event()
    calls: list[float] = []
    answers = iter(script)

    def run_once() -> int:
        calls.append(time.monotonic())
        ran = next(answers, None)
        if ran is None:
            stop.set()
            return 0
        if ran < 0:
            worker.wakeup.set()
            return 0
        return ran

    worker.run_once = run_once  # type: ignore[method-assign]
    worker.run_forever(stop)
    return calls


# "At once" is under AT_ONCE seconds: generous for a loaded machine, and still short of a
# wait for more (GATHER seconds).
GATHER = 4.0
AT_ONCE = 3.0


def test_after_a_partial_batch_the_worker_waits_for_more(services: Services) -> None:
    calls = _run(services, [1, 4, 4, 2, 0], gather=GATHER)
    gaps = [later - earlier for earlier, later in itertools.pairwise(calls)]
    assert gaps[0] >= GATHER, "after 1 of 4: waited"
    assert gaps[1] < AT_ONCE and gaps[2] < AT_ONCE, "after full batches: at once"
    assert gaps[3] >= GATHER, "after 2 of 4: waited"


def test_with_no_gathering_the_worker_goes_on_at_once(services: Services) -> None:
    # Ten partial batches: waiting even a poll interval (0.5 s) after each would take 5 s.
    calls = _run(services, [1] * 11, gather=0)
    assert calls[-1] - calls[0] < AT_ONCE


def test_an_idle_worker_woken_by_a_job_starts_it_at_once(services: Services) -> None:
    calls = _run(services, [-1, 1], gather=GATHER)
    assert calls[1] - calls[0] < AT_ONCE, "woken from idle: no gathering"
