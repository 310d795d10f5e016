"""Customer commands of the money operations: `iod catalog`, `iod quote`, `iod usage`,
`iod statements list|get` (a Rich table; `--json`; `--csv`). `iod locations` is the
operator's catalog in the server's `iod`, so the customer's view is `iod catalog`."""

from __future__ import annotations

from typing import Annotated

import typer
from rich import box
from rich.table import Table

from iod.client.cli import JsonFlag, client, handled, out, parse_at, print_json
from iod.client.terminal import safe

CsvFlag = Annotated[bool, typer.Option("--csv", help="Print CSV.")]
statements_app = typer.Typer(help="Your monthly statements.", no_args_is_help=True)


def _table(*names: str) -> Table:
    table = Table(box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    for name in names:
        table.add_column(name, no_wrap=True)
    return table


def catalog(as_json: JsonFlag = False) -> None:
    """The locations you may order at: tiers, whether each fits now, hourly prices."""
    with handled(), client() as api:
        rows = api.list_locations()
    if as_json:
        print_json({"locations": [row.to_json() for row in rows]})
        return
    table = _table("location", "name", "tier", "orderable", "hourly", "monthly cap")
    for row in rows:
        for tier in row.tiers:
            price = tier.price
            table.add_row(
                safe(row.id), safe(row.name), safe(tier.bandwidth),
                "yes" if tier.orderable else "no",
                f"{price.hourly_rate} {safe(price.currency)}" if price else "-",
                str(price.monthly_cap) if price and price.monthly_cap is not None else "-",
            )  # fmt: skip
    out.print(table)


def quote(
    bandwidth: Annotated[str, typer.Argument(help="The tier, e.g. '100 Mbps'.")],
    location: Annotated[str | None, typer.Option("--location", help="For a new one.")] = None,
    connection: Annotated[str | None, typer.Option("--connection", help="For a change.")] = None,
    at: Annotated[str | None, typer.Option("--at", help="The change's effective time.")] = None,
    revert_at: Annotated[str | None, typer.Option("--revert-at", help="A boost's end.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Ask a price, valid 15 minutes: pass its id as `quoteId` (SDK: `quote_id=`) when
    ordering or changing to be charged that rate."""
    with handled(), client() as api:
        answer = api.quote(
            bandwidth,
            location_id=location,
            connection_id=connection,
            effective_date=parse_at(at) if at else None,
            revert_at=parse_at(revert_at, "--revert-at") if revert_at else None,
        )
    if as_json:
        print_json(answer.to_json())
        return
    out.print(
        f"quote {safe(answer.id)}: {safe(answer.bandwidth)} at {answer.hourly_rate} "
        f"{safe(answer.currency)}/hour, a day {answer.estimated_daily_cost}, a month "
        f"{answer.estimated_monthly_cost}; valid until {answer.expires_at.isoformat()}"
    )


def usage(
    month: Annotated[str | None, typer.Option("--month", help="A month, e.g. 2026-11.")] = None,
    start: Annotated[str | None, typer.Option("--from", help="Window start.")] = None,
    end: Annotated[str | None, typer.Option("--to", help="Window end.")] = None,
    connection: Annotated[str | None, typer.Option("--connection")] = None,
    granularity: Annotated[str, typer.Option("--granularity", help="hour, day or month")] = "day",
    as_json: JsonFlag = False,
    as_csv: CsvFlag = False,
) -> None:
    """What you used: per connection, period, tier and rate, and the totals."""
    if month is not None and (start or end):
        raise typer.BadParameter("give --month or --from/--to, not both")
    from iod.client.money import MONTH  # here: `iod --help` imports no pydantic

    if month is not None and MONTH.fullmatch(month) is None:
        raise typer.BadParameter(f"{month!r}: a year and month, e.g. 2026-11", param_hint="--month")
    with handled(), client() as api:
        answer = api.usage(
            month=month,
            start=parse_at(start, "--from") if start else None,
            end=parse_at(end, "--to") if end else None,
            connection_id=connection,
            granularity=granularity,
        )
    if as_json:
        print_json(answer.to_json())
        return
    names = ("connection", "period", "tier", "status", "seconds", "rate", "amount", "currency")
    rows = [
        (line.connection_id, line.period_start.isoformat(), line.bandwidth, line.status,
         str(line.seconds), str(line.hourly_rate), str(line.amount), line.currency)
        for line in answer.lines
    ]  # fmt: skip
    if as_csv:
        typer.echo(",".join(names))
        for row in rows:
            typer.echo(",".join(row))
        return
    table = _table(*names)
    for row in rows:
        table.add_row(*(safe(cell) for cell in row))
    out.print(table)
    for total in answer.totals:
        out.print(f"total {total.amount} {safe(total.currency)}")


@statements_app.command("list")
def statements_list(as_json: JsonFlag = False) -> None:
    """Your statements, newest month first."""
    with handled(), client() as api:
        rows = api.statements()
    if as_json:
        print_json({"statements": [row.to_json() for row in rows]})
        return
    table = _table("id", "month", "status")
    for row in rows:
        table.add_row(safe(row.id), safe(row.month), safe(row.status))
    out.print(table)


@statements_app.command("get")
def statements_get(
    statement_id: Annotated[str, typer.Argument(help="The statement's id (stm_…).")],
    as_json: JsonFlag = False,
    as_csv: CsvFlag = False,
) -> None:
    """One statement: its lines by connection and tier interval, caps and totals."""
    with handled(), client() as api:
        if as_csv:
            typer.echo(api.statement_csv(statement_id), nl=False)
            return
        doc = api.statement(statement_id)
    if as_json:
        print_json(doc.to_json())
        return
    table = _table("connection", "tier", "status", "from", "to", "seconds", "rate", "amount")
    for line in doc.lines:
        table.add_row(*(safe(str(line.get(k, ""))) for k in (
            "connectionId", "bandwidth", "status", "from", "to", "seconds", "hourlyRate",
            "amount")))  # fmt: skip
    out.print(f"statement {safe(doc.id)} for {safe(doc.month)} ({safe(doc.status)})")
    out.print(table)
    for total in doc.totals:
        out.print(
            f"total {safe(str(total.get('amount')))} {safe(str(total.get('currency')))} "
            f"(usage {safe(str(total.get('usage')))}, caps {safe(str(total.get('capAdjustment')))})"
        )


def register(target: typer.Typer) -> None:
    target.command("catalog")(catalog)
    target.command("quote")(quote)
    target.command("usage")(usage)
    target.add_typer(statements_app, name="statements")
