"""The delivery-report endpoint: authentication, dispatch, and the answers providers act on.

Most tests use ``JSONReportBackend`` below, a minimal provider with callbacks, so the view is
tested on its own; the MegaFon round trips at the end use the real backend and the sandbox.
"""

from __future__ import annotations

import json
import logging

import pytest
from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse
from django.test import Client
from django.urls import reverse

from crm_sms.backends import get_backend
from crm_sms.backends.base import (
    BaseBackend,
    DeliveryReport,
    OutgoingSMS,
    SendResult,
    SendStatus,
)
from crm_sms.exceptions import CallbackError, CallbackForbidden
from crm_sms.models import Message, MessageEvent, MessageStatus

S = MessageStatus
TOKEN = "s3cret-token"


class JSONReportBackend(BaseBackend):
    """A provider posting ``{"reports": [{"msg_id", "status"}]}``, signed with ``X-Sig: ok``."""

    supports_callbacks = True

    def send(self, sms: OutgoingSMS) -> SendResult:
        return SendResult(SendStatus.ACCEPTED, provider_message_id=sms.msg_id)

    def parse_callback(self, request: HttpRequest) -> list[DeliveryReport]:
        if request.headers.get("X-Sig", "ok") != "ok":
            raise CallbackForbidden("bad signature")
        try:
            data = json.loads(request.body)
            return [
                DeliveryReport(item["status"], msg_id=item["msg_id"], raw=item)
                for item in data["reports"]
            ]
        except (ValueError, KeyError, TypeError) as exc:
            raise CallbackError(f"not a report: {exc}") from exc

    def callback_response(self, reports):
        return HttpResponse("ACK", content_type="text/plain")


class NoCallbacksBackend(JSONReportBackend):
    supports_callbacks = False


@pytest.fixture
def providers(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {"BACKEND": "tests.test_webhooks.JSONReportBackend"},
            "quiet": {"BACKEND": "tests.test_webhooks.NoCallbacksBackend"},
        },
        "PUBLIC_URL": "https://crm.example.com/",
        "CALLBACK_TOKEN": [TOKEN, "old-token"],
    }
    return settings


def url(provider="default", token=TOKEN) -> str:
    return reverse("crm_sms:callback", kwargs={"provider": provider, "token": token})


def post(client, body, provider="default", token=TOKEN, **headers):
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return client.post(url(provider, token), body, content_type="application/json", headers=headers)


def report_body(*pairs):
    return {"reports": [{"msg_id": m, "status": s} for m, s in pairs]}


@pytest.fixture
def sent_message(db):
    return Message.objects.create(
        phone="+79001234212", text="Hi", provider="default", status=S.SENT
    )


@pytest.fixture
def csrf_client():
    # The real site enforces CSRF; providers post without a token.
    return Client(enforce_csrf_checks=True)


def test_report_delivers_message_without_csrf_token(providers, sent_message, csrf_client):
    response = post(csrf_client, report_body((sent_message.msg_id, "delivered")))
    assert response.status_code == 200
    assert response.content == b"ACK"
    sent_message.refresh_from_db()
    assert sent_message.status == S.DELIVERED
    assert sent_message.events.get().source == "callback"


def test_wrong_token_is_404_and_changes_nothing(providers, sent_message, client):
    response = post(client, report_body((sent_message.msg_id, "delivered")), token="guess")
    assert response.status_code == 404
    sent_message.refresh_from_db()
    assert sent_message.status == S.SENT


@pytest.mark.parametrize("configured", [["new-token", "old-token"], "new-token, old-token"])
def test_token_rotation_accepts_every_listed_token(settings, sent_message, client, configured):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "tests.test_webhooks.JSONReportBackend"}},
        "CALLBACK_TOKEN": configured,
    }
    for token in ("new-token", "old-token"):
        assert post(client, report_body(), token=token).status_code == 200
    assert post(client, report_body(), token="new-token, old-token").status_code == 404


def test_no_token_configured_refuses_everything(settings, sent_message, client):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "tests.test_webhooks.JSONReportBackend"}},
        "CALLBACK_TOKEN": None,
    }
    assert post(client, report_body(), token="None").status_code == 404
    assert post(client, report_body(), token="x").status_code == 404


@pytest.mark.parametrize("method", ["get", "put", "delete", "patch"])
def test_other_methods_are_405(providers, db, client, method):
    response = getattr(client, method)(url())
    assert response.status_code == 405
    assert response["Allow"] == "POST"


def test_malformed_body_is_400(providers, sent_message, client):
    response = post(client, b"{not json")
    assert response.status_code == 400
    response = post(client, {"reports": [{"msg_id": sent_message.msg_id}]})  # no status
    assert response.status_code == 400
    sent_message.refresh_from_db()
    assert sent_message.status == S.SENT


def test_forged_signature_is_403(providers, sent_message, client):
    response = post(client, report_body((sent_message.msg_id, "delivered")), X_Sig="forged")
    assert response.status_code == 403
    sent_message.refresh_from_db()
    assert sent_message.status == S.SENT


def test_unknown_message_is_200_and_logged(providers, db, client, caplog):
    with caplog.at_level(logging.WARNING, logger="crm_sms"):
        response = post(client, report_body(("unknownmsgid0001", "delivered")))
    assert response.status_code == 200
    assert "unknownmsgid0001" in caplog.text
    assert not MessageEvent.objects.exists()


def test_unknown_provider_and_provider_without_callbacks_are_404(providers, db, client):
    assert post(client, report_body(), provider="nosuch").status_code == 404
    assert post(client, report_body(), provider="quiet").status_code == 404


def test_error_of_ours_is_500_so_the_provider_retries(
    providers, sent_message, client, monkeypatch, caplog
):
    def broken(*args, **kwargs):
        raise DatabaseError("database is down")

    monkeypatch.setattr("crm_sms.reports.apply_delivery_reports", broken)
    response = post(client, report_body((sent_message.msg_id, "delivered")))
    assert response.status_code == 500
    assert "database is down" in caplog.text


def test_backend_bug_while_parsing_is_500(providers, db, client, monkeypatch):
    def boom(self, request):
        raise RuntimeError("bug")

    monkeypatch.setattr(JSONReportBackend, "parse_callback", boom)
    assert post(client, report_body()).status_code == 500


def test_too_large_body_is_413(providers, db, client, settings):
    # The endpoint's own limit, CALLBACK_MAX_BYTES (tests/test_callback_safety.py has more).
    settings.CRM_SMS = {**settings.CRM_SMS, "CALLBACK_MAX_BYTES": 100}
    response = post(client, report_body(*[("x" * 16, "delivered")] * 20))
    assert response.status_code == 413


def test_repeated_and_out_of_order_reports_through_the_endpoint(providers, sent_message, client):
    m = sent_message.msg_id
    assert post(client, report_body((m, "delivered"))).status_code == 200
    assert post(client, report_body((m, "delivered"))).status_code == 200
    assert post(client, report_body((m, "sent"))).status_code == 200
    assert post(client, report_body((m, "undelivered"))).status_code == 200
    sent_message.refresh_from_db()
    assert sent_message.status == S.DELIVERED
    assert sent_message.events.count() == 1


def test_callback_url_is_built_from_public_url_with_the_first_token(providers):
    backend = get_backend("default")
    assert backend.callback_url() == f"https://crm.example.com/sms/callback/default/{TOKEN}/"
    assert get_backend("quiet").callback_url() is None


def test_no_callback_url_without_public_url(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "tests.test_webhooks.JSONReportBackend"}},
        "CALLBACK_TOKEN": TOKEN,
    }
    assert get_backend("default").callback_url() is None


# --- MegaFon end to end: the sandbox posts its reports to a live server ---------------------


@pytest.fixture
def megafon_live(live_server, transactional_db, megafon_provider, settings):
    """The MegaFon sandbox as provider "default", PUBLIC_URL pointing at the live server."""
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PUBLIC_URL": live_server.url,
        "CALLBACK_TOKEN": f"{TOKEN},older-token",
    }
    return megafon_provider


def send_via_megafon(message: Message, *, write_result: bool = True):
    """What the outbox does for one message: send with the callback URL, write the result back
    only where the row is still 'sending'."""
    backend = get_backend("default")
    url = backend.callback_url()
    assert url and url.endswith(f"/sms/callback/default/{TOKEN}/")
    result = backend.send(
        OutgoingSMS(message.phone, message.text, "Test", message.msg_id, callback_url=url)
    )
    assert result.status is SendStatus.ACCEPTED, result
    if write_result:
        Message.objects.filter(pk=message.pk, status=S.SENDING).update(
            status=S.SENT, provider_message_id=result.provider_message_id
        )
    return result


def new_message(i: int = 0) -> Message:
    return Message.objects.create(
        phone=f"+7900123{i:04d}", text="Hello", provider="default", status=S.SENDING
    )


def wait_for_status(message: Message, status: str, timeout: float = 10) -> Message:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        message.refresh_from_db()
        if message.status == status:
            break
        time.sleep(0.05)
    return message


def test_megafon_sandbox_report_turns_message_delivered(megafon_live):
    megafon_live.configure(callback_delay=0.2)
    message = new_message()
    send_via_megafon(message)
    assert megafon_live.wait_for_callbacks(1)
    message = wait_for_status(message, S.DELIVERED)
    assert message.status == S.DELIVERED
    assert message.delivered_at is not None
    assert megafon_live.callbacks_sent[0]["status"] == 200
    event = message.events.get()
    assert (event.source, event.old_status, event.new_status) == ("callback", "sent", "delivered")
    assert event.payload["msg_id"] == message.msg_id


def test_megafon_failed_delivery_turns_message_undelivered(megafon_live):
    megafon_live.configure(deliver_rate=0.0)
    message = new_message()
    send_via_megafon(message)
    assert megafon_live.wait_for_callbacks(1)
    message = wait_for_status(message, S.UNDELIVERED)
    assert message.status == S.UNDELIVERED
    assert message.error_code and message.error_message


def test_megafon_report_before_the_send_result_is_kept(megafon_live):
    # The sandbox reports at once; the "worker" writes its result only after the report.
    message = new_message()
    send_via_megafon(message, write_result=False)
    assert megafon_live.wait_for_callbacks(1)
    message = wait_for_status(message, S.DELIVERED)
    assert message.status == S.DELIVERED
    # The outbox's write-back finds the row no longer 'sending' and leaves the status alone.
    assert Message.objects.filter(pk=message.pk, status=S.SENDING).update(status=S.SENT) == 0
    assert list(message.events.values_list("old_status", "new_status")) == [
        ("sending", "delivered")
    ]


def test_megafon_forged_repeated_unknown_malformed_reports_change_nothing(megafon_live):
    import requests

    megafon_live.configure(callbacks=False)
    delivered, untouched = new_message(1), new_message(2)
    send_via_megafon(delivered)
    send_via_megafon(untouched)
    base = get_backend("default").callback_url()
    report = megafon_live.delivery_report(megafon_live.accepted[delivered.msg_id], True)
    session = requests.Session()

    assert session.post(base, json=report).status_code == 200
    assert session.post(base, json=report).status_code == 200  # repeated
    late_failure = megafon_live.delivery_report(megafon_live.accepted[delivered.msg_id], False)
    assert session.post(base, json=late_failure).status_code == 200  # out of order
    forged = megafon_live.delivery_report(megafon_live.accepted[untouched.msg_id], True)
    assert session.post(base.replace(TOKEN, "guessed-token"), json=forged).status_code == 404
    assert session.post(base.replace("/default/", "/other/"), json=forged).status_code == 404
    assert session.get(base).status_code == 405
    assert session.post(base, data=b"{broken", timeout=5).status_code == 400
    assert session.post(base, json={"status": "delivered"}).status_code == 400  # no msg_id
    unknown = {**forged, "msg_id": "NoSuchMessage123"}
    assert session.post(base, json=unknown).status_code == 200
    # The older token still works (rotation).
    older = base.replace(TOKEN, "older-token")
    assert session.post(older, json=report).status_code == 200

    delivered.refresh_from_db()
    untouched.refresh_from_db()
    assert delivered.status == S.DELIVERED
    assert delivered.events.count() == 1
    assert untouched.status == S.SENT
    assert not untouched.events.exists()


def test_message_sent_by_the_outbox_becomes_delivered_untouched(megafon_live):
    """The whole path: send_sms queues, the worker sends through the sandbox with the callback
    URL, the sandbox posts its report to the live site, and the message ends delivered."""
    from crm_sms.outbox import dispatch_due, send_sms

    megafon_live.configure(callback_delay=0.05)
    messages = [send_sms(f"+7900765432{i}", f"Order {i} is ready") for i in range(5)]
    summary = dispatch_due()
    assert summary["sent"] == 5
    assert megafon_live.wait_for_callbacks(5)
    for message in messages:
        assert wait_for_status(message, S.DELIVERED).status == S.DELIVERED
        assert message.provider_message_id
        # One callback event, the last one, whether it came before the send result was written
        # (then the outbox adds no event of its own) or after.
        events = list(message.events.values_list("source", "new_status"))
        assert events.count(("callback", "delivered")) == 1
        assert events[-1] == ("callback", "delivered")
    callback_urls = {r["url"] for r in megafon_live.callbacks_sent}
    assert callback_urls == {get_backend("default").callback_url()}


# --- what every provider's callbacks must do, run once per provider -----------------------


class MegafonCase:
    alias = "mf"
    url = "megafon+http://test:test@127.0.0.1:1/?sender=Test"
    content_type = "application/json"

    def body(self, message: Message, delivered: bool = True) -> bytes:
        stat = "DELIVRD" if delivered else "UNDELIV"
        return json.dumps(
            {
                "msg_id": message.msg_id,
                "receipted_message_id": message.provider_message_id,
                "status": "delivered" if delivered else "delivery_failed",
                "short_message": f"id:{message.provider_message_id} sub:001 dlvrd:001 "
                f"submit date:2611280310 done date:2611280311 stat:{stat} err:000",
            }
        ).encode()

    garbage = b"<xml>not a report</xml>"


class SmsRuCase:
    alias = "sr"
    url = "smsru+http://CASE-API-ID@127.0.0.1:1/"
    content_type = "application/x-www-form-urlencoded"

    def body(self, message: Message, delivered: bool = True) -> bytes:
        from urllib.parse import urlencode

        from tests.fixtures_smsru import callback_form, status_entry

        entry = status_entry(message.provider_message_id, 103 if delivered else 106)
        return urlencode(callback_form("CASE-API-ID", [entry])).encode()

    garbage = b"data%5B%5D=sms_status%0Ax%0Anot-a-code&hash=" + b"0" * 64


@pytest.fixture(params=[MegafonCase, SmsRuCase], ids=["megafon", "smsru"])
def case(request, settings, db):
    from crm_sms.conf import parse_sms_url

    case = request.param()
    settings.CRM_SMS = {
        "PROVIDERS": {case.alias: parse_sms_url(case.url)},
        "DEFAULT_PROVIDER": case.alias,
        "CALLBACK_TOKEN": TOKEN,
    }
    return case


def case_message(case, i: int = 0) -> Message:
    return Message.objects.create(
        phone=f"+7900111{i:04d}",
        text="Hi",
        provider=case.alias,
        status=S.SENT,
        provider_message_id=f"PID-{i}",
    )


def case_post(client, case, body, token=TOKEN):
    return client.post(url(case.alias, token), body, content_type=case.content_type)


def test_contract_report_applied_and_answered_as_the_provider_expects(case, client):
    message = case_message(case)
    response = case_post(client, case, case.body(message))
    expected = get_backend(case.alias).callback_response([])
    assert (response.status_code, response.content) == (200, expected.content)
    message.refresh_from_db()
    assert message.status == S.DELIVERED


def test_contract_repeats_and_late_contrary_reports_change_nothing(case, client):
    message = case_message(case)
    for delivered in (True, True, False):
        assert case_post(client, case, case.body(message, delivered)).status_code == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.events.count() == 1


def test_contract_wrong_token_malformed_and_other_methods(case, client):
    message = case_message(case)
    assert case_post(client, case, case.body(message), token="nope").status_code == 404
    assert case_post(client, case, case.garbage).status_code in (400, 403)
    assert client.get(url(case.alias)).status_code == 405
    message.refresh_from_db()
    assert message.status == S.SENT


def test_contract_unknown_message_is_200(case, client):
    ghost = Message(msg_id="GhostMessage0001", provider_message_id="PID-ghost")
    response = case_post(client, case, case.body(ghost))
    assert response.status_code == 200
    assert not MessageEvent.objects.exists()
