"""The two distributions stay consistent: iod-client (clients/python) and the server, which
includes it (docs/decisions.md)."""

from __future__ import annotations

import ast
import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SDK_ROOT = ROOT / "clients" / "python"


def requirements(pyproject: Path) -> dict[str, str]:
    data = tomllib.loads(pyproject.read_text(encoding="utf-8"))
    found = {}
    for requirement in data["project"]["dependencies"]:
        match = re.match(r"([A-Za-z0-9_.-]+)(\[[^]]*\])?\s*(.*)", requirement)
        assert match, requirement
        found[match.group(1).lower()] = match.group(3).split(";")[0].strip()
    return found


def test_the_server_requires_everything_the_sdk_requires() -> None:
    """The server ships the SDK's files, so it must install the SDK's dependencies too."""
    sdk, server = requirements(SDK_ROOT / "pyproject.toml"), requirements(ROOT / "pyproject.toml")
    assert set(sdk) == {"httpx", "pydantic", "typer", "rich"}
    for name, bound in sdk.items():
        assert server.get(name) == bound, (
            f"{name}: iod-client {bound!r}, server {server.get(name)!r}"
        )


def test_iod_is_a_namespace_package_in_both_source_roots() -> None:
    for source in (ROOT / "src", SDK_ROOT / "src"):
        assert not (source / "iod" / "__init__.py").exists(), (
            f"{source}/iod/__init__.py would make iod a regular package of one distribution"
        )
    assert (SDK_ROOT / "src" / "iod" / "client" / "py.typed").exists()


def test_the_sdk_imports_nothing_of_the_server() -> None:
    for path in sorted((SDK_ROOT / "src" / "iod").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            for name in names:
                if name == "iod" or name.startswith("iod."):
                    assert name.startswith("iod.client"), f"{path}: imports {name}"
