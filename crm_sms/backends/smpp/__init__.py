"""SMPP 3.4 (MegaFon's and most operators' bulk interface): one long-lived bound connection per
worker process, a window of outstanding submit_sm, delivery receipts on the same connection.

``SMS_URL=smpp://SYSTEM_ID:PASSWORD@smsc.example.com:2775/?sender=MyCompany`` (``smpps://``
for TLS, ``SMPPSBackend``). Options (from the URL query or ``OPTIONS``; strings converted):

- ``system_id``, ``password`` (the URL's user and password), ``host``, ``port`` (2775; 3550
  with TLS), ``system_type`` (empty), ``sender``;
- ``window`` (10): submit_sm outstanding at once, across the worker's threads; it is also
  ``max_batch_size``, so the outbox hands ``send_many`` a window's worth at a time;
- ``enquire_link`` (30 s of silence before a keep-alive), ``connect_timeout`` (10 s),
  ``response_timeout`` (30 s for any answer), ``reconnect_backoff`` (1 s, doubling up to
  ``reconnect_backoff_max``, 60 s);
- ``long_text``: ``udh`` (parts with a concatenation header, default) or ``payload`` (the
  whole text in one submit_sm's message_payload, for SMSCs that split it themselves);
- ``registered_delivery`` (1: ask for receipts; 0: none), ``source_ton``/``source_npi``
  (default 5/0 for an alphanumeric sender, 1/1 for a number), ``dest_ton``/``dest_npi`` (1/1);
- ``ca_bundle`` (CA file or directory for TLS; always verified), ``receipt_timezone`` (of
  YYMMDDhhmm receipt dates, UTC).

docs/smpp.md explains the threads, the window, receipts and what is not done yet.
"""

from .backend import SMPPBackend, SMPPSBackend
from .codes import CODES, classify_status, status_name
from .receipts import apply_smpp_receipts, receipt_report

__all__ = [
    "CODES",
    "SMPPBackend",
    "SMPPSBackend",
    "apply_smpp_receipts",
    "classify_status",
    "receipt_report",
    "status_name",
]
