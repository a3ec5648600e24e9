"""Cancel is final, pause holds (issue 10, point 7).

- A message in flight when its campaign is cancelled is never sent again: a RETRY result, a
  claim given back, or an expired claim makes it ``cancelled``, not ``queued``.
- A paused campaign's messages come back ``queued`` and are not due until it is resumed.
- "Retry failed" is not offered for a cancelled campaign, and refused when posted.
- A pause committed before the claim statement stops the batch: the campaign's status is read
  by the claim itself. On PostgreSQL the races are played with a second connection at a
  chosen point (a hook on the first connection's SQL), never with sleeps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.db import OperationalError, connection, connections, transaction
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm_sms import outbox
from crm_sms.backends.base import BaseBackend, RetrySafety, SendResult, SendStatus
from crm_sms.campaign_counts import recount
from crm_sms.models import Campaign, CampaignStatus, Contact, Message, MessageStatus
from crm_sms.outbox import claiming

from .fixtures_outbox import make_contacts

M, C = MessageStatus, CampaignStatus


class RetryBackend(BaseBackend):
    """Every send: "try again later" (a definite one: nothing was sent)."""

    display_name = "Always retry"
    retry_safety = RetrySafety.DEDUPLICATED

    def send(self, sms):
        return SendResult(SendStatus.RETRY, error_code="503", error_message="try later")


@pytest.fixture
def retrying(outbox_settings):
    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {"default": {"BACKEND": "tests.test_cancel.RetryBackend"}}
    crm_sms["DEFAULT_PROVIDER"] = "default"
    crm_sms["CLAIM_TIMEOUT"] = 60
    outbox_settings.CRM_SMS = crm_sms
    return outbox_settings


def start_campaign(n: int = 3) -> Campaign:
    make_contacts(n)
    return outbox.send_campaign(Contact.objects.all(), "Hello")


def write_results(claimed: list[Message]) -> None:
    """The worker's second half: send the claimed messages and write their results."""
    worker = outbox.Outbox(concurrency=2)
    try:
        worker.send_batch(claimed)
    finally:
        worker.close()


def statuses(campaign: Campaign) -> list[str]:
    return list(campaign.messages.order_by("pk").values_list("status", flat=True))


def in_another_connection(func: Callable[[], Any]) -> Any:
    """Run ``func`` in a thread, on its own database connection (autocommit), and wait."""
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["result"] = func()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc
        finally:
            connections.close_all()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box.get("result")


# --- cancel is final --------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_retry_result_after_cancel_is_cancelled_and_never_sent(retrying):
    campaign = start_campaign(3)
    claimed = outbox.claim_due_messages(10)
    assert len(claimed) == 3
    assert outbox.cancel_campaign(campaign) == 0  # all three are in flight
    write_results(claimed)  # the provider says "try again later"
    assert statuses(campaign) == [M.CANCELLED] * 3
    event = Message.objects.get(pk=claimed[0].pk).events.order_by("-pk").first()
    assert (event.old_status, event.new_status) == (M.SENDING, M.CANCELLED)
    assert "cancelled" in event.description
    # Nothing comes back: no retry is due, "retry failed" finds nothing, the campaign stays.
    later = timezone.now() + timedelta(days=1)
    assert outbox.claim_due_messages(10, now=later) == []
    campaign.refresh_from_db()
    assert campaign.status == C.CANCELLED


@pytest.mark.django_db
def test_an_expired_claim_of_a_cancelled_campaign_is_cancelled(retrying):
    campaign = start_campaign(2)
    claimed = outbox.claim_due_messages(10)
    outbox.cancel_campaign(campaign)
    later = timezone.now() + timedelta(seconds=61)
    assert outbox.release_stale_claims(now=later) == 2
    assert statuses(campaign) == [M.CANCELLED] * 2
    event = Message.objects.get(pk=claimed[0].pk).events.order_by("-pk").first()
    assert (event.old_status, event.new_status) == (M.SENDING, M.CANCELLED)


@pytest.mark.django_db
def test_a_paused_campaign_keeps_its_retries_queued_but_not_due_until_resumed(retrying):
    campaign = start_campaign(2)
    first, second = outbox.claim_due_messages(10)
    assert outbox.pause_campaign(campaign)
    write_results([first])  # a RETRY result
    later = timezone.now() + timedelta(seconds=61)
    assert outbox.release_stale_claims(now=later) == 1  # the other one's claim expired
    assert statuses(campaign) == [M.QUEUED] * 2
    assert outbox.claim_due_messages(10, now=later + timedelta(days=1)) == []
    assert outbox.resume_campaign(campaign)
    claimed = outbox.claim_due_messages(10, now=later)
    assert {m.pk for m in claimed} == {first.pk, second.pk}


# --- "retry failed" and a cancelled campaign ------------------------------------------------


def csrf_post(client: Client, page: str, url: str, data: dict | None = None):
    html = client.get(page).content.decode()
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html).group(1)
    return client.post(url, {**(data or {}), "csrfmiddlewaretoken": token}, follow=True)


@pytest.mark.django_db
def test_retry_failed_is_neither_offered_nor_done_for_a_cancelled_campaign(retrying, admin_user):
    campaign = start_campaign(3)
    claimed = outbox.claim_due_messages(10)
    outbox.cancel_campaign(campaign)
    Message.objects.filter(pk=claimed[0].pk).update(status=M.FAILED)  # its result: rejected
    recount([campaign.pk])  # set by hand above: the admin reads the campaign's counts
    client = Client(enforce_csrf_checks=True, headers={"accept-language": "en"})
    client.force_login(admin_user)
    change = reverse("admin:crm_sms_campaign_change", args=[campaign.pk])
    page = client.get(change)
    assert "retry" not in [op["name"] for op in page.context["operations"]]
    changelist = reverse("admin:crm_sms_campaign_changelist")
    data = {"action": "retry_failed_action", "index": "0", "_selected_action": [campaign.pk]}
    response = csrf_post(client, changelist, changelist, data)
    assert "A cancelled campaign is final" in response.content.decode()
    control = reverse("admin:crm_sms_campaign_control", args=[campaign.pk, "retry"])
    response = csrf_post(client, change, control)
    assert "A cancelled campaign is final" in response.content.decode()
    campaign.refresh_from_db()
    assert campaign.status == C.CANCELLED
    assert Message.objects.get(pk=claimed[0].pk).status == M.FAILED


# --- a pause between reading the campaigns and claiming ---------------------------------------


def pause_elsewhere(campaign: Campaign) -> None:
    in_another_connection(lambda: outbox.pause_campaign(Campaign.objects.get(pk=campaign.pk)))


@pytest.mark.django_db(transaction=True)
def test_a_pause_committed_before_the_claim_stops_the_batch(retrying, monkeypatch):
    """The worker builds its due queryset, then claims: a pause another process commits in
    between must stop the batch (the campaign's status was read in a separate query before)."""
    campaign = start_campaign(3)
    claim = claiming.claim_messages

    def paused_in_between(queryset, limit, now=None):
        pause_elsewhere(campaign)
        return claim(queryset, limit, now)

    monkeypatch.setattr(claiming, "claim_messages", paused_in_between)
    assert outbox.claim_due_messages(10) == []
    assert statuses(campaign) == [M.QUEUED] * 3


@pytest.mark.django_db(transaction=True)
def test_a_pause_committed_inside_the_claim_transaction_stops_the_batch(
    requires_postgres, retrying
):
    """PostgreSQL: the pause commits on another connection inside the claim's transaction, just
    before its SELECT ... FOR UPDATE SKIP LOCKED runs: that statement sees the pause."""
    campaign = start_campaign(3)
    fired = []

    def hook(execute, sql, params, many, context):
        if not fired and "FOR UPDATE" in sql and '"crm_sms_message"' in sql:
            fired.append(sql)
            pause_elsewhere(campaign)
        return execute(sql, params, many, context)

    with connection.execute_wrapper(hook):
        claimed = outbox.claim_due_messages(10)
    assert fired and claimed == []
    assert statuses(campaign) == [M.QUEUED] * 3
    campaign.refresh_from_db()
    assert campaign.status == C.PAUSED


# --- a cancel while results or expired claims are written (PostgreSQL) ------------------------


def try_cancel_now(campaign: Campaign) -> bool:
    """On another connection: cancel the campaign unless someone holds its row (NOWAIT).
    True if it was cancelled now."""

    def attempt() -> bool:
        try:
            with transaction.atomic():
                list(Campaign.objects.select_for_update(nowait=True).filter(pk=campaign.pk))
        except OperationalError:
            return False  # locked: the operator's cancel waits for this writer
        outbox.cancel_campaign(Campaign.objects.get(pk=campaign.pk))
        return True

    return in_another_connection(attempt)


def cancel_while(marker: str, campaign: Campaign, action: Callable[[], Any]) -> list[bool]:
    """Run ``action``; right after its first ``FOR UPDATE`` of messages containing ``marker``,
    try to cancel the campaign from another connection. Then cancel it for good."""
    tried: list[bool] = []

    def hook(execute, sql, params, many, context):
        result = execute(sql, params, many, context)
        if not tried and '"crm_sms_message"' in sql and "FOR UPDATE" in sql and marker in sql:
            tried.append(try_cancel_now(campaign))
        return result

    with connection.execute_wrapper(hook):
        action()
    outbox.cancel_campaign(Campaign.objects.get(pk=campaign.pk))  # the waiting cancel
    return tried


@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_result_write_leaves_nothing_queued(requires_postgres, retrying):
    campaign = start_campaign(3)
    claimed = outbox.claim_due_messages(10)
    tried = cancel_while('"claimed_at"', campaign, lambda: write_results(claimed))
    assert tried == [False]  # the result writer holds the campaign: the cancel waits
    assert statuses(campaign) == [M.CANCELLED] * 3


@pytest.mark.django_db(transaction=True)
def test_a_cancel_during_the_release_of_expired_claims_leaves_nothing_queued(
    requires_postgres, retrying
):
    campaign = start_campaign(3)
    outbox.claim_due_messages(10)
    later = timezone.now() + timedelta(seconds=61)
    tried = cancel_while("SKIP LOCKED", campaign, lambda: outbox.release_stale_claims(now=later))
    assert tried == [False]
    assert statuses(campaign) == [M.CANCELLED] * 3
