"""Summarise py-spy's collapsed stacks: where the samples go, by library and by function.

    python bench/profile_summary.py /tmp/prof/get.collapsed.txt [--top 25]

"Self" is the library or function on top of the stack when the sample was taken (the code
that was running); "inclusive" counts a function once per sample wherever it is on the stack
(the code and everything it called). Recorded with `--gil`, the samples are the thread that
held the GIL: what the one Python process spends its only core on.
"""

from __future__ import annotations

import argparse
import re
from collections import Counter
from pathlib import Path

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")

# Longest prefix first: the first match names the library of a frame's file.
LIBRARIES = [
    ("iod/", "iod (the service)"),
    ("fastapi/", "fastapi"),
    ("starlette/", "starlette"),
    ("pydantic_core/", "pydantic"),
    ("pydantic/", "pydantic"),
    ("sqlalchemy/", "sqlalchemy"),
    ("psycopg", "psycopg"),
    ("sqlite3/", "sqlite3"),
    ("uvicorn/", "uvicorn"),
    ("h11/", "h11 (HTTP parser)"),
    ("anyio/", "anyio (threadpool)"),
    ("asyncio/", "asyncio"),
    ("concurrent/", "threading"),
    ("threading.py", "threading"),
    ("queue.py", "threading"),
    ("structlog/", "structlog (logging)"),
    ("logging/", "logging"),
    ("jwt/", "pyjwt"),
    ("cryptography/", "cryptography"),
    ("json/", "json (stdlib)"),
    ("typing.py", "typing"),
    ("enum.py", "enum"),
    ("contextlib.py", "contextlib"),
    ("re/", "re"),
    ("uuid.py", "uuid"),
    ("selectors.py", "asyncio"),
]


# Frames every sample of a thread has (process start, the event loop, a thread's start):
# left out of the inclusive tables, which would otherwise start with them.
BOOTSTRAP = re.compile(
    r"\((typer|click)/|\(iod/cli/|\(iod\)|\(<frozen runpy>|\(runpy\.py|"
    r"\(uvicorn/(main|server|_compat)\.py|\(asyncio/(runners|base_events|events)\.py|"
    r"\(threading\.py|^<module> "
)

# Which thread a sample is in, from a frame on its stack; the first match wins.
THREADS = [
    ("WorkerThread.run (anyio/", "threadpool: sync dependencies and endpoints (anyio)"),
    ("(iod/jobs/worker.py", "job worker thread"),
    ("BaseEventLoop.run_forever (asyncio/", "event loop: HTTP, middleware, routing, responses"),
]


def thread_of(frames: list[str]) -> str:
    for marker, name in THREADS:
        if any(marker in frame for frame in frames):
            return name
    return "other"


def library(frame: str) -> str:
    match = _FRAME.match(frame)
    path = match.group("file") if match else frame
    for prefix, name in LIBRARIES:
        if path.startswith(prefix) or f"/{prefix}" in path:
            return name
    return path.split("/", 1)[0] or "other"


def function(frame: str) -> str:
    match = _FRAME.match(frame)
    return f"{match.group('func')} ({match.group('file')})" if match else frame


def read(path: Path) -> list[tuple[list[str], int]]:
    stacks = []
    for line in path.read_text(errors="replace").splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            # py-spy writes the outermost frame first; the idle-thread marker is dropped.
            stacks.append(([f for f in stack.split(";") if f], int(count)))
    return stacks


def summarise(path: Path, top: int = 25) -> str:
    stacks = read(path)
    total = sum(count for _, count in stacks) or 1
    threads: Counter[str] = Counter()
    own_lib: Counter[str] = Counter()
    own_fn: Counter[str] = Counter()
    inclusive_lib: Counter[str] = Counter()
    inclusive_fn: Counter[str] = Counter()
    for frames, count in stacks:
        if not frames:
            continue
        threads[thread_of(frames)] += count
        own_lib[library(frames[-1])] += count
        own_fn[function(frames[-1])] += count
        inner = [f for f in frames if not BOOTSTRAP.search(f)]
        for name in {library(f) for f in inner}:
            inclusive_lib[name] += count
        for name in {function(f) for f in inner}:
            inclusive_fn[name] += count

    def table(title: str, counts: Counter[str], limit: int) -> list[str]:
        lines = [f"{title}", "| % | samples | where |", "|---:|---:|---|"]
        for name, count in counts.most_common(limit):
            lines.append(f"| {100 * count / total:.1f} | {count} | `{name}` |")
        return [*lines, ""]

    return "\n".join(
        [
            f"{total} samples in {path}",
            "",
            *table("By thread", threads, 10),
            *table("Self time by library (the code running when sampled)", own_lib, 20),
            *table("Inclusive time by library (below the thread's start)", inclusive_lib, 20),
            *table("Inclusive time by function (below the thread's start)", inclusive_fn, top),
            *table("Self time by function", own_fn, top),
        ]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("stacks", type=Path, help="py-spy record --format raw output")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    print(summarise(args.stacks, args.top))


if __name__ == "__main__":
    main()
