"""Money through `iod serve` (demo prices from `iod demo`): the SDK's catalog, quote, order
with the quote, usage and statements; the customer and operator commands."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from iod.client import InvalidRequest, NotFound
from tests.client.conftest import Served, run_iod
from tests.e2e.conftest import iod

pytestmark = pytest.mark.e2e


def test_catalog_quote_order_usage(served: Served) -> None:
    with served.client() as api:
        places = {p.id: p for p in api.list_locations()}
        denver = places[served.location]
        tier = next(t for t in denver.tiers if t.bandwidth == "100 Mbps")
        assert tier.orderable and tier.price is not None
        assert tier.price.hourly_rate == Decimal("0.46") and tier.price.currency == "USD"
        assert api.get_location(served.location).id == served.location
        quote = api.quote("100 Mbps", location_id=served.location)
        assert quote.estimated_monthly_cost == Decimal("331.20")
        made = api.create_connection(served.location, "100 Mbps", "quoted", quote_id=quote.id)
        with pytest.raises(InvalidRequest):  # the same quote for another tier
            api.create_connection(served.location, "1 Gbps", quote_id=api.quote(
                "100 Mbps", location_id=served.location).id)  # fmt: skip
        change = api.quote("1 Gbps", connection_id=made.id)
        assert change.connection_id == made.id and change.hourly_rate == Decimal("2.08")
        usage = api.usage(month="2026-11", granularity="day")
        assert usage.granularity == "day" and isinstance(usage.lines, list)
        assert isinstance(api.statements(), list)
        with pytest.raises(NotFound):
            api.statement("stm_00000000000000000000000000000")


def test_commands(served: Served, tmp_path: Path) -> None:
    env = {**served.env, **served.credentials}
    listed = run_iod(env, "catalog")
    assert listed.returncode == 0 and "0.46 USD" in listed.stdout
    quoted = run_iod(env, "quote", "100 Mbps", "--location", served.location, "--json")
    assert quoted.returncode == 0, quoted.stderr
    assert json.loads(quoted.stdout)["hourlyRate"] == "0.46"
    assert run_iod(env, "usage", "--month", "2026-11", "--csv").stdout.startswith("connection,")
    for month in ("garbage", "2026-13"):  # a usage error naming the option, no traceback
        refused = run_iod(env, "usage", "--month", month)
        assert refused.returncode == 2 and "--month" in refused.stderr, refused.stderr
        assert "Traceback" not in refused.stderr
    # The operator's price book: a bad file names the row and field; a good one is added.
    bad = tmp_path / "bad.csv"
    bad.write_text("locationId,bandwidth,currency,hourlyRate\nPL0001247634,100 Mbps,USD,0.461\n")
    refused = run_iod(served.env, "prices", "import", str(bad))
    assert refused.returncode == 1 and "/0/hourlyRate" in refused.stderr
    good = tmp_path / "good.json"
    good.write_text(json.dumps([{"locationId": served.location, "bandwidth": "100 Mbps",
                                 "currency": "USD", "hourlyRate": "0.48",
                                 "effectiveFrom": "2031-01-01T00:00:00Z"}]))  # fmt: skip
    added = iod(served.env, "prices", "import", str(good), "--json")
    assert json.loads(added.stdout) == {"added": 1, "unchanged": 0}
    book = json.loads(iod(served.env, "prices", "list", "--json").stdout)["prices"]
    rates = {(p["bandwidth"], p["effectiveFrom"]): p["hourlyRate"] for p in book
             if p["locationId"] == served.location}  # fmt: skip
    assert rates[("100 Mbps", "2031-01-01T00:00:00Z")] == "0.48"
    assert rates[("100 Mbps", "2026-01-01T00:00:00Z")] == "0.46"
