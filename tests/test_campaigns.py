"""send_campaign / preview_campaign and the campaign controls."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from crm_sms import outbox
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    Contact,
    ContactGroup,
    Message,
    MessageStatus,
)
from tests.fixtures_outbox import make_contacts, sandbox_provider_config

pytestmark = pytest.mark.django_db


@pytest.fixture
def mixed_contacts(locmem_provider):
    """3 good contacts, 1 opted out, 1 invalid phone, in one group."""
    group = ContactGroup.objects.create(name="Clients")
    rows = [
        Contact(phone="+79001234201", first_name="Anna", last_name="Ivanova"),
        Contact(phone="+79001234202", first_name="Boris"),
        Contact(phone="+79001234203", first_name=""),
        Contact(phone="+79001234204", first_name="Opted", opted_out=True),
        Contact(phone="12345", first_name="Broken"),
    ]
    Contact.objects.bulk_create(rows)
    group.contacts.add(*Contact.objects.all())
    return Contact.objects.filter(groups=group)


def test_send_campaign_queues_rendered_messages_and_counts_exclusions(mixed_contacts):
    campaign = outbox.send_campaign(mixed_contacts, "Hi, {{ first_name }}!", name="Promo")
    assert campaign.status == CampaignStatus.RUNNING
    assert campaign.started_at is not None
    assert campaign.recipients_count == 3
    assert campaign.excluded == {"opted_out": 1, "invalid": 1, "duplicate": 0}
    texts = dict(campaign.messages.values_list("phone", "text"))
    assert texts == {
        "+79001234201": "Hi, Anna!",
        "+79001234202": "Hi, Boris!",
        "+79001234203": "Hi, !",
    }
    messages = list(campaign.messages.all())
    assert {m.status for m in messages} == {MessageStatus.QUEUED}
    assert all(m.contact_id for m in messages)
    assert len({m.msg_id for m in messages}) == 3
    assert all(len(m.msg_id) == 16 and m.msg_id.isalnum() for m in messages)


def test_preview_uses_the_same_selection(mixed_contacts):
    preview = outbox.preview_campaign(mixed_contacts, "Hi, {{ first_name }}!", sample_size=2)
    assert preview.recipients == 3
    assert preview.excluded == {"opted_out": 1, "invalid": 1, "duplicate": 0}
    assert [s["text"] for s in preview.samples] == ["Hi, Anna!", "Hi, Boris!"]
    assert preview.samples[0]["label"] == "Ivanova Anna"
    assert preview.samples[0]["info"].segments == 1
    assert preview.total_segments == 3
    assert preview.provider == "default"
    assert Campaign.objects.count() == 0 and Message.objects.count() == 0


def test_opted_out_contacts_never_get_a_message(mixed_contacts):
    campaign = outbox.send_campaign(mixed_contacts, "Hello")
    assert not campaign.messages.filter(phone="+79001234204").exists()
    outbox.dispatch_due()
    from crm_sms.backends import locmem

    assert "+79001234204" not in {s.to for s in locmem.outbox}
    assert len(locmem.outbox) == 3


@pytest.mark.parametrize(
    "text, fragment",
    [
        ("Hi {{ nickname }}", "nickname"),
        ("Hi {% if %}", "error"),
        ("", "empty"),
    ],
)
def test_a_bad_template_is_refused_before_anything_is_stored(mixed_contacts, text, fragment):
    with pytest.raises(ValidationError) as info:
        outbox.send_campaign(mixed_contacts, text)
    assert fragment in " ".join(info.value.messages).lower()
    with pytest.raises(ValidationError):
        outbox.preview_campaign(mixed_contacts, text)
    assert Campaign.objects.count() == 0 and Message.objects.count() == 0


def test_a_bad_sender_or_provider_is_refused(megafon_provider):
    make_contacts(2)
    with pytest.raises(ValidationError):
        outbox.send_campaign(Contact.objects.all(), "Hi", sender="Johnny_Viper")
    with pytest.raises(ValidationError, match="nope"):
        outbox.send_campaign(Contact.objects.all(), "Hi", provider="nope")
    assert Campaign.objects.count() == 0


def test_no_recipients_is_an_error_and_stores_nothing(locmem_provider):
    Contact.objects.create(phone="+79001234201", opted_out=True)
    with pytest.raises(ValidationError, match="No recipients"):
        outbox.send_campaign(Contact.objects.all(), "Hi")
    assert Campaign.objects.count() == 0


def test_duplicate_phones_of_another_model_are_sent_once(locmem_provider):
    """Any model works: phone read from ``phone_field``, variables mapped to its fields;
    duplicates and opted-out Contacts' numbers are left out."""
    from django.contrib.auth.models import User

    User.objects.create(username="+79001234201", first_name="A")
    User.objects.create(username="8 900 123-42-01", first_name="B")  # the same number
    User.objects.create(username="+79001234202", first_name="C")
    User.objects.create(username="nonsense", first_name="D")
    Contact.objects.create(phone="+79001234202", opted_out=True)
    campaign = outbox.send_campaign(
        User.objects.all(),
        "Hi {{ name }}",
        phone_field="username",
        variables={"name": "first_name"},
    )
    assert campaign.excluded == {"opted_out": 1, "invalid": 1, "duplicate": 1}
    assert list(campaign.messages.values_list("phone", "text", "contact")) == [
        ("+79001234201", "Hi A", None)
    ]


def test_a_rendered_text_the_provider_refuses_is_left_out(megafon_provider):
    make_contacts(1)
    Contact.objects.create(phone="+79001234299", first_name="x" * 100)
    # 1003 characters for the long name: over MegaFon's 1000.
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi " + "{{ first_name }}" * 10)
    assert campaign.recipients_count == 1
    assert campaign.excluded["invalid"] == 1


def test_segments_are_stored_per_message(locmem_provider):
    Contact.objects.create(phone="+79001234201", first_name="A" * 80, last_name="B" * 80)
    Contact.objects.create(phone="+79001234202", first_name="B")
    campaign = outbox.send_campaign(Contact.objects.all(), "Hello {{ first_name }} {{ last_name }}")
    assert dict(campaign.messages.values_list("phone", "segments")) == {
        "+79001234201": 2,
        "+79001234202": 1,
    }


def test_templates_with_filters_render_through_django(locmem_provider):
    Contact.objects.create(phone="+79001234201", first_name="anna")
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name|capfirst }}")
    assert campaign.messages.get().text == "Hi Anna"


def test_inserts_are_batched(locmem_provider):
    make_contacts(500)
    with CaptureQueriesContext(connection) as queries:
        outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    inserts = [q for q in queries.captured_queries if "INSERT" in q["sql"]]
    # The campaign and a few bulk inserts (SQLite caps parameters per query), never one per row.
    assert len(inserts) < 25
    assert len(queries.captured_queries) < 40


@pytest.mark.slow
def test_a_100k_campaign_is_queued_in_batches(locmem_provider):
    # How long it takes is measured in bench/queue_campaign.py; here: the work is batched, so
    # its cost grows with the rows, not with round trips per row.
    make_contacts(100_000)
    with CaptureQueriesContext(connection) as queries:
        campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}, sale!")
    assert campaign.recipients_count == 100_000
    assert Message.objects.filter(campaign=campaign).count() == 100_000
    assert len(queries.captured_queries) < 2_000  # SQLite caps parameters: ~100 rows a batch
    if connection.vendor == "postgresql":
        # Statistics of the rows this transaction added: after a transactional test emptied
        # the tables, PostgreSQL believes them empty, plans the deferred foreign-key checks of
        # the teardown as scans, and 300,000 of them take many minutes.
        with connection.cursor() as cursor:
            for table in ("crm_sms_contact", "crm_sms_campaign", "crm_sms_message"):
                cursor.execute(f"ANALYZE {table}")
    with CaptureQueriesContext(connection) as queries:
        preview = outbox.preview_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    assert preview.recipients == 100_000
    assert len(queries.captured_queries) <= 10  # counted in SQL, not row by row


def test_scheduled_campaign_waits_then_starts(locmem_provider):
    make_contacts(3)
    when = timezone.now() + timezone.timedelta(hours=1)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi", scheduled_at=when)
    assert campaign.status == CampaignStatus.SCHEDULED
    assert campaign.started_at is None
    outbox.dispatch_due()
    assert campaign.messages.filter(status=MessageStatus.QUEUED).count() == 3
    assert outbox.start_due_campaigns(now=when - timezone.timedelta(seconds=1)) == 0
    assert outbox.start_due_campaigns(now=when + timezone.timedelta(seconds=1)) == 1
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.messages.filter(status=MessageStatus.SENT).count() == 3
    assert campaign.status == CampaignStatus.COMPLETED
    assert campaign.finished_at is not None


def test_campaign_completes_when_nothing_is_left(locmem_provider):
    make_contacts(5)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    summary = outbox.dispatch_due()
    assert summary["sent"] == 5
    assert summary["completed_campaigns"] == [campaign.pk]
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED


def test_pause_and_resume(locmem_provider):
    make_contacts(4)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    assert outbox.pause_campaign(campaign, "waiting for approval")
    assert campaign.pause_reason == "waiting for approval"
    outbox.dispatch_due()
    assert campaign.messages.filter(status=MessageStatus.QUEUED).count() == 4
    assert outbox.resume_campaign(campaign)
    assert campaign.status == CampaignStatus.RUNNING and campaign.pause_reason == ""
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    assert campaign.messages.filter(status=MessageStatus.SENT).count() == 4


def test_cancel_cancels_unsent_messages(locmem_provider):
    make_contacts(4)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    assert outbox.cancel_campaign(campaign) == 4
    assert campaign.status == CampaignStatus.CANCELLED
    outbox.dispatch_due()
    assert campaign.messages.filter(status=MessageStatus.CANCELLED).count() == 4
    assert campaign.messages.first().events.filter(new_status="cancelled").exists()


def test_retry_failed_queues_failed_messages_again(megafon_provider):
    make_contacts(3)
    megafon_provider.configure(codes={"79000000001": 1288})
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    failed = campaign.messages.get(status=MessageStatus.FAILED)
    megafon_provider.configure(codes={})
    assert outbox.retry_failed(campaign) == 1
    assert campaign.status == CampaignStatus.RUNNING
    outbox.dispatch_due()
    failed.refresh_from_db()
    assert failed.status == MessageStatus.SENT
    assert failed.msg_id in megafon_provider.accepted


def test_resend_message(megafon_provider):
    megafon_provider.configure(codes={"79001234212": 1288})
    failed = outbox.send_sms("+79001234212", "Hi", now=True)
    assert failed.status == MessageStatus.FAILED
    megafon_provider.configure(codes={})
    fresh = outbox.resend_message(failed)
    assert fresh.pk == failed.pk and fresh.msg_id == failed.msg_id  # its own row (test_resend)
    sent = outbox.send_now(fresh)
    assert sent.status == MessageStatus.SENT
    again = outbox.resend_message(sent)
    assert again.pk == sent.pk and again.msg_id == sent.msg_id  # accepted: same id
    outbox.dispatch_due()
    again.refresh_from_db()
    assert again.status == MessageStatus.SENT
    assert len([m for m in megafon_provider.accepted if m == sent.msg_id]) == 1
    assert megafon_provider.attempts[sent.msg_id] == 3  # refused, accepted, a dropped repeat


def test_the_provider_error_pauses_after_at_most_three_requests(megafon_provider, settings):
    """A wrong password pauses the campaign with a readable reason after at most PAUSE_AFTER
    requests; the messages stay queued with no attempt used; resuming continues."""
    make_contacts(40)
    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {
        "default": sandbox_provider_config(megafon_provider, password="wrong", read_timeout=0.5)
    }
    settings.CRM_SMS = crm
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    summary = outbox.dispatch_due(concurrency=16)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.PAUSED
    assert campaign.pause_reason
    assert "wrong" not in campaign.pause_reason
    assert summary["paused_campaigns"] == [campaign.pk]
    assert len(megafon_provider.requests) <= 3
    assert campaign.messages.filter(status=MessageStatus.QUEUED).count() == 40
    assert set(campaign.messages.values_list("attempts", flat=True)) == {0}
    # Fixed: resume and everything goes out, once each.
    crm["PROVIDERS"] = {"default": sandbox_provider_config(megafon_provider, read_timeout=0.5)}
    settings.CRM_SMS = crm
    assert outbox.resume_campaign(campaign)
    outbox.dispatch_due(concurrency=16)
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    assert len(megafon_provider.accepted) == 40
    assert max(megafon_provider.attempts.values()) <= 2
