"""The outbox and many-recipient requests (SMS.RU ``send_many``), and campaign completion when a
delivery report overtakes the send result."""

from __future__ import annotations

import contextlib
from collections import Counter

import pytest

from crm_sms import outbox
from crm_sms.backends.base import DeliveryReport, SendResult, SendStatus
from crm_sms.backends.smsru import SmsRuBackend
from crm_sms.models import Campaign, CampaignStatus, Contact, Message, MessageStatus
from crm_sms.outbox import pool
from crm_sms.reports import apply_delivery_reports
from tests.fixtures_outbox import make_contacts

pytestmark = pytest.mark.django_db


def statuses(**filters) -> Counter:
    return Counter(Message.objects.filter(**filters).values_list("status", flat=True))


def send_requests(fake) -> list[list[tuple[str, str]]]:
    """The form fields of each /sms/send request the fake received."""
    return [fields for path, fields in fake.requests if path == "/sms/send"]


def numbers_in(fields: list[tuple[str, str]]) -> int:
    form = dict(fields)
    if "to" in form:
        return len(form["to"].split(","))
    return sum(1 for key, _ in fields if key.startswith("multi["))


@pytest.fixture
def smsru_outbox(smsru_provider, settings):
    """SMS.RU's fake as the default provider, with the outbox's fast test timings."""
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "RETRY_BACKOFF": 0.01,
        "RETRY_BACKOFF_MAX": 0.05,
        "IDLE_SLEEP": 0.05,
        "PAUSE_AFTER": 3,
    }
    return smsru_provider


def test_smsru_campaign_goes_out_up_to_100_numbers_per_request(smsru_outbox):
    make_contacts(250)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    summary = outbox.dispatch_due()
    requests_ = send_requests(smsru_outbox)
    assert len(requests_) == 3
    assert sorted(numbers_in(fields) for fields in requests_) == [50, 100, 100]
    assert summary["sent"] == 250
    assert statuses() == {MessageStatus.SENT: 250}
    # Every message carries the id SMS.RU gave its number.
    sent = dict(Message.objects.values_list("phone", "provider_message_id"))
    by_phone = {"+" + m["phone"]: sms_id for sms_id, m in smsru_outbox.messages.items()}
    assert sent == by_phone
    assert not Message.objects.filter(sent_at__isnull=True).exists()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED


def test_run_worker_once_batches_and_each_message_uses_a_rate_limit_slot(smsru_outbox, monkeypatch):
    acquired = []

    class CountingLimiter:
        @contextlib.contextmanager
        def hold(self, count=1, stop=None):
            acquired.extend([1] * count)
            yield True

    monkeypatch.setattr(pool, "get_rate_limiter", lambda alias, rate: CountingLimiter())
    make_contacts(120)
    outbox.send_campaign(Contact.objects.all(), "Hello")
    summary = outbox.run_worker(once=True, batch_size=200)
    assert summary.sent == 120
    assert len(send_requests(smsru_outbox)) == 2
    assert len(acquired) == 120


def test_a_request_wide_provider_error_counts_once_and_pauses_the_campaign(smsru_outbox):
    smsru_outbox.request_error = 200  # wrong api_id: every request refused
    make_contacts(250)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hello")
    summary = outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.PAUSED
    assert summary["paused_campaigns"] == [campaign.pk]
    assert len(send_requests(smsru_outbox)) <= 3
    # Nobody lost anything: all queued again, no attempt used.
    assert statuses() == {MessageStatus.QUEUED: 250}
    assert not Message.objects.filter(attempts__gt=0).exists()


@pytest.mark.parametrize("failure", ["raises", "too_many", "too_few"])
def test_a_failing_send_many_retries_every_message_of_the_group(
    smsru_outbox, monkeypatch, settings, failure
):
    # Retries are not due before this run ends (longer than any test may run): one attempt each.
    settings.CRM_SMS = {**settings.CRM_SMS, "RETRY_BACKOFF": 3600, "RETRY_BACKOFF_MAX": 3600}
    calls = []

    def send_many(self, batch):
        calls.append(len(batch))
        if failure == "raises":
            raise RuntimeError("boom")
        results = [SendResult(SendStatus.ACCEPTED, provider_message_id="x") for _ in batch]
        return results + results[:1] if failure == "too_many" else results[:-1]

    monkeypatch.setattr(SmsRuBackend, "send_many", send_many)
    make_contacts(150)
    outbox.send_campaign(Contact.objects.all(), "Hello")
    summary = outbox.dispatch_due()
    assert sorted(calls) == [50, 100]
    assert summary["retried"] == 150
    assert statuses() == {MessageStatus.QUEUED: 150}
    assert set(Message.objects.values_list("error_code", flat=True)) == {"exception"}
    assert set(Message.objects.values_list("attempts", flat=True)) == {1}
    assert not Message.objects.exclude(provider_message_id="").exists()


def test_a_provider_taking_one_message_per_request_still_gets_send(locmem_provider, monkeypatch):
    from crm_sms.backends.locmem import LocmemBackend

    def no_send_many(self, batch):
        raise AssertionError("send_many called on a one-at-a-time backend")

    monkeypatch.setattr(LocmemBackend, "send_many", no_send_many)
    make_contacts(30)
    outbox.send_campaign(Contact.objects.all(), "Hello")
    summary = outbox.dispatch_due(batch_size=10, concurrency=4)
    assert summary["sent"] == 30
    assert len(locmem_provider) == 30


def test_a_report_finishing_the_last_message_first_still_completes_the_campaign(
    locmem_provider,
):
    make_contacts(1)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hello")
    claimed = outbox.claim_due_messages(10)
    assert [m.campaign_id for m in claimed] == [campaign.pk]
    message = claimed[0]
    # The provider's delivery report arrives before the worker writes the send result.
    counts = apply_delivery_reports(
        [DeliveryReport(status="delivered", msg_id=message.msg_id)], provider=message.provider
    )
    assert counts["applied"] == 1
    worker = outbox.Outbox(concurrency=2)
    try:
        summary = worker.send_batch(claimed)
    finally:
        worker.close()
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.provider_message_id == message.msg_id
    assert message.sent_at is not None
    assert summary.completed_campaigns == [campaign.pk]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    assert campaign.finished_at is not None
    assert Campaign.objects.filter(status=CampaignStatus.RUNNING).count() == 0
