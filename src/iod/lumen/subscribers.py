"""Every connection gets its Lumen service id when it is ordered, through either API: in the
transaction that orders it (the `connection.ordered` event's)."""

from __future__ import annotations

from sqlalchemy.orm import Session

from iod import events
from iod.lumen.service import ensure_service_id


@events.subscribe
def give_service_ids(session: Session, written: list[events.WrittenEvent]) -> None:
    for event in written:
        if event.name == "connection.ordered":
            ensure_service_id(session, event.subject_id, event.customer_id)
