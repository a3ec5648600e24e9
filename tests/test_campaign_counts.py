"""Messages per (campaign, status) kept up to date (``crm_sms.campaign_counts``, issue 15.1):
after every step of a campaign's life the table equals a GROUP BY over the messages."""

from __future__ import annotations

import importlib
import io

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count

from crm_sms import outbox
from crm_sms.admin.campaigns import status_counts
from crm_sms.backends.base import BaseBackend, DeliveryReport, SendResult, SendStatus
from crm_sms.campaign_counts import add_counts, counts_for, recount
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    CampaignStatusCount,
    Contact,
    Message,
    MessageStatus,
)
from crm_sms.outbox import failover
from crm_sms.privacy import erase_contact
from crm_sms.reports import apply_delivery_reports
from tests.fixtures_outbox import make_contacts, subprocess_env, wait_until

M = MessageStatus
pytestmark = pytest.mark.django_db


class MixedBackend(BaseBackend):
    """Accepts most messages; rejects phones ending in 3, asks to retry those ending in 7."""

    display_name = "Mixed"

    def send(self, sms):
        if sms.to.endswith("3"):
            return SendResult(SendStatus.REJECTED, error_code="21", error_message="bad number")
        if sms.to.endswith("7"):
            return SendResult(SendStatus.RETRY, error_code="503", error_message="later")
        return SendResult(SendStatus.ACCEPTED, provider_message_id=f"p-{sms.msg_id}")


@pytest.fixture
def mixed(outbox_settings):
    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {
        "default": {"BACKEND": "tests.test_campaign_counts.MixedBackend"},
        "reserve": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
    }
    crm_sms.update(DEFAULT_PROVIDER="default", MAX_ATTEMPTS=2)
    outbox_settings.CRM_SMS = crm_sms
    return outbox_settings


def counted() -> dict[int, dict[str, int]]:
    """The truth: a GROUP BY over the messages, for every campaign."""
    truth: dict[int, dict[str, int]] = {
        pk: {} for pk in Campaign.objects.values_list("pk", flat=True)
    }
    rows = (
        Message.objects.filter(campaign__isnull=False)
        .order_by()
        .values_list("campaign_id", "status")
        .annotate(n=Count("*"))
    )
    for campaign_id, status, n in rows:
        truth[campaign_id][status] = n
    return truth


def assert_counts_match() -> dict[int, dict[str, int]]:
    """The kept counts (as the admin reads them) equal the messages', none negative."""
    truth = counted()
    assert counts_for(list(truth)) == truth
    assert status_counts(list(truth)) == truth
    assert not CampaignStatusCount.objects.filter(count__lt=0).exists()
    return truth


def campaign_of(n: int, start: int = 0) -> Campaign:
    make_contacts(n, start=start)
    return outbox.send_campaign(Contact.objects.filter(pk__in=_new_contacts(n)), "Hi")


def _new_contacts(n: int) -> list[int]:
    return list(Contact.objects.order_by("-pk").values_list("pk", flat=True)[:n])


def run_worker(rounds: int = 6) -> None:
    for _ in range(rounds):
        outbox.dispatch_due()
        Message.objects.filter(status=M.QUEUED).update(next_attempt_at="2000-01-01T00:00Z")


def test_a_campaign_through_send_reports_retry_resend_and_cancel(mixed):
    campaign = campaign_of(20)
    assert assert_counts_match()[campaign.pk] == {M.QUEUED: 20}

    run_worker()  # sent, failed (rejected or retries exhausted)
    truth = assert_counts_match()[campaign.pk]
    assert truth[M.SENT] and truth[M.FAILED] and sum(truth.values()) == 20

    sent = list(Message.objects.filter(campaign=campaign, status=M.SENT).order_by("pk"))
    reports = [DeliveryReport(M.DELIVERED, msg_id=m.msg_id) for m in sent[:5]]
    reports += [DeliveryReport(M.UNDELIVERED, msg_id=m.msg_id) for m in sent[5:7]]
    reports.append(DeliveryReport(M.DELIVERED, msg_id=sent[7].msg_id))
    apply_delivery_reports(reports, provider="default")
    assert assert_counts_match()[campaign.pk][M.DELIVERED] == 6

    failed = Message.objects.filter(campaign=campaign, status=M.FAILED).count()
    assert outbox.retry_failed(campaign) == failed
    assert assert_counts_match()[campaign.pk][M.QUEUED] == failed

    delivered = Message.objects.filter(campaign=campaign, status=M.DELIVERED).first()
    outbox.resend_message(delivered, confirmed=True)
    assert assert_counts_match()[campaign.pk][M.DELIVERED] == 5

    assert outbox.cancel_campaign(campaign) == failed + 1
    truth = assert_counts_match()[campaign.pk]
    assert truth[M.CANCELLED] == failed + 1 and M.QUEUED not in truth


def test_failover_erasure_and_a_second_campaign_keep_each_campaigns_counts(mixed):
    first, second = campaign_of(10), campaign_of(6, start=10)
    assert assert_counts_match()[second.pk] == {M.QUEUED: 6}

    # Failover: queued -> queued at the next provider, nothing changes in the counts.
    assert failover.hand_over("default", "reserve", "test") == 16
    assert_counts_match()
    run_worker()
    assert assert_counts_match()[first.pk] == {M.SENT: 10}

    contact = Contact.objects.filter(messages__campaign=second).first()
    Message.objects.filter(campaign=second).update(status=M.QUEUED)  # by hand...
    recount([second.pk])  # ...then recounted, as sms_recount does
    erase_contact(contact)  # its queued message is cancelled, then anonymised
    assert assert_counts_match()[second.pk] == {M.QUEUED: 5, M.CANCELLED: 1}

    second.delete()  # the counts go with the campaign
    assert not CampaignStatusCount.objects.filter(campaign_id=second.pk).exists()
    assert_counts_match()


def test_messages_made_one_by_one_through_the_orm_are_counted(mixed):
    campaign = Campaign.objects.create(name="c", text="t", status=CampaignStatus.RUNNING)
    for status in (M.SENT, M.SENT, M.FAILED):
        Message.objects.create(
            campaign=campaign, phone="+79001234212", text="t", provider="default", status=status
        )
    Message.objects.create(phone="+79001234212", text="single", provider="default")
    assert assert_counts_match()[campaign.pk] == {M.SENT: 2, M.FAILED: 1}


def test_the_migrations_backfill_counts_existing_messages(mixed):
    first, second = campaign_of(7), campaign_of(4, start=7)
    run_worker()
    truth = counted()
    CampaignStatusCount.objects.all().delete()
    assert counts_for([first.pk, second.pk]) == {first.pk: {}, second.pk: {}}
    migration = importlib.import_module("crm_sms.migrations.0013_campaign_status_counts")
    with connection.cursor() as cursor:
        cursor.execute(migration.FILL)
    assert truth[first.pk]
    assert assert_counts_match() == truth


def test_sms_recount_fixes_a_table_made_wrong(mixed):
    first, second, third = campaign_of(5), campaign_of(3, start=5), campaign_of(2, start=8)
    run_worker()
    truth = assert_counts_match()
    add_counts({(first.pk, M.SENT): 40, (first.pk, M.DELIVERED): -1, (second.pk, "bogus"): 3})
    CampaignStatusCount.objects.filter(campaign=third).delete()
    assert counts_for([first.pk])[first.pk] != truth[first.pk]

    out = io.StringIO()
    call_command("sms_recount", stdout=out)
    assert assert_counts_match() == truth
    assert "Recounted 3/3 campaigns, 3 corrected." in out.getvalue()

    out = io.StringIO()
    call_command("sms_recount", "--campaign", str(first.pk), stdout=out)
    assert "Recounted 1/1 campaigns, 0 corrected." in out.getvalue()


def test_one_upsert_per_batch_of_moves(mixed):
    campaign = campaign_of(50)
    claimed = outbox.claim_due_messages(50)
    assert len(claimed) == 50
    _collect.statements.clear()
    with connection.execute_wrapper(_collect):
        worker = outbox.Outbox(concurrency=2)
        try:
            worker.send_batch(claimed)
        finally:
            worker.close()
    upserts = [sql for sql in _collect.statements if "campaignstatuscount" in sql.lower()]
    assert len(upserts) == 1  # sent, failed and retried alike: one statement for the batch
    assert_counts_match()
    assert sum(counted()[campaign.pk].values()) == 50


def _collect(execute, sql, params, many, context):
    _collect.statements.append(sql)
    return execute(sql, params, many, context)


_collect.statements = []


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_workers_and_reports_at_once_keep_the_counts(megafon_provider, worker_processes):
    """Two ``sms_worker`` processes claim and write results for one campaign while this
    process applies delivery reports to what they sent: the counts still match (the UPSERTs
    wait for each other, and nothing deadlocks)."""
    megafon_provider.configure(latency_ms=20)
    make_contacts(300)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    env = subprocess_env(megafon_provider)
    for _ in range(2):
        worker_processes(["--concurrency", "4", "--batch-size", "25"], env)

    def reported() -> int:
        sent = list(Message.objects.filter(status=M.SENT).values_list("msg_id", flat=True)[:50])
        reports = [DeliveryReport(M.DELIVERED, msg_id=msg_id) for msg_id in sent]
        apply_delivery_reports(reports, provider="default")
        return Message.objects.filter(status=M.DELIVERED).count()

    assert wait_until(lambda: reported() == 300, timeout=60)
    assert assert_counts_match()[campaign.pk] == {M.DELIVERED: 300}
