"""The layering rules, read from the source (ast), so a slip fails here rather than in review.

- Only the HTTP edge imports FastAPI or Starlette: endpoints, `api.py`, the fast GET path,
  the portal's `*_pages.py`, request dependencies, the composition root and the HTTP modules
  of `infra/`. Services,
  repositories, tasks, lifecycles, the domain, jobs, events and the network never do.
- Nothing outside the edge imports the edge (a service never builds an HTTP response).
- `domain/` is plain Python: no database, no framework.
- `network/` holds drivers only: it never reads the tables or the job queue.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
HTTP_LIBRARIES = ("fastapi", "starlette")
EDGE_FILES = {"endpoints.py", "api.py", "fastpath.py", "dependencies.py"}
INFRA_HTTP = {
    "iod.infra.http",
    "iod.infra.metrics",
    "iod.infra.middleware",
    "iod.infra.idempotency",
    "iod.infra.problems",
    "iod.infra.health",
    "iod.infra.redirects",
    "iod.infra.openapi",
    "iod.infra.server",
}
# The process edges: they start servers, so they may import the HTTP edge (inside commands).
PROCESS_EDGES = ("iod.app", "iod.cli.")


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_edge(name: str, path: Path) -> bool:
    return (
        path.name in EDGE_FILES
        or path.name.endswith("_pages.py")  # the portal's page routers
        or name in INFRA_HTTP
        or name == "iod.app"
    )


def imports(source: str, name: str) -> Iterator[str]:
    """Every module an import statement names, anywhere in the module (functions included)."""
    package = name.rsplit(".", 1)[0]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1])
                base = f"{base}.{node.module}" if node.module else base
            yield base
            yield from (f"{base}.{alias.name}" for alias in node.names)


def modules() -> list[tuple[str, Path, list[str]]]:
    found = []
    for path in sorted((SRC / "iod").rglob("*.py")):
        if "migrations" in path.parts:
            continue
        name = module_name(path)
        found.append((name, path, list(imports(path.read_text(), name))))
    return found


def _top(imported: str) -> str:
    return imported.split(".", 1)[0]


def http_violations(found: list[tuple[str, Path, list[str]]]) -> list[str]:
    bad = []
    for name, path, imported in found:
        if is_edge(name, path) or name.startswith(PROCESS_EDGES):
            continue
        for target in imported:
            if _top(target) in HTTP_LIBRARIES:
                bad.append(f"{name} imports {target}")
            elif (
                target in INFRA_HTTP
                or target.rsplit(".", 1)[-1] in ("endpoints", "fastpath")
                or target.endswith("_pages")
            ):
                bad.append(f"{name} imports the HTTP edge module {target}")
    return sorted(set(bad))


def test_the_walker_sees_imports_anywhere_in_a_module() -> None:
    """The rule could not fail if the walker missed imports: it sees nested and relative ones."""
    source = "def f():\n    from fastapi import Request\nfrom . import endpoints\n"
    assert {"fastapi", "fastapi.Request", "iod.x", "iod.x.endpoints"} <= set(
        imports(source, "iod.x.service")
    )
    fake = [("iod.x.service", Path("service.py"), list(imports(source, "iod.x.service")))]
    assert http_violations(fake) == [
        "iod.x.service imports fastapi",
        "iod.x.service imports fastapi.Request",
        "iod.x.service imports the HTTP edge module iod.x.endpoints",
    ]


def test_the_walk_covers_the_services() -> None:
    names = {name for name, _, _ in modules()}
    for expected in (
        "iod.connections.service",
        "iod.connections.repository",
        "iod.connections.tasks",
        "iod.connections.lifecycle",
        "iod.audit.service",
        "iod.audit.subscribers",
        "iod.events",
        "iod.infra.db",
    ):
        assert any(n == expected or n.startswith(expected + ".") for n in names), expected


def test_only_the_http_edge_imports_fastapi_or_starlette() -> None:
    assert http_violations(modules()) == []


@pytest.mark.parametrize(
    ("package", "forbidden"),
    [
        ("iod.domain", ("sqlalchemy", "fastapi", "starlette", "iod.infra", "iod.models")),
        ("iod.network", ("iod.models", "iod.jobs", "iod.connections", "iod.infra.db")),
    ],
)
def test_plain_packages_import_no_database_or_framework(
    package: str, forbidden: tuple[str, ...]
) -> None:
    bad = [
        f"{name} imports {target}"
        for name, _, imported in modules()
        if name == package or name.startswith(package + ".")
        for target in imported
        if any(target == f or target.startswith(f + ".") for f in forbidden)
    ]
    assert bad == []
