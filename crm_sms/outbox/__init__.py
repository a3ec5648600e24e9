"""The outbox: queue messages, claim due ones, send them concurrently, record results, retry.

One module per job:

- ``queueing``: ``send_sms``, ``send_now``, ``send_campaign`` and ``preview_campaign`` validate
  everything first, then insert ``Message`` rows (``queued``, a fresh ``msg_id``) in bulk;
  ``recipients`` holds the recipient selection the preview and the campaign share.
- ``controls``: pause, resume, cancel, retry failed, resend one message, start scheduled
  campaigns, complete finished ones; ``resending`` says what a resend or a retry would do
  (same row and msg_id; uncertain ones only with a confirmation), for the admin's pages.
- ``claiming``: due messages, claiming them (``queued`` -> ``sending`` with ``claimed_at``;
  PostgreSQL ``SKIP LOCKED``, SQLite one writer), taking back claims older than CLAIM_TIMEOUT.
- ``worker``: ``Outbox`` (``run_worker``, ``dispatch_due``, the Celery task) sends claimed
  messages from a thread pool (``pool``: the provider gate, rate limits, one request per
  message or per ``send_many`` group; ``lookups``: asking the provider first after an
  ambiguous failure) and writes results in batches.
- ``results``: what each result does to its message (sent, failed, or queued again with
  exponential backoff and jitter, always with the same ``msg_id``, until MAX_ATTEMPTS), written
  in bulk; a provider-wide failure pauses the campaign after at most PAUSE_AFTER requests;
  after an ambiguous failure with a provider that can neither drop a repeat nor be asked, the
  message is ``uncertain`` and never sent again without an operator.

Every status change goes through ``crm_sms.transitions`` (docs/statuses.md).
"""

from .claiming import claim_due_messages, claim_messages, due_messages, release_stale_claims
from .controls import (
    cancel_campaign,
    pause_campaign,
    resend_message,
    resume_campaign,
    retry_failed,
    start_due_campaigns,
)
from .queueing import CampaignPreview, preview_campaign, send_campaign, send_now, send_sms
from .recipients import resolve_provider, resolve_sender
from .worker import DispatchSummary, Outbox, dispatch_due, run_worker

__all__ = [
    "CampaignPreview",
    "DispatchSummary",
    "Outbox",
    "cancel_campaign",
    "claim_due_messages",
    "claim_messages",
    "dispatch_due",
    "due_messages",
    "pause_campaign",
    "preview_campaign",
    "release_stale_claims",
    "resend_message",
    "resolve_provider",
    "resolve_sender",
    "resume_campaign",
    "retry_failed",
    "run_worker",
    "send_campaign",
    "send_now",
    "send_sms",
    "start_due_campaigns",
]
