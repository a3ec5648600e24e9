"""A local SMSC speaking SMPP 3.4, for the demo, tests and benchmarks of the SMPP backend.

``SMPPSandbox(system_id="test", password="test").start()`` listens on loopback (port 0: a
free one) and serves each ESME connection in its own thread: bind_transceiver with
credentials (bind_transmitter/receiver too), submit_sm, deliver_sm receipts, enquire_link,
unbind, generic_nack for anything else. Answers wait ``latency_ms``; failures are injected at
run time with ``configure()``: throttling (a share, or a messages-per-second ``rate``), errors
(a share answered ``error_status``, or ``statuses`` per recipient), connections dropped after
a submit_sm (accepted, never answered: the ambiguous case), a forced ``bind_status``, silence
to enquire_link, and ``hold`` (answers kept until ``release()``).

Long texts are reassembled from their concatenation headers and decoded (``messages``). Each
accepted submit_sm with registered_delivery gets a receipt by deliver_sm after
``receipt_delay``; receipts for a system_id with no bound connection, or not answered before
a connection closed, are queued and delivered on the next bind.

- :mod:`.server`: :class:`SMPPSandbox`; :mod:`.connection`: one ESME connection;
- :mod:`.texts`: GSM-7/UCS-2 decoding, concatenation, receipt text;
- :mod:`.command`: ``sms_sandbox --smpp PORT`` (``add_smpp_arguments``,
  ``run_smpp_from_options``).
"""

from .command import add_smpp_arguments, run_smpp_from_options
from .server import OPTIONS, SMPPSandbox
from .texts import decode_text, split_udh

__all__ = [
    "OPTIONS",
    "SMPPSandbox",
    "add_smpp_arguments",
    "decode_text",
    "run_smpp_from_options",
    "split_udh",
]
