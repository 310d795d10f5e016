"""The console log (IOD_LOG_JSON=false) never writes a control character a client sent:
a path such as `/x%00%1b[31m` would otherwise reach the operator's terminal as a NUL and
an escape sequence."""

from __future__ import annotations

import io
import sys

import structlog

from iod.infra.logging import configure_logging, escape_control_characters


def test_control_characters_are_escaped_but_tabs_and_newlines_kept() -> None:
    event = escape_control_characters(
        None,
        "info",
        {"path": "/x\x00y\x1b[31m\x7f\x9b\nfake", "exception": "a\n\tb\x1b", "n": 3},
    )
    assert event == {
        "path": "/x\\x00y\\x1b[31m\\x7f\\x9b\\x0afake",
        "exception": "a\n\tb\\x1b",
        "n": 3,
    }


def test_console_log_line_has_no_raw_escape_from_the_path() -> None:
    captured = io.StringIO()
    real, before = sys.stderr, structlog.get_config()
    sys.stderr = captured
    try:
        configure_logging("INFO", json=False)
        structlog.get_logger().info("request", path="/nope\x00x\x1b[31m", status=404)
    finally:
        sys.stderr = real
        structlog.configure(**before)
    line = captured.getvalue()
    assert "/nope\\x00x\\x1b[31m" in line
    assert "\x00" not in line
    assert "x\x1b" not in line  # the renderer may colour with ESC; the client's ESC is gone
