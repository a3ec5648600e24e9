"""Local emulators of SMS providers' APIs, for the demo, tests and benchmarks.

``SandboxServer()`` emulates MegaFon's A2P HTTPS API (``SandboxServer(provider=...)`` another
provider listed in ``EMULATORS``); ``manage.py sms_sandbox`` and tests start it in a thread:
``SandboxServer().start()``. Failures can be injected (HTTP 503, slow answers, throttling,
dropped connections) to exercise a client's retry logic, and delivery reports are posted to
each message's ``callback_url``.

- :mod:`.server`: the threaded HTTP server, recorded requests, failure injection, rate limit;
- :mod:`.reports`: posting delivery reports;
- :mod:`.base`: :class:`ProviderEmulator`, what a provider module subclasses;
- :mod:`.megafon`: MegaFon's API, codes, de-duplication and reports.
"""

from .base import EMULATORS, NO_ANSWER, ProviderEmulator, RecordedRequest, Reply, emulator_class
from .megafon import (
    BOM,
    DESCRIPTIONS,
    MAX_MESSAGE_LENGTH,
    MSG_ID_RE,
    SEND_PATH,
    SENDER_RE,
    MegafonEmulator,
    smpp_receipt,
    validate_request,
)
from .server import OPTIONS, SandboxServer

__all__ = [
    "BOM",
    "DESCRIPTIONS",
    "EMULATORS",
    "MAX_MESSAGE_LENGTH",
    "MSG_ID_RE",
    "NO_ANSWER",
    "OPTIONS",
    "SEND_PATH",
    "SENDER_RE",
    "MegafonEmulator",
    "ProviderEmulator",
    "RecordedRequest",
    "Reply",
    "SandboxServer",
    "emulator_class",
    "smpp_receipt",
    "validate_request",
]
