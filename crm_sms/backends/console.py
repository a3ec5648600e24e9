"""Prints each message to stdout instead of sending it (for development)."""

from __future__ import annotations

import sys
import threading

from .base import BaseBackend, OutgoingSMS, SendResult, SendStatus


class ConsoleBackend(BaseBackend):
    display_name = "Console"

    def __init__(self, *args, stream=None, **kwargs):
        super().__init__(*args, **kwargs)
        self.stream = stream or sys.stdout
        self._lock = threading.Lock()

    def send(self, sms: OutgoingSMS) -> SendResult:
        with self._lock:
            self.stream.write(
                f"SMS {sms.msg_id} from {sms.sender or '-'} to {sms.to}\n{sms.text}\n{'-' * 40}\n"
            )
            self.stream.flush()
        return SendResult(SendStatus.ACCEPTED, provider_message_id=sms.msg_id)
