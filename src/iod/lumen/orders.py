"""Lumen orders (`POST /Customer/v3/Ordering/orderRequest`): each item carried out by the
connections' own services, in the caller's transaction; idempotent on `externalId`.
Services flush; the edge commits."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from typing import Any

from sqlalchemy.orm import Session

from iod.connections import lifecycle
from iod.connections import service as connections
from iod.connections.schemas import BandwidthUpdate, ConnectionRequest
from iod.connections.service import Policy
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import Action, ChangeStatus, ConnectionStatus
from iod.infra.clock import Clock
from iod.infra.errors import ValidationFailed
from iod.lumen import quotes, repository
from iod.lumen.errors import LumenError
from iod.lumen.schemas import Order, OrderItemIn, OrderItemOut, OrderRequest
from iod.lumen.service import Caller, ensure_service_id, status_words
from iod.models import Connection, LumenOrder

# -- orders --------------------------------------------------------------------------------


def fingerprint(body: OrderRequest) -> str:
    canonical = json.dumps(body.model_dump(mode="json"), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()


def place_order(
    session: Session, clock: Clock, caller: Caller, body: OrderRequest, policy: Policy
) -> tuple[Order, bool]:
    """The order document and whether it is a repeat: an `externalId` the customer used
    before answers that order (the same request) or 422 (a different one). Every item is
    carried out in this transaction, or none."""
    principal = caller.principal
    external_id = str(body.externalId)
    print_ = fingerprint(body)
    existing = repository.order_by_external_id(session, principal.customer_id, external_id)
    if existing is not None:
        if existing.fingerprint != print_:
            raise LumenError(
                422,
                "DUPLICATE_EXTERNAL_ID",
                f"externalId {external_id} was used for a different order ({existing.id})",
                "externalId",
            )
        return document(session, clock, existing), True
    if body.billingAccount.id != caller.customer_number:
        raise LumenError(
            422,
            "INVALID_BILLING_ACCOUNT",
            f"billing account {body.billingAccount.id} is not this customer's "
            f"({caller.customer_number})",
            "billingAccount.id",
        )
    order = LumenOrder(
        id=str(uuid.uuid4()),
        customer_id=principal.customer_id,
        external_id=external_id,
        fingerprint=print_,
        request=body.model_dump(mode="json", exclude_none=True),
        items=[],
        created_by=principal.client_id,
        created_at=clock.now(),
    )
    # The externalId is claimed first: a concurrent repeat waits on its unique key here.
    repository.add_order(session, order)
    refs: list[dict[str, Any]] = []
    quoted = 0
    for index, item in enumerate(body.productOrderItem):
        path = f"productOrderItem[{index}]"
        if item.action == "delete":
            refs.append(_delete(session, clock, caller, item, path, policy))
            continue
        quote = _Quoted(session, clock, caller, body, quoted, order.id)
        quoted += 1
        if item.action == "modify":
            refs.append(_modify(session, clock, caller, item, path, quote, policy))
        else:
            refs.append(_add(session, clock, caller, quote, policy))
        quotes.book().mark_ordered(session, quote.quote.id, order.id)
    order.items = refs
    session.flush()
    return document(session, clock, order), False


def _service(session: Session, caller: Caller, item: OrderItemIn, path: str) -> Connection:
    """The connection of the item's `product.id` (a service id), locked; 404 for an unknown
    one or another customer's."""
    service_id = item.product.id
    if not service_id:
        raise LumenError(
            422,
            "MISSING_SERVICE_ID",
            f"a {item.action} names its service: product.id is the serviceId",
            f"{path}.product.id",
        )
    connection_id = repository.connection_of_service(
        session, caller.principal.customer_id, service_id
    )
    if connection_id is None:
        raise LumenError(
            404, "SERVICE_NOT_FOUND", f"Service Id {service_id} was not found", f"{path}.product.id"
        )
    return connections.get_connection(session, caller.principal, connection_id, lock=True)


def _product_status(session: Session, clock: Clock, connection: Connection) -> str:
    busy = repository.changes_in_flight(session, [connection.id], clock.now())
    return status_words(connection.status, connection.target_status, connection.id in busy)[1]


def _delete(
    session: Session, clock: Clock, caller: Caller, item: OrderItemIn, path: str, policy: Policy
) -> dict[str, Any]:
    connection = _service(session, caller, item, path)
    status = _product_status(session, clock, connection)
    if status in ("Disconnected", "Disconnect pending"):
        raise LumenError(
            422,
            "INVALID_STATUS",
            f"The Service Id cannot be disconnected since the current status is - {status}",
            f"{path}.product.id",
        )
    lifecycle.request_action(
        session, clock, caller.principal, connection, Action.TERMINATE, policy.max_attempts,
        locked=True,
    )  # fmt: skip
    return {"action": "delete", "connectionId": connection.id, "serviceId": item.product.id}


def _modify(
    session: Session,
    clock: Clock,
    caller: Caller,
    item: OrderItemIn,
    path: str,
    quoted: _Quoted,
    policy: Policy,
) -> dict[str, Any]:
    connection = _service(session, caller, item, path)
    status = _product_status(session, clock, connection)
    if status != "Active":
        raise LumenError(
            422,
            "INVALID_STATUS",
            f"The Service Id cannot be modified since the current status is - {status}",
            f"{path}.product.id",
        )
    quote, quote_path = quoted.quote, quoted.path
    if quote.service_id != item.product.id:
        raise LumenError(
            422,
            "QUOTE_MISMATCH",
            f"quote {quote.id} is not for a change of service {item.product.id}",
            quote_path,
        )
    update = BandwidthUpdate(bandwidth=format_bandwidth(quote.bandwidth_mbps), **_redeemed(quote))
    try:
        _, change, _, _ = connections.update_bandwidth(
            session, clock, caller.principal, connection.id, update, policy
        )
    except ValidationFailed as exc:  # e.g. the location no longer offers the quoted speed
        raise _not_orderable(exc, quote_path) from exc
    return {
        "action": "modify",
        "connectionId": connection.id,
        "serviceId": item.product.id,
        "changeId": change.id if change is not None else None,
    }


def _add(
    session: Session,
    clock: Clock,
    caller: Caller,
    quoted: _Quoted,
    policy: Policy,
) -> dict[str, Any]:
    quote, quote_path = quoted.quote, quoted.path
    if quote.service_id is not None:
        raise LumenError(
            422,
            "QUOTE_MISMATCH",
            f"quote {quote.id} is for a change of service {quote.service_id}; an add needs a "
            "quote for a new service",
            quote_path,
        )
    request = ConnectionRequest(
        bandwidth=format_bandwidth(quote.bandwidth_mbps),
        locationId=quote.master_site_id,
        **_redeemed(quote),
    )
    try:
        connection = connections.create_connection(
            session, clock, caller.principal, request, policy
        )
    except ValidationFailed as exc:  # the location is gone or no longer offers the speed
        raise _not_orderable(exc, quote_path) from exc
    service_id = ensure_service_id(session, connection.id, caller.principal.customer_id)
    return {"action": "add", "connectionId": connection.id, "serviceId": service_id}


def _redeemed(quote: quotes.Quote) -> dict[str, Any]:
    """`quoteId` for our services when the quote is the money feature's (its price applies)."""
    return {"quoteId": quote.id} if quote.redeem else {}


def _not_orderable(exc: ValidationFailed, quote_path: str) -> LumenError:
    """The services' refusal of a quoted order: the quote does not match what is ordered
    (money's `/quoteId` check), or the location no longer offers its speed."""
    if any(e.pointer == "/quoteId" for e in exc.errors):
        return LumenError(422, "QUOTE_MISMATCH", exc.detail, quote_path)
    return LumenError(422, "QUOTE_NOT_ORDERABLE", exc.detail, quote_path)


class _Quoted:
    """The quote of the `index`-th item that needs one (`quote[index]`), looked up when the
    item first asks for it: after the item's own checks, so a service whose status refuses
    a change says so whatever its quote."""

    def __init__(
        self,
        session: Session,
        clock: Clock,
        caller: Caller,
        body: OrderRequest,
        index: int,
        order_id: str,
    ) -> None:
        self._args = (session, clock, caller, body, index, order_id)
        self._found: quotes.Quote | None = None
        self.path = f"quote[{index}].id"

    @property
    def quote(self) -> quotes.Quote:
        if self._found is None:
            self._found = _find_quote(*self._args)
        return self._found


def _find_quote(
    session: Session, clock: Clock, caller: Caller, body: OrderRequest, index: int, order_id: str
) -> quotes.Quote:
    if index >= len(body.quote):
        raise LumenError(
            422,
            "QUOTE_REQUIRED",
            "an add or modify needs its quote: quote[] has one per such item, in their order",
            "quote",
        )
    path = f"quote[{index}].id"
    quote_id = body.quote[index].id
    quote = quotes.book().find(session, caller.principal.customer_id, quote_id)
    if quote is None:
        raise LumenError(422, "QUOTE_NOT_FOUND", f"Quote Id {quote_id} was not found", path)
    if quote.valid_until <= clock.now():
        raise LumenError(422, "QUOTE_EXPIRED", f"Quote Id {quote_id} has expired", path)
    if quote.ordered_by is not None and quote.ordered_by != order_id:
        raise LumenError(
            422, "QUOTE_ALREADY_ORDERED", f"Quote Id {quote_id} was already ordered", path
        )
    return quote


def get_order(session: Session, clock: Clock, caller: Caller, order_id: str) -> Order:
    order = repository.order(session, caller.principal.customer_id, order_id)
    if order is None:
        raise LumenError(404, "ORDER_NOT_FOUND", f"Order {order_id} was not found", "id")
    return document(session, clock, order)


def document(session: Session, clock: Clock, order: LumenOrder) -> Order:
    """The order as received, with its items' states read from what they act on now."""
    request = order.request
    refs: Sequence[dict[str, Any]] = order.items
    found = repository.connections(session, [r["connectionId"] for r in refs])
    changes = repository.changes(session, [r["changeId"] for r in refs if r.get("changeId")])
    items = []
    for item, ref in zip(request["productOrderItem"], refs, strict=True):
        state = _item_state(session, ref, found.get(ref["connectionId"]), changes)
        product = dict(item.get("product", {}))
        product["id"] = ref["serviceId"]
        items.append(
            OrderItemOut(
                id=str(item["id"]),
                quantity=item.get("quantity", 1),
                action=item["action"],
                state=state,
                product=product,
                productOffering=item.get("productOffering"),
            )
        )
    return Order(
        id=order.id,
        externalId=order.external_id,
        state=_order_state([i.state for i in items]),
        orderDate=order.created_at,
        billingAccount=request["billingAccount"],
        channel=request.get("channel", []),
        note=request.get("note", []),
        productOrderItem=items,
        quote=request.get("quote", []),
        relatedContactInformation=request.get("relatedContactInformation", []),
    )


_CHANGE_STATE = {
    ChangeStatus.APPLIED.value: "completed",
    ChangeStatus.FAILED.value: "failed",
    ChangeStatus.CANCELLED.value: "cancelled",
}


def _item_state(
    session: Session, ref: dict[str, Any], connection: Connection | None, changes: dict[str, Any]
) -> str:
    if connection is None:  # a foreign key makes this impossible; said plainly all the same
        return "failed"
    terminated = connection.status == ConnectionStatus.TERMINATED.value
    if ref["action"] == "delete":
        return "completed" if terminated else "inProgress"
    if ref["action"] == "modify":
        change = changes.get(ref.get("changeId") or "")
        if change is None:  # it had that bandwidth already: nothing to do
            return "completed"
        return _CHANGE_STATE.get(change.status, "inProgress")
    if connection.status == ConnectionStatus.PROVISIONING.value:
        return "inProgress"
    if terminated:  # active once (later disconnected), or its provisioning failed
        reached = any(t.to_status == "active" for t in lifecycle.history(session, connection.id))
        return "completed" if reached else "failed"
    return "completed"


def _order_state(states: Sequence[str]) -> str:
    if "inProgress" in states:
        return "inProgress"
    if all(s == "completed" for s in states):
        return "completed"
    if all(s == "failed" for s in states):
        return "failed"
    return "partial"
