"""Accepts every message and does nothing with it."""

from __future__ import annotations

from .base import BaseBackend, OutgoingSMS, SendResult, SendStatus


class DummyBackend(BaseBackend):
    display_name = "Dummy"

    def send(self, sms: OutgoingSMS) -> SendResult:
        return SendResult(SendStatus.ACCEPTED, provider_message_id=sms.msg_id)
