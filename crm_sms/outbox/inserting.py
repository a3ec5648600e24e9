"""Inserting a campaign's messages: ``queued`` rows in bulk, each with a fresh ``msg_id`` and
due when its recipient's send window next opens (``crm_sms.quiet_hours``)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from ..bulk import RowInserter
from ..campaign_counts import add_counts
from ..models import Campaign, Message, MessageStatus, new_msg_ids
from ..quiet_hours import schedule
from .recipients import Recipient, Selection, cached_sms_info

#: Rows per INSERT when queuing a campaign.
INSERT_BATCH = 2000


def insert_messages(
    campaign: Campaign,
    sel: Selection,
    recipients: Any,
    due: datetime,
    now: datetime,
) -> int:
    """INSERT a ``queued`` Message per recipient, each with a fresh msg_id, ``INSERT_BATCH``
    rows at a time (the ORM's bulk_create dominated a 100,000-message campaign), due at its
    window's next opening in its recipient's zone (``quiet_hours.schedule``, once per zone);
    returns the SMS parts inserted. The campaign's ``queued`` count grows by the rows, in the
    caller's transaction (``crm_sms.campaign_counts``)."""
    inserter = _inserter(campaign, sel, now)
    batch: list[Recipient] = []
    segments = inserted = 0
    slots: dict[str, tuple[Any, Any]] = {}

    def slot(zone: str) -> tuple[Any, Any]:
        if zone not in slots:
            at, ends = schedule(sel.window, zone, due)
            slots[zone] = (
                inserter.prepare("next_attempt_at", at),
                inserter.prepare("window_end_at", ends),
            )
        return slots[zone]

    def flush() -> None:
        rows = [
            (r.contact_id, r.phone, r.text, cached_sms_info(r.text).segments, msg_id)
            + (r.time_zone, *slot(r.time_zone))
            for r, msg_id in zip(batch, new_msg_ids(len(batch)), strict=True)
        ]
        inserter.insert(rows)
        batch.clear()
        nonlocal segments, inserted
        segments += sum(row[3] for row in rows)
        inserted += len(rows)

    for recipient in recipients:
        batch.append(recipient)
        if len(batch) >= INSERT_BATCH:
            flush()
    if batch:
        flush()
    add_counts({(campaign.pk, MessageStatus.QUEUED): inserted})
    return segments


def _inserter(campaign: Campaign, sel: Selection, now: datetime) -> RowInserter:
    """The INSERT of the campaign's messages: the columns all rows share, then each row's."""
    return RowInserter(
        Message,
        {
            "status": MessageStatus.QUEUED,
            "provider_message_id": "",
            "error_code": "",
            "error_message": "",
            "attempts": 0,
            "claimed_at": None,
            "sent_at": None,
            "delivered_at": None,
            "updated_at": now,
            "last_response": None,
            "campaign": campaign.pk,
            "sender": sel.sender,
            "provider": sel.alias,
            "created_at": now,
            "window_start": sel.window.start if sel.window else None,
            "window_end": sel.window.end if sel.window else None,
        },
        ["contact", "phone", "text", "segments", "msg_id", "time_zone", "next_attempt_at"]
        + ["window_end_at"],
    )
