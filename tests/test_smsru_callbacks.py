"""SMS.RU's signed callbacks through the endpoint, and a live round trip with the fake SMS.RU."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
import requests
from django.urls import reverse

from crm_sms.backends import get_backend
from crm_sms.backends.base import OutgoingSMS, SendStatus
from crm_sms.models import Message, MessageEvent, MessageStatus
from tests.fixtures_smsru import API_ID, callback_form, sign, status_entry

S = MessageStatus
URL = reverse("crm_sms:callback", kwargs={"provider": "smsru", "token": "smsru-token"})


@pytest.fixture
def message(db, smsru_provider):
    return Message.objects.create(
        phone="+79001234212",
        text="Hi",
        provider="smsru",
        status=S.SENT,
        provider_message_id="000123-4567890",
    )


def post(client, fields):
    return client.post(
        URL, fields_to_body(fields), content_type="application/x-www-form-urlencoded"
    )


def fields_to_body(fields) -> str:
    from urllib.parse import urlencode

    return urlencode(fields)


def test_signed_delivered_report_is_applied_and_answered_100(client, message):
    when = 1764320000
    response = post(
        client, callback_form(API_ID, [status_entry(message.provider_message_id, 103, when)])
    )
    assert response.status_code == 200
    assert response.content == b"100"
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.delivered_at == datetime.fromtimestamp(when, UTC)
    event = message.events.get()
    assert event.source == "callback"
    assert event.payload["entry"].startswith("sms_status\n000123-4567890\n103")


def test_undelivered_code_sets_error(client, message):
    post(client, callback_form(API_ID, [status_entry(message.provider_message_id, 106)]))
    message.refresh_from_db()
    assert (message.status, message.error_code) == (S.UNDELIVERED, "106")
    assert message.error_message


def test_forged_hash_is_403_and_changes_nothing(client, message):
    entries = [status_entry(message.provider_message_id, 103)]
    assert post(client, callback_form(API_ID, entries, hash_="0" * 64)).status_code == 403
    assert post(client, callback_form("SOMEONE-ELSES-API-ID", entries)).status_code == 403
    assert post(client, [("data[]", entries[0])]).status_code == 403  # no hash at all
    # A valid hash for other entries does not cover these.
    forged = [("data[]", entries[0]), ("hash", sign(API_ID, [status_entry("x", 103)]))]
    assert post(client, forged).status_code == 403
    message.refresh_from_db()
    assert message.status == S.SENT
    assert not MessageEvent.objects.exists()


def test_wrong_url_token_is_404(client, message):
    url = reverse("crm_sms:callback", kwargs={"provider": "smsru", "token": "guess"})
    form = callback_form(API_ID, [status_entry(message.provider_message_id, 103)])
    response = client.post(
        url, fields_to_body(form), content_type="application/x-www-form-urlencoded"
    )
    assert response.status_code == 404


@pytest.mark.parametrize(
    "fields",
    [
        [("hash", "abc")],  # no data[] entries
        callback_form(API_ID, ["sms_status\n000123-4567890\nnot-a-code\n1"]),
        callback_form(API_ID, ["sms_status\n\n103\n1"]),
    ],
)
def test_malformed_callbacks_are_400(client, message, fields):
    assert post(client, fields).status_code == 400
    message.refresh_from_db()
    assert message.status == S.SENT


def test_several_entries_in_one_post_and_indexed_keys(client, message):
    entries = [status_entry(message.provider_message_id, c) for c in (101, 102, 103)]
    fields = [(f"data[{i}]", e) for i, e in enumerate(entries)] + [("hash", sign(API_ID, entries))]
    assert post(client, fields).content == b"100"
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert list(message.events.values_list("old_status", "new_status")) == [("sent", "delivered")]


def test_repeated_and_out_of_order_reports_change_nothing(client, message):
    pid = message.provider_message_id
    for code in (103, 103, 102, 106):
        assert post(client, callback_form(API_ID, [status_entry(pid, code)])).status_code == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.events.count() == 1


def test_unknown_sms_id_and_other_notifications_are_200(client, message):
    entries = [status_entry("999999-1", 103), "callback_check\n1764320000"]
    response = post(client, callback_form(API_ID, entries))
    assert (response.status_code, response.content) == (200, b"100")
    assert not MessageEvent.objects.exists()


def send_through_backend(messages: list[Message]) -> None:
    """What the outbox does for a batch: send_many, then write the results back."""
    backend = get_backend("smsru")
    results = backend.send_many(
        [OutgoingSMS(m.phone, m.text, m.sender or "Test", m.msg_id) for m in messages]
    )
    for m, result in zip(messages, results, strict=True):
        assert result.status is SendStatus.ACCEPTED, result
        Message.objects.filter(pk=m.pk, status=S.SENDING).update(
            status=S.SENT, provider_message_id=result.provider_message_id
        )


def test_live_round_trip_fake_smsru_posts_signed_callbacks(
    live_server, transactional_db, smsru_provider
):
    smsru_provider.callback_url = live_server.url + URL
    smsru_provider.auto_callbacks = True
    # SMS.RU's reports name only its own sms_id: one that comes before the send result is
    # written cannot be matched (polling catches up), so the fake waits as the real one does.
    smsru_provider.callback_delay = 0.3
    messages = [
        Message.objects.create(
            phone=f"+7900123420{i}", text="Hi", provider="smsru", status=S.SENDING
        )
        for i in range(4)
    ]
    send_through_backend(messages)
    # Forged over real HTTP first: a bad hash, another account's api_id, a wrong URL token.
    victim = Message.objects.get(pk=messages[3].pk)
    entries = [status_entry(victim.provider_message_id, 106)]
    assert smsru_provider.post_callback(entries, hash_="0" * 64).status_code == 403
    form = callback_form("OTHER-ACCOUNT", entries)
    assert requests.post(smsru_provider.callback_url, data=form, timeout=5).status_code == 403
    wrong_token = smsru_provider.callback_url.replace("smsru-token", "guess")
    assert smsru_provider.post_callback(entries, url=wrong_token).status_code == 404
    smsru_provider.wait_callbacks()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if Message.objects.filter(status=S.DELIVERED).count() == 4:
            break
        time.sleep(0.05)
    assert Message.objects.filter(status=S.DELIVERED).count() == 4
    answers = smsru_provider.callback_answers  # the forged two, then 102s and 103s (a POST each)
    assert sorted(code for code, _ in answers) == [200, 200, 403, 404]
    assert [body for code, body in answers if code == 200] == ["100", "100"]
    # 102 ("sent") repeats what the message already is: only the 103s made events.
    assert MessageEvent.objects.filter(source="callback", new_status="delivered").count() == 4
    assert MessageEvent.objects.count() == 4


def test_outbox_sends_through_fake_smsru_and_reports_deliver(
    live_server, transactional_db, smsru_provider
):
    from crm_sms.outbox import dispatch_due, send_sms

    smsru_provider.callback_url = live_server.url + URL
    smsru_provider.auto_callbacks = True
    smsru_provider.callback_delay = 0.3
    messages = [send_sms(f"+7900765430{i}", "Hi") for i in range(3)]
    assert dispatch_due()["sent"] == 3
    smsru_provider.wait_callbacks()
    for message in messages:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            message.refresh_from_db()
            if message.status == S.DELIVERED:
                break
            time.sleep(0.05)
        assert message.status == S.DELIVERED
