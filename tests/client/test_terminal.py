"""Customer commands print what an API returns literally: Rich markup, emoji codes and control
characters in any field cannot crash the command or reach the terminal (issue 12 item 5).

The API here is scripted (httpx.MockTransport) and answers every field with hostile text, which
the real server would partly refuse: the CLI must not rely on that."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from iod.client import Client, RetryPolicy
from iod.client import cli as customer
from iod.client.terminal import clean, safe

EVIL = "[/oops][link=https://evil.example]x[/link][blink]b\x1b[5m\x07\x9b:smile:\u202e\r"
# What must never be in the output: the raw control characters, and what Rich would have made
# of the markup or emoji code.
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\r", "\U0001f604", "\x1b]8;")
# What must be in it instead: the text as sent, control characters shown as escapes.
SHOWN = ("[/oops][link=https://evil.example]x[/link][blink]b", "\\x1b[5m\\x07\\x9b:smile:\\u202e")


def test_clean_and_safe() -> None:
    assert clean("a\x1b[31mb\tc\nd\u202ee\x7f") == "a\\x1b[31mb\\x09c\\x0ad\\u202ee\\x7f"
    assert clean("ascii, ünïcödé and 中文 stay") == "ascii, ünïcödé and 中文 stay"
    assert safe("[/oops] [bold]x[/bold]") == "\\[/oops] \\[bold]x\\[/bold]"
    assert safe(None) == "None" and safe(12) == "12"


def connection(**extra: Any) -> dict[str, Any]:
    return {
        "id": f"con_{EVIL}",
        "status": EVIL,
        "bandwidth": EVIL,
        "location": EVIL,
        "description": EVIL,
        "ipv4Block": EVIL,
        "createdAt": "2030-01-01T00:00:00Z",
        "updatedAt": "2030-01-01T00:00:00Z",
        "targetStatus": EVIL,
        "pendingBandwidthChanges": [
            {"id": f"chg_{EVIL}", "bandwidth": EVIL, "status": EVIL,
             "effectiveDate": "2030-01-02T00:00:00Z"}
        ],
        **extra,
    }  # fmt: skip


def change() -> dict[str, Any]:
    return {
        "id": f"chg_{EVIL}",
        "bandwidth": EVIL,
        "status": EVIL,
        "effectiveDate": "2030-01-02T00:00:00Z",
        "fromBandwidth": EVIL,
        "failureReason": EVIL,
    }


def hostile_api(request: httpx.Request) -> httpx.Response:
    path = request.url.path
    if path == "/oauth2/token":
        return httpx.Response(
            200, json={"access_token": "t", "token_type": "Bearer", "expires_in": 3600}
        )
    if "con_bad" in path:
        return httpx.Response(
            400,
            headers={"Content-Type": "application/problem+json"},
            json={"type": "/problems/validation-error", "title": EVIL, "status": 400,
                  "detail": EVIL, "errors": [{"pointer": EVIL, "detail": EVIL}]},
        )  # fmt: skip
    if path.endswith("/cancel"):
        return httpx.Response(200, json=change())
    if path.endswith("/bandwidth-changes"):
        return httpx.Response(200, json={"bandwidthChanges": [change()]})
    if path.endswith("/bandwidth"):
        return httpx.Response(200, json=connection(change=change()))
    if re.search(r"/(suspend|resume|terminate)$", path):
        return httpx.Response(202, json=connection())
    if path == "/internet-on-demand/connections":
        if request.method == "POST":
            return httpx.Response(201, json=connection())
        return httpx.Response(200, json={"connections": [connection()], "nextCursor": None})
    return httpx.Response(200, json=connection())


@pytest.fixture
def runner(monkeypatch: pytest.MonkeyPatch) -> Iterator[CliRunner]:
    def scripted() -> Client:
        return Client(
            "http://iod.test",
            "me",
            "pw",
            transport=httpx.MockTransport(hostile_api),
            retry=RetryPolicy(attempts=1),
        )

    monkeypatch.setattr(customer, "client", scripted)
    monkeypatch.setattr(customer.out, "width", 2000)  # no cell cut short: all text is checked
    yield CliRunner()


COMMANDS = [
    ["connections", "list"],
    ["connections", "get", "con_1"],
    ["connections", "create", "--location", "L", "--bandwidth", "1 Gbps"],
    ["connections", "watch", "con_1", "--timeout", "0"],
    ["connections", "suspend", "con_1"],
    ["connections", "resume", "con_1"],
    ["connections", "terminate", "con_1", "--yes"],
    ["bandwidth", "set", "con_1", "1 Gbps"],
    ["bandwidth", "set", "con_1", "1 Gbps", "--in", "2h"],
    ["bandwidth", "changes", "con_1"],
    ["bandwidth", "cancel", "con_1", "chg_1"],
]


@pytest.mark.parametrize("args", COMMANDS, ids=" ".join)
def test_every_table_and_message_prints_hostile_text_literally(
    runner: CliRunner, args: list[str]
) -> None:
    result = runner.invoke(customer.app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    for raw in RAW:
        assert raw not in result.output, (raw, result.output)
    for shown in SHOWN:
        assert shown in result.output, (shown, result.output)


def test_error_messages_print_hostile_text_literally(runner: CliRunner) -> None:
    result = runner.invoke(customer.app, ["connections", "get", "con_bad"])
    assert result.exit_code == customer.EXIT_REFUSED, result.output
    assert result.output.startswith("error: ")
    for raw in RAW:
        assert raw not in result.output
    assert SHOWN[0] in result.output and "\\x1b[5m" in result.output


def test_json_output_stays_the_apis_json(runner: CliRunner) -> None:
    """--json is for programs: the text is exactly the API's (JSON escapes the controls)."""
    result = runner.invoke(customer.app, ["connections", "get", "con_1", "--json"])
    assert result.exit_code == 0
    assert "\x1b" not in result.output
    assert json.loads(result.output)["description"] == EVIL
