"""deliver_sm receipts as DeliveryReports, and applying them to messages.

A receipt names the message by the id the SMSC gave in submit_sm_resp (the
``receipted_message_id`` TLV, else the ``id:`` of the receipt text), which the outbox stored
as ``Message.provider_message_id``. ``stat:DELIVRD`` means delivered; UNDELIV, EXPIRED,
REJECTD, DELETED and UNKNOWN mean undelivered (error code ``STAT:err``); ENROUTE and ACCEPTD
are not final and are only acknowledged.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from django.db import transaction
from django.utils.translation import gettext as _

from ...models import EventSource
from ..base import DeliveryReport, DeliveryStatus
from ..megafon import RECEIPT_STATES, parse_receipt, parse_receipt_date

if TYPE_CHECKING:
    from .backend import SMPPBackend

logger = logging.getLogger("crm_sms.backends.smpp")

ESM_CLASS_TYPE = 0x3C  # the message type bits of esm_class
ESM_RECEIPT = 0x04  # SMSC delivery receipt
ESM_INTERMEDIATE = 0x20  # intermediate delivery notification
#: message_state TLV of a receipt -> the receipt text's ``stat:`` word.
MESSAGE_STATES = {
    1: "ENROUTE",
    2: "DELIVRD",
    3: "EXPIRED",
    4: "DELETED",
    5: "UNDELIV",
    6: "ACCEPTD",
    7: "UNKNOWN",
    8: "REJECTD",
}
NOT_FINAL_STATES = frozenset({"ENROUTE", "ACCEPTD"})


def as_text(value: Any) -> str:
    """A C-octet-string field (bytes from smpplib) as text."""
    if isinstance(value, bytes):
        return value.decode("latin-1").rstrip("\0")
    return str(value or "")


def receipt_report(pdu: Any, timezone: Any, alias: str = "") -> DeliveryReport | None:
    """A deliver_sm (smpplib object) as a DeliveryReport; None when there is nothing to report
    (a message from a subscriber, an intermediate state, a receipt without an id). Receipt
    dates without a zone are read in ``timezone``."""
    esm_type = (pdu.esm_class or 0) & ESM_CLASS_TYPE
    text = as_text(pdu.short_message or pdu.message_payload or b"")
    fields = parse_receipt(text)
    if esm_type == ESM_INTERMEDIATE:
        return None
    if esm_type != ESM_RECEIPT and not ("id" in fields and "stat" in fields):
        logger.info("SMPP %s: a message from a subscriber, ignored", alias)
        return None
    provider_id = as_text(pdu.receipted_message_id) or fields.get("id", "")
    stat = MESSAGE_STATES.get(pdu.message_state or 0) or fields.get("stat", "").upper()
    if not provider_id or not stat or stat in NOT_FINAL_STATES:
        return None
    err = fields.get("err", "")
    raw = {
        "receipt": text,
        "receipted_message_id": provider_id,
        "message_state": pdu.message_state,
        "network_error_code": (pdu.network_error_code or b"").hex(),
    }
    if stat == "DELIVRD":
        return DeliveryReport(
            status=DeliveryStatus.DELIVERED,
            provider_message_id=provider_id,
            delivered_at=parse_receipt_date(fields.get("done date", ""), timezone),
            raw=raw,
        )
    return DeliveryReport(
        status=DeliveryStatus.UNDELIVERED,
        provider_message_id=provider_id,
        error_code=f"{stat}:{err}" if err else stat,
        error_message=_("Not delivered: %(state)s (network error %(err)s).")
        % {"state": str(RECEIPT_STATES.get(stat, stat)), "err": err or "-"},
        raw=raw,
    )


def apply_smpp_receipts(backend: SMPPBackend) -> dict[str, int]:
    """Apply the receipts ``backend`` received since the last call to their messages, then
    acknowledge them to the SMSC (deliver_sm_resp) once the transaction commits: a receipt is
    answered only after it is written, so one lost in a crash is delivered again by the SMSC.
    If applying fails, the receipts are kept for the next call and the error propagates.
    Returns the counts of ``crm_sms.reports.apply_delivery_reports``."""
    from ...reports import apply_delivery_reports

    session = backend.session
    session.start()  # a worker that has sent nothing yet still binds and receives receipts
    items = session.take_receipts()
    try:
        counts = apply_delivery_reports(
            [report for report, _token in items],
            provider=backend.alias,
            source=EventSource.CALLBACK,
        )
    except Exception:
        session.requeue_receipts(items)
        raise
    tokens = [token for _report, token in items]
    transaction.on_commit(lambda: session.acknowledge(tokens))
    return counts
