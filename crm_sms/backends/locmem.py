"""Keeps what it "sends" in ``outbox``, for tests (like django.core.mail's locmem backend)."""

from __future__ import annotations

import threading

from .base import BaseBackend, OutgoingSMS, SendResult, SendStatus

#: Every OutgoingSMS this backend accepted, in order. Tests clear it.
outbox: list[OutgoingSMS] = []
_lock = threading.Lock()


class LocmemBackend(BaseBackend):
    display_name = "Local memory"

    def send(self, sms: OutgoingSMS) -> SendResult:
        with _lock:
            outbox.append(sms)
        return SendResult(
            SendStatus.ACCEPTED, provider_message_id=sms.msg_id, raw={"locmem": len(outbox)}
        )
