"""`make pytest`: pytest in two passes, the parallel one then the serial one (tests/parallel.py).

`python -m tests.two_passes [PYTEST ARG...]` runs

1. `pytest -n PYTEST_WORKERS --dist loadgroup -m "not serial" ARGS`: the tests that may share
   the machine, on PYTEST_WORKERS xdist workers (default 2; 0 runs them in this one process),
   each worker with a PostgreSQL database of its own;
2. `pytest -m serial ARGS`, without xdist: the tests that must run alone (data-plane
   throughput, fault tests, timing-sensitive tests), on IOD_TEST_DATABASE_URL itself.

The second pass runs even when the first failed, so one run reports every failure. The exit
status is the first failing pass's; a pass that selected no test (pytest's 5, say ARGS name
only tests/api) counts as passed when the other pass ran tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

NO_TESTS = 5


def passes(args: list[str], workers: str) -> list[tuple[str, list[str]]]:
    pytest = [sys.executable, "-m", "pytest"]
    parallel = ["-n", workers, "--dist", "loadgroup"]
    return [
        (f"parallel, {workers} workers", [*pytest, *parallel, "-m", "not serial", *args]),
        ("serial", [*pytest, "-m", "serial", *args]),
    ]


def combine(codes: list[int]) -> int:
    """One exit status for the passes: a failure wins; all passes empty is "no tests"."""
    for code in codes:
        if code not in (0, NO_TESTS):
            return code
    return NO_TESTS if all(code == NO_TESTS for code in codes) else 0


def main() -> None:
    args = sys.argv[1:]
    if args[:1] == ["--"]:
        args = args[1:]
    workers = os.environ.get("PYTEST_WORKERS", "").strip() or "2"
    codes = []
    for name, command in passes(args, workers):
        print(f"two_passes: {name}: {' '.join(command[1:])}", file=sys.stderr, flush=True)
        started = time.monotonic()
        codes.append(subprocess.call(command))
        took = time.monotonic() - started
        print(
            f"two_passes: {name} pass exited {codes[-1]} after {took:.0f} s",
            file=sys.stderr,
            flush=True,
        )
    sys.exit(combine(codes))


if __name__ == "__main__":
    main()
