"""Admin commands print customers' text literally (issue 12 item 5): a customer name, a
location, an audit event's details, actor, source or request id holding Rich markup or control
characters neither crash `iod` nor reach the operator's terminal."""

from __future__ import annotations

import json
from pathlib import Path

from sqlalchemy import update

from iod.infra.clock import SystemClock
from iod.infra.db import Database, make_engine
from iod.models import AuditEvent, Customer, Location
from tests.e2e.conftest import base_env, iod

EVIL = "[/oops][link=https://evil.example]x[/link][blink]b\x1b[5m\x07\x9b:smile:\u202e"
RAW = ("\x1b", "\x07", "\x9b", "\u202e", "\U0001f604")
MARKUP = "[/oops][link=https://evil.example]x[/link][blink]b"


def test_admin_tables_print_hostile_text_literally(tmp_path: Path) -> None:
    env = base_env(tmp_path, "sqlite", COLUMNS="2000")
    demo = json.loads(iod(env, "demo", "--json").stdout)
    # The command refuses control characters in a name (the API's text rule) and takes markup.
    refused_name = iod(env, "customers", "create", EVIL, check=False)
    assert refused_name.returncode != 0 and "control characters" in refused_name.stderr
    assert "\x1b" not in refused_name.stderr
    made = iod(env, "customers", "create", MARKUP, "--json")
    customer_id = json.loads(made.stdout)["id"]
    # What the commands would refuse, written as an older release or a direct write could.
    db = Database(make_engine(f"sqlite:///{tmp_path / 'data' / 'iod.sqlite3'}"))
    with db.write() as session:
        session.execute(update(Customer).where(Customer.id == customer_id).values(name=EVIL))
        session.execute(
            update(Location)
            .where(Location.id == demo["location_id"])
            .values(name=EVIL, address=EVIL)
        )
        session.add(
            AuditEvent(
                at=SystemClock().now(), actor_type="client", actor_id=EVIL, source=EVIL,
                request_id=EVIL, action="connection.create", target_type="connection",
                target_id=f"con_{EVIL}", customer_id=customer_id, details={"description": EVIL},
            )
        )  # fmt: skip
    db.engine.dispose()

    for command in (["customers", "list"], ["locations", "list"], ["audit", "list"],
                    ["clients", "list"], ["keys", "list"]):  # fmt: skip
        result = iod(env, *command, check=False)
        assert result.returncode == 0, (command, result.stdout, result.stderr)
        for raw in RAW:
            assert raw not in result.stdout, (command, raw, result.stdout)
        if command[0] in ("customers", "locations", "audit"):
            assert MARKUP in result.stdout, (command, result.stdout)
            assert "\\x1b[5m" in result.stdout or "\\u001b[5m" in result.stdout
    audit = iod(env, "audit", "list").stdout
    assert f"con_{MARKUP}" in audit and ":smile:" in audit
    # An error that echoes the operator's input prints it literally too.
    refused = iod(env, "clients", "create", "--customer", EVIL, check=False)
    assert refused.returncode != 0 and refused.stderr.startswith("error: ")
    assert "\x1b" not in refused.stderr and "Traceback" not in refused.stderr
