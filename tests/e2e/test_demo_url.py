"""`make run PORT=8099` runs `iod demo --url http://127.0.0.1:8099`; the README's next step,
`eval "$(iod demo --env)"`, must then point at 8099, not the default port."""

from __future__ import annotations

from pathlib import Path

from tests.e2e.conftest import base_env, iod


def test_demo_env_remembers_the_url_make_run_gave(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite")
    assert "export IOD_URL=http://127.0.0.1:8080" in iod(env, "demo", "--env").stdout
    iod(env, "demo", "--url", "http://127.0.0.1:8099/")
    exports = iod(env, "demo", "--env").stdout
    assert "export IOD_URL=http://127.0.0.1:8099\n" in exports
    assert "http://127.0.0.1:8099/oauth2/token" in iod(env, "demo").stdout
    # An explicit --url still wins, and is remembered in its turn.
    assert (
        "export IOD_URL=http://10.0.0.1:80"
        in iod(env, "demo", "--env", "--url", "http://10.0.0.1:80").stdout
    )


def test_serve_on_a_taken_port_says_so_before_starting_anything(tmp_path: Path) -> None:
    import socket

    env = base_env(tmp_path, "sqlite")
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        done = iod(env, "serve", "--port", str(port), check=False)
    assert done.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "serving" not in done.stdout
    # Nothing started: not even the database was created.
    assert not (tmp_path / "data" / "iod.sqlite3").exists()


def test_portal_links_name_the_port_make_run_gave(tmp_path: Path) -> None:
    """`make run PORT=8099`: `iod users link` (another shell, no IOD_ISSUER) names 8099;
    IOD_ISSUER, when set, and --url still win."""
    env = base_env(tmp_path, "sqlite")
    iod(env, "demo", "--url", "http://127.0.0.1:8099")
    link = iod(env, "users", "link", "admin@demo.example").stdout
    assert "http://127.0.0.1:8099/portal/welcome?token=" in link
    env["IOD_ISSUER"] = "https://iod.example.net"
    assert (
        "https://iod.example.net/portal/welcome?token="
        in iod(env, "users", "link", "admin@demo.example").stdout
    )
    assert (
        "http://10.0.0.1/portal/welcome?token="
        in iod(env, "users", "link", "admin@demo.example", "--url", "http://10.0.0.1").stdout
    )


def test_demo_env_issues_no_sign_in_link(tmp_path: Path) -> None:
    """The README has `eval "$(iod demo --env)"` run in every terminal: it prints no link,
    so it issues none (each would be an audit row and an event in the customer's feed)."""
    import sqlite3

    env = base_env(tmp_path, "sqlite")
    assert "/portal/welcome?token=" in iod(env, "demo").stdout
    for _ in range(3):
        assert "welcome" not in iod(env, "demo", "--env").stdout
    with sqlite3.connect(tmp_path / "data" / "iod.sqlite3") as db:
        (links,) = db.execute("SELECT count(*) FROM portal_sign_in_links").fetchone()
    assert links == 1
    assert "/portal/welcome?token=" in iod(env, "demo", "--json").stdout
