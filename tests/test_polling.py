"""polling.poll_statuses and ``manage.py sms_status`` against the fake SMS.RU."""

from __future__ import annotations

import json
import socket
from datetime import timedelta
from io import StringIO

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone, translation

from crm_sms.backends import get_backend
from crm_sms.backends.base import OutgoingSMS
from crm_sms.conf import parse_sms_url
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.polling import poll_statuses
from crm_sms.reports import NO_REPORT

S = MessageStatus
pytestmark = pytest.mark.django_db


def sent_messages(n: int, provider: str = "smsru", **fields) -> list[Message]:
    """``n`` messages really sent to the fake (it knows their sms_ids), marked sent."""
    messages = [
        Message.objects.create(phone=f"+7900555{i:04d}", text="Hi", provider=provider)
        for i in range(n)
    ]
    results = get_backend(provider).send_many(
        [OutgoingSMS(m.phone, m.text, "Test", m.msg_id) for m in messages]
    )
    for m, r in zip(messages, results, strict=True):
        m.status = S.SENT
        m.provider_message_id = r.provider_message_id
        m.sent_at = fields.get("sent_at", timezone.now())
        m.save()
    return messages


def test_poll_applies_final_statuses_with_source_poll(smsru_provider):
    messages = sent_messages(4)
    fake = smsru_provider
    fake.set_status(messages[0].provider_message_id, 103)
    fake.set_status(messages[1].provider_message_id, 108)
    fake.set_status(messages[2].provider_message_id, 102)
    counts = poll_statuses()
    assert counts == {
        "providers": 1,
        "checked": 4,
        "changed": 2,
        "unchanged": 2,
        "expired": 0,
        "errors": 0,
    }
    statuses = [Message.objects.get(pk=m.pk).status for m in messages]
    assert statuses == [S.DELIVERED, S.UNDELIVERED, S.SENT, S.SENT]
    assert set(MessageEvent.objects.values_list("source", flat=True)) == {"poll"}
    # A second run asks only about the two still 'sent', and repeats add nothing.
    status_requests_before = sum(p == "/sms/status" for p, _ in fake.requests)
    again = poll_statuses()
    assert (again["checked"], again["changed"]) == (2, 0)
    assert sum(p == "/sms/status" for p, _ in fake.requests) == status_requests_before + 1
    assert MessageEvent.objects.count() == 2


def test_poll_in_batches(smsru_provider):
    messages = sent_messages(7)
    for m in messages:
        smsru_provider.set_status(m.provider_message_id, 103)
    counts = poll_statuses(batch_size=3)
    assert (counts["checked"], counts["changed"]) == (7, 7)
    status_requests = [dict(f)["sms_id"] for p, f in smsru_provider.requests if p == "/sms/status"]
    assert [len(ids.split(",")) for ids in status_requests] == [3, 3, 1]


def test_messages_past_the_report_window_become_undelivered_no_report(smsru_provider):
    old = sent_messages(2, sent_at=timezone.now() - timedelta(hours=25))
    fresh = sent_messages(1)
    with translation.override("en"):  # stored in the active language (the site's, in cron)
        counts = poll_statuses()
    assert (counts["expired"], counts["checked"]) == (2, 1)
    for m in old:
        m.refresh_from_db()
        assert (m.status, m.error_code) == (S.UNDELIVERED, NO_REPORT)
        assert m.error_message == "No delivery report within 24 hours"
        assert m.events.get().source == "poll"
    # The old ones were not asked about.
    asked = ",".join(dict(f)["sms_id"] for p, f in smsru_provider.requests if p == "/sms/status")
    assert old[0].provider_message_id not in asked
    assert fresh[0].provider_message_id in asked
    assert poll_statuses()["expired"] == 0  # said once


def test_late_report_still_corrects_a_no_report_verdict(smsru_provider, client):
    from tests.fixtures_smsru import callback_form, status_entry

    (m,) = sent_messages(1, sent_at=timezone.now() - timedelta(days=2))
    poll_statuses()
    smsru_provider.callback_url = "http://testserver/sms/callback/smsru/smsru-token/"
    form = callback_form(smsru_provider.api_id, [status_entry(m.provider_message_id, 103)])
    from urllib.parse import urlencode

    client.post(
        "/sms/callback/smsru/smsru-token/",
        urlencode(form),
        content_type="application/x-www-form-urlencoded",
    )
    m.refresh_from_db()
    assert m.status == S.DELIVERED


def test_non_pollable_providers_are_left_alone(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"}}
    }
    m = Message.objects.create(
        phone="+79001234212",
        text="x",
        provider="default",
        status=S.SENT,
        sent_at=timezone.now() - timedelta(days=3),
    )
    assert poll_statuses()["providers"] == 0
    m.refresh_from_db()
    assert m.status == S.SENT


def test_unreachable_provider_is_counted_and_others_still_run(settings, smsru_fake):
    good = parse_sms_url(smsru_fake.sms_url())
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed when the block ends: connections are refused
    down = parse_sms_url(f"smsru+http://K@127.0.0.1:{port}/?timeout=0.5")
    settings.CRM_SMS = {"PROVIDERS": {"down": down, "smsru": good}}
    (m,) = sent_messages(1)
    Message.objects.create(
        phone="+79001230000", text="x", provider="down", status=S.SENT, provider_message_id="1"
    )
    smsru_fake.set_status(m.provider_message_id, 103)
    counts = poll_statuses()
    assert (counts["providers"], counts["errors"], counts["changed"]) == (2, 1, 1)


def test_sms_status_command_prints_counts(smsru_provider):
    (m,) = sent_messages(1)
    smsru_provider.set_status(m.provider_message_id, 103)
    out = StringIO()
    call_command("sms_status", "--provider", "smsru", "--batch-size", "10", stdout=out)
    assert "1 message(s) checked, 1 changed" in out.getvalue()
    out = StringIO()
    call_command("sms_status", "--json", stdout=out)
    assert json.loads(out.getvalue())["checked"] == 0


def test_sms_status_command_rejects_bad_input(smsru_provider):
    with pytest.raises(CommandError, match="No provider 'nosuch'"):
        call_command("sms_status", "--provider", "nosuch")
    with pytest.raises(CommandError, match="batch-size"):
        call_command("sms_status", "--batch-size", "0")
