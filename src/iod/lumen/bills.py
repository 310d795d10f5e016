"""Lumen bills over the money feature's statements (issue 15, `iod.billing.statements`):
`customerBill` lists the statements (one invoice per customer and calendar month),
`serviceLevelChargeDetails` an invoice's usage lines (per service, tier and rate interval),
each with its bandwidth and hours. Read only."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from iod.billing import repository as billing_repository
from iod.billing import statements
from iod.infra.clock import Clock
from iod.infra.ids import looks_like_id
from iod.lumen import repository
from iod.lumen.errors import LumenError
from iod.lumen.schemas import (
    BillCharges,
    Charge,
    CustomerBill,
    CustomerBills,
    DocumentSummary,
    ServiceCharge,
    ServiceChargeDetail,
    ServiceChargeDetails,
)
from iod.lumen.service import SERVICE_TYPE, Caller


def account_of(caller: Caller, query: str | None, header: str | None) -> str:
    """The billing account asked for (query, header, both or neither): the customer's only
    account. Another number in either is 404, as anything of another customer."""
    for number, path in ((query, "billingAccountNumber"), (header, "x-billing-account-number")):
        if number is not None and number != caller.customer_number:
            raise LumenError(
                404, "BILLING_ACCOUNT_NOT_FOUND", f"billing account {number} was not found", path
            )
    return caller.customer_number


def _month_days(month: str) -> tuple[date, date]:
    start, end = statements.month_bounds(month)
    return start.date(), (end - timedelta(days=1)).date()


def customer_bills(
    session: Session,
    clock: Clock,
    caller: Caller,
    account: str,
    start: date | None,
    end: date | None,
    offset: int,
    limit: int,
) -> CustomerBills:
    """The customer's statements whose month overlaps [start, end], newest first: each with
    its total per currency (after monthly caps) as `currentCharges`."""
    if start is not None and end is not None and end < start:
        raise LumenError(400, "INVALID_VALUE", "endBillDate is before startBillDate", "endBillDate")
    chosen = []
    for statement in billing_repository.statements_of(session, caller.principal.customer_id):
        first, last = _month_days(statement.month)
        if (start is None or last >= start) and (end is None or first <= end):
            chosen.append(statement)
    today = clock.now().date().isoformat()
    bills = []
    for statement in chosen[offset : offset + limit]:
        doc = statements.view(session, statement)
        first, last = _month_days(statement.month)
        closed = statement.closed_at.date().isoformat() if statement.closed_at else today
        bills.append(
            CustomerBill(
                invoiceNumber=statement.id,
                billingAccountNumber=account,
                status=statement.status,
                documentSummaryDetails=[
                    DocumentSummary(
                        billCharges=BillCharges(currentCharges=total["amount"]),
                        currencyCode=total["currency"],
                        fromDate=first.isoformat(),
                        toDate=last.isoformat(),
                        statementDate=closed,
                    )
                    for total in doc["totals"]
                ],
            )
        )
    return CustomerBills(customerBillDetails=bills, totalRecords=len(chosen))


def _hours(seconds: int) -> str:
    return f"{(Decimal(seconds) / 3600).quantize(Decimal('0.01'))}"


def service_charges(
    session: Session, caller: Caller, account: str, invoice: str, offset: int, limit: int
) -> ServiceChargeDetails:
    """The invoice's lines: one per service and stretch at one bandwidth, status and rate
    (consecutive hours joined), then the monthly cap adjustments (negative)."""
    statement = (
        billing_repository.statement_for_customer(session, caller.principal.customer_id, invoice)
        if looks_like_id(invoice)
        else None
    )
    if statement is None:  # unknown, or another customer's
        raise LumenError(
            404, "INVOICE_NOT_FOUND", f"invoice {invoice} was not found", "invoiceNumber"
        )
    doc: dict[str, Any] = statements.view(session, statement)
    lines = doc["lines"]
    adjustments = doc["capAdjustments"]
    ids = repository.services_of(
        session, sorted({x["connectionId"] for x in [*lines, *adjustments]})
    )
    start, end = statements.month_bounds(statement.month)
    charges: list[ServiceCharge] = []
    for line in lines:
        hours = _hours(line["seconds"])
        state = "" if line["status"] == "active" else f" ({line['status']})"
        charges.append(
            ServiceCharge(
                billingServiceId=ids.get(line["connectionId"], line["connectionId"]),
                chargeDescription1=f"{SERVICE_TYPE} hourly usage{state}",
                chargeDescription2=f"{line['bandwidth']}, {hours} hours at "
                f"{line['currency']} {line['hourlyRate']}/hour",
                charge=Charge(netAmount=line["amount"], currencyCode=line["currency"]),
                chargeFromDate=line["from"],
                chargeToDate=line["to"],
                bandwidth=line["bandwidth"],
                usageSeconds=line["seconds"],
            )
        )
    for adj in adjustments:
        charges.append(
            ServiceCharge(
                billingServiceId=ids.get(adj["connectionId"], adj["connectionId"]),
                chargeDescription1=f"{SERVICE_TYPE} monthly cap",
                chargeDescription2=f"{adj['bandwidth']}, capped at {adj['currency']} "
                f"{adj['monthlyCap']}/month",
                charge=Charge(netAmount=adj["amount"], currencyCode=adj["currency"]),
                chargeFromDate=start,
                chargeToDate=end,
                bandwidth=adj["bandwidth"],
            )
        )
    return ServiceChargeDetails(
        serviceLevelChargeDetail=[
            ServiceChargeDetail(
                invoiceNumber=statement.id,
                billingAccountNumber=account,
                serviceLevelCharge=charges[offset : offset + limit],
                totalRecords=len(charges),
            )
        ]
    )
