"""The Lumen use cases over the same engine: what the inventory shows, what an order does.

An order calls the connections' own services (create, update the bandwidth, terminate), so
it passes the same checks (tiers, capacity, the state machine) and records the same audit
and events as our API. Services flush; the edge commits."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from sqlalchemy.orm import Session

from iod.auth.tokens import Principal
from iod.domain.bandwidth import format_bandwidth
from iod.domain.status import ConnectionStatus
from iod.infra.clock import Clock
from iod.lumen import repository
from iod.lumen.schemas import (
    BillingAccount,
    BillingAccountList,
    BillingAccountRef,
    Characteristic,
    Inventory,
    InventoryItem,
    InventoryLocation,
    InventoryProduct,
    LocationList,
    LocationProfile,
    Pagination,
    Partner,
    PartnerList,
    RelatedParty,
)
from iod.lumen.schemas import Location as LocationOut

SERVICE_TYPE = "Internet On-Demand"


@dataclass(frozen=True)
class Catalog:
    """What the Lumen paths say about this deployment (settings `IOD_LUMEN_…`)."""

    partner_id: str = "1000"
    partner_name: str = "Internet On-Demand"
    partner_type: str = "CLOUD_PARTNER"
    hq_country: str = "US"
    product_code: str = "718"


@dataclass(frozen=True)
class Caller:
    """The client and its customer, whose `x-customer-number` the edge has checked."""

    principal: Principal
    customer_number: str
    customer_name: str


# -- service ids ---------------------------------------------------------------------------


def new_service_id() -> str:
    """Eleven digits, `77` then nine random ones (Lumen's service ids start with 77)."""
    return f"77{secrets.randbelow(10**9):09d}"


def ensure_service_id(session: Session, connection_id: str, customer_id: str) -> str:
    """The connection's service id, given now if it has none yet: a new random one is
    drawn and inserted unless the connection has one or the id is taken (one statement, the
    usual case of an order, issue 14); if it was not inserted, one read says which (the
    connection's own id is returned; a taken one makes it draw another)."""
    while True:
        service_id = new_service_id()
        if repository.add_service_id(session, connection_id, customer_id, service_id):
            return service_id
        holders = repository.service_id_holders(session, connection_id, service_id)
        for holder in holders:
            if holder.connection_id == connection_id:
                return str(holder.service_id)


# -- status words --------------------------------------------------------------------------

_SERVICE_STATUS = {
    ConnectionStatus.PROVISIONING.value: "Provisioning",
    ConnectionStatus.ACTIVE.value: "Active",
    ConnectionStatus.SUSPENDED.value: "Suspended",
    ConnectionStatus.TERMINATED.value: "Disconnected",
}
_HEADING = {
    ConnectionStatus.TERMINATED.value: "Disconnect pending",
    ConnectionStatus.SUSPENDED.value: "Suspend pending",
    ConnectionStatus.ACTIVE.value: "Resume pending",
}
CHANGE_PENDING = "Change pending"


def status_words(status: str, target: str | None, change_in_flight: bool) -> tuple[str, str]:
    """(the service's `status`, its `product.status`) for a connection's state: an action
    accepted but not done is "… pending", a bandwidth change due but not yet in force on
    the network is "Change pending" (docs/lumen.md has the table)."""
    service = _SERVICE_STATUS[status]
    if status == ConnectionStatus.TERMINATED.value:
        return service, service
    # (A connection being provisioned heads to active: that is no "Resume pending".)
    resuming = status != ConnectionStatus.PROVISIONING.value or target != "active"
    if target not in (None, status) and target in _HEADING and resuming:
        return service, _HEADING[str(target)]
    if status == ConnectionStatus.ACTIVE.value and change_in_flight:
        return service, CHANGE_PENDING
    return service, service


# -- inventory and discovery ---------------------------------------------------------------


def inventory(
    session: Session,
    clock: Clock,
    caller: Caller,
    catalog: Catalog,
    *,
    service_id: str | None,
    service_type: str | None,
    page_number: int,
    page_size: int,
) -> Inventory:
    if service_type is not None and service_type.strip().lower() != SERVICE_TYPE.lower():
        return Inventory(serviceInventory=[])
    customer_id = caller.principal.customer_id
    rows = repository.inventory(
        session, customer_id, service_id, (page_number - 1) * page_size, page_size
    )
    busy = repository.changes_in_flight(session, [r.id for r in rows], clock.now())
    account = BillingAccountRef(id=caller.customer_number, name=caller.customer_name)
    items = []
    for row in rows:
        status, product_status = status_words(row.status, row.target_status, row.id in busy)
        bandwidth = format_bandwidth(row.bandwidth_mbps)
        characteristics = [
            Characteristic(name="Bandwidth", value=bandwidth),
            Characteristic(name="UNI Service ID", value=row.id),
        ]
        if row.ipv4_block:
            characteristics.append(Characteristic(name="IPv4 Block", value=row.ipv4_block))
        items.append(
            InventoryItem.model_validate(
                {
                    "serviceId": row.service_id,
                    "serviceType": SERVICE_TYPE,
                    "status": status,
                    "product": InventoryProduct(
                        id=catalog.product_code,
                        name=SERVICE_TYPE,
                        status=product_status,
                        productCharacteristic=characteristics,
                    ),
                    "Bandwidth": bandwidth,
                    "UNI Service ID": row.id,
                    "IPv4 Block": row.ipv4_block,
                    "billingAccount": account,
                    "location": InventoryLocation(
                        masterSiteid=row.location_id,
                        masterSiteId=row.location_id,
                        name=row.location_name,
                        address=row.location_address,
                    ),
                    "locationProfile": LocationProfile(
                        dataCenter=True, relatedParty=RelatedParty(id=catalog.partner_id)
                    ),
                    "startDate": row.created_at,
                    "lastUpdateDate": row.updated_at,
                }
            )
        )
    return Inventory(serviceInventory=items)


def partners(catalog: Catalog) -> PartnerList:
    """One partner: this deployment, whose locations are the catalog's."""
    return PartnerList(
        pagination=[Pagination(pageNumber=1, pageSize=1, totalRecords=1)],
        listPartners=[
            Partner(
                id=catalog.partner_id, name=catalog.partner_name, partnerType=catalog.partner_type
            )
        ],
    )


def locations(session: Session, catalog: Catalog, partner_id: str | None) -> LocationList:
    """The catalog's locations (each a master site), for this deployment's partner id;
    none for another partner."""
    if partner_id is not None and partner_id != catalog.partner_id:
        return LocationList(location=[])
    return LocationList(
        location=[
            LocationOut(
                masterSiteId=location.id,
                name=location.name,
                address=location.address,
                partnerId=catalog.partner_id,
                availableSpeeds=[format_bandwidth(t) for t in location.tiers_mbps],
            )
            for location in repository.locations(session)
        ]
    )


def billing_accounts(caller: Caller, catalog: Catalog) -> BillingAccountList:
    """One billing account per customer, numbered as the customer (until the money issue's
    statements bring accounts of their own)."""
    return BillingAccountList(
        billingAccount=[
            BillingAccount(
                id=caller.customer_number, name=caller.customer_name, hqCountry=catalog.hq_country
            )
        ]
    )
