"""Never twice after an ambiguous failure (issue 11, point 2), on loopback HTTP.

The request may have reached the provider and its answer was lost (a read timeout, the
connection dropped after the request was read). By the backend's ``retry_safety``:

- NONE (SMS.RU): the message becomes ``uncertain`` and is never sent again by the worker; only
  an operator's confirmed resend queues it (the server counts the requests: exactly one);
- LOOKUP: the next attempt asks the provider first (found: sent, nothing sent again; not found:
  sent; cannot say: asked again later, never sent blindly);
- DEDUPLICATED (MegaFon): retried with the same msg_id, the provider answers 20102.

Failures before anything was sent (connection refused) are retried as always.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from datetime import timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl

import pytest
from django.utils import timezone

from crm_sms import outbox
from crm_sms.backends.base import (
    DeliveryReport,
    DeliveryStatus,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from crm_sms.backends.http import Answer, HTTPBackend, HTTPRequest
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import InvalidTransition
from crm_sms.models import Campaign, CampaignStatus, Contact, EventSource, Message, MessageStatus
from crm_sms.outbox.results import UNCERTAIN_DESCRIPTION
from crm_sms.reports import apply_delivery_reports
from crm_sms.transitions import MessageMove, move_messages
from tests.fixtures_smsru import FakeSmsRu

pytestmark = pytest.mark.django_db

M = MessageStatus
PHONE = "+79001234212"


# --- a provider that takes the request and then loses the answer -----------------------------


class SwallowingSmsRu(FakeSmsRu):
    """SMS.RU's fake, which can take a send (the SMS is accepted: ``messages``) and then lose
    the answer: ``swallow = "timeout"`` holds the connection past the client's read timeout,
    ``"drop"`` closes it without a word. ``sends`` counts the /sms/send requests."""

    def __init__(self) -> None:
        self.swallow: str | None = None
        self.hold = 1.5
        self.sends = 0
        super().__init__()

    def _handler(self):
        base = super()._handler()
        fake = self

        class Handler(base):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/sms/send"):
                    with fake._lock:
                        fake.sends += 1
                    if fake.swallow:
                        fields = parse_qsl(body.decode(), keep_blank_values=True)
                        fake._send(dict(fields), fields)  # taken: the SMS goes out
                        self.close_connection = True
                        if fake.swallow == "timeout":
                            time.sleep(fake.hold)
                        self.connection.shutdown(socket.SHUT_RDWR)
                        return
                self._handle(body)

        return Handler


@pytest.fixture
def smsru(settings):
    fake = SwallowingSmsRu().start()
    config = parse_sms_url(fake.sms_url() + "&read_timeout=0.4&connect_timeout=2")
    settings.CRM_SMS = {
        "PROVIDERS": {"smsru": config},
        "DEFAULT_PROVIDER": "smsru",
        "RETRY_BACKOFF": 0.01,
        "RETRY_BACKOFF_MAX": 0.05,
        "MAX_ATTEMPTS": 5,
        "IDLE_SLEEP": 0.05,
    }
    yield fake
    fake.stop()


def make_due() -> None:
    """Whatever waits for a retry is due now (backoffs are not what these tests are about)."""
    Message.objects.filter(status=M.QUEUED).update(
        next_attempt_at=timezone.now() - timedelta(seconds=1)
    )


def dispatch_until_quiet(times: int = 3) -> None:
    for _ in range(times):
        make_due()
        outbox.dispatch_due()


# --- NONE: SMS.RU --------------------------------------------------------------------------


@pytest.mark.parametrize("lost", ["timeout", "drop"])
def test_smsru_lost_answer_makes_the_message_uncertain_and_it_is_sent_once(smsru, lost):
    """SMS.RU's known double send: it took the request, the answer was lost; the worker used
    to send it again. Now it is ``uncertain`` and the server sees exactly one send."""
    smsru.swallow = lost
    message = outbox.send_sms(PHONE, "Hi")
    outbox.dispatch_due()
    message.refresh_from_db()
    assert message.status == M.UNCERTAIN, (message.status, message.error_code)
    assert message.maybe_sent and message.attempts == 1
    event = message.events.get(new_status=M.UNCERTAIN)
    assert (event.old_status, event.source) == (M.SENDING, EventSource.SEND)
    assert event.description == str(UNCERTAIN_DESCRIPTION)
    smsru.swallow = None  # SMS.RU answers again: still nothing is sent
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.UNCERTAIN
    assert smsru.sends == 1
    assert len(smsru.messages) == 1  # the subscriber got one SMS


def test_connection_refused_is_retried_not_uncertain(settings):
    """Nothing reached the provider: safe to retry, whatever the backend."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed when the block ends: nobody listens there
    settings.CRM_SMS = {
        "PROVIDERS": {
            "smsru": parse_sms_url(f"smsru+http://KEY@127.0.0.1:{port}/?connect_timeout=1")
        },
        "DEFAULT_PROVIDER": "smsru",
    }
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert message.status == M.QUEUED
    assert not message.maybe_sent
    assert (message.attempts, message.error_code) == (1, "network")


def test_an_uncertain_message_is_never_claimed(smsru):
    smsru.swallow = "drop"
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert message.status == M.UNCERTAIN
    assert outbox.claim_due_messages(10) == []
    with pytest.raises(InvalidTransition):
        move_messages([MessageMove(message, M.QUEUED, EventSource.RETRY)])


def test_a_campaign_with_only_final_and_uncertain_messages_completes(smsru):
    for i in range(3):
        Contact.objects.create(phone=f"+7900123421{i}", first_name=f"N{i}")
    smsru.swallow = "drop"  # one request for the three numbers: all three uncertain
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert set(campaign.messages.values_list("status", flat=True)) == {M.UNCERTAIN}
    assert campaign.status == CampaignStatus.COMPLETED
    assert smsru.sends == 1


@pytest.mark.parametrize("reported", [M.SENT, M.DELIVERED, M.UNDELIVERED, M.FAILED])
def test_a_report_settles_an_uncertain_message(smsru, reported):
    smsru.swallow = "drop"
    message = outbox.send_sms(PHONE, "Hi", now=True)
    counts = apply_delivery_reports(
        [DeliveryReport(DeliveryStatus(reported), msg_id=message.msg_id, provider_message_id="9")],
        provider="smsru",
    )
    assert counts["applied"] == 1
    message.refresh_from_db()
    assert message.status == reported
    assert not message.maybe_sent
    assert message.provider_message_id == "9"


def test_cancelling_the_campaign_cancels_its_uncertain_messages(smsru):
    Contact.objects.create(phone=PHONE)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi", scheduled_at=None)
    uncertain = campaign.messages.get()
    move_messages([MessageMove(uncertain, M.SENDING, EventSource.SEND)])
    move_messages([MessageMove(uncertain, M.UNCERTAIN, EventSource.SEND)])
    waiting = Message.objects.create(
        campaign=campaign, phone="+79001234213", text="Hi", provider="smsru"
    )
    outbox.cancel_campaign(campaign)
    assert set(campaign.messages.values_list("status", flat=True)) == {M.CANCELLED}
    assert waiting.events.get().new_status == M.CANCELLED


def test_a_confirmed_resend_sends_it_once_more(smsru):
    """Only the operator's explicit confirmation queues an uncertain message again."""
    smsru.swallow = "timeout"
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert message.status == M.UNCERTAIN
    smsru.swallow = None
    with pytest.raises(Exception, match="explicit confirmation") as refused:
        outbox.resend_message(message)
    assert refused.value.code == "needs_confirmation"
    outbox.resend_message(message, confirmed=True, by="operator")
    assert message.status == M.QUEUED and message.msg_id
    event = message.events.get(new_status=M.QUEUED)
    assert "may get it twice" in event.description and "operator" in event.description
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT
    assert smsru.sends == 2  # the first (taken, answer lost) and the confirmed one


# --- DEDUPLICATED: MegaFon -----------------------------------------------------------------


def test_megafon_retries_after_a_lost_answer_with_the_same_msg_id(megafon_provider):
    """The sandbox takes the message and answers after the client gave up; the retry carries
    the same msg_id and MegaFon answers 20102: sent, one SMS."""
    megafon_provider.configure(timeout_rate=1.0, timeout_s=1.0)
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert (message.status, message.maybe_sent) == (M.QUEUED, True)
    time.sleep(0.7)  # the sandbox finishes taking it
    megafon_provider.configure(timeout_rate=0.0)
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT and not message.maybe_sent
    assert megafon_provider.attempts[message.msg_id] == 2
    assert list(megafon_provider.accepted) == [message.msg_id]
    assert message.events.filter(description__contains="duplicate msg_id").exists()


# --- LOOKUP: a provider that can be asked --------------------------------------------------


class AskableProvider:
    """A loopback provider with ``POST /send`` (JSON ``{"id", "to", "text"}``) and ``POST
    /lookup`` (``{"id"}`` -> ``{"found": provider id or null}``). ``swallow_sends``: take a
    send, then drop the connection; ``lookup_status``: answer lookups with this HTTP status."""

    def __init__(self) -> None:
        self.accepted: dict[str, str] = {}  # our id -> the provider's
        self.sends = 0
        self.lookups = 0
        self.swallow_sends = False
        self.lookup_status = 200
        self._lock = threading.Lock()
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def _handler(self):
        provider = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _answer(self, status: int, payload: Any) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def do_POST(self):
                data = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with provider._lock:
                    if self.path == "/lookup":
                        provider.lookups += 1
                        found = provider.accepted.get(data["id"])
                        return self._answer(provider.lookup_status, {"found": found})
                    provider.sends += 1
                    provider_id = provider.accepted.setdefault(data["id"], f"P{provider.sends}")
                if provider.swallow_sends:
                    self.close_connection = True
                    self.connection.shutdown(socket.SHUT_RDWR)
                    return
                self._answer(200, {"id": provider_id})

        return Handler


class AskableBackend(HTTPBackend):
    """A backend for ``AskableProvider``: it cannot drop repeats, but it can be asked."""

    display_name = "Askable"
    retry_safety = RetrySafety.LOOKUP

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        sms = messages[0]
        return HTTPRequest(
            self.base_url + "/send", json={"id": sms.msg_id, "to": sms.to, "text": sms.text}
        )

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult]:
        return [SendResult(SendStatus.ACCEPTED, provider_message_id=answer.data["id"])]

    def lookup_sent(self, sms: OutgoingSMS) -> SendResult | None:
        answer = self.post(HTTPRequest(self.base_url + "/lookup", json={"id": sms.msg_id}))
        if answer.http_status != 200:
            raise self.unexpected_answer(answer)
        found = answer.data["found"]
        return SendResult(SendStatus.ACCEPTED, provider_message_id=found) if found else None


@pytest.fixture
def askable(settings):
    provider = AskableProvider()
    settings.CRM_SMS = {
        "PROVIDERS": {
            "askable": {
                "BACKEND": "tests.test_uncertain.AskableBackend",
                "OPTIONS": {"base_url": provider.base_url, "read_timeout": 0.5},
            }
        },
        "DEFAULT_PROVIDER": "askable",
        "RETRY_BACKOFF": 0.01,
        "RETRY_BACKOFF_MAX": 0.05,
    }
    yield provider
    provider.server.shutdown()
    provider.server.server_close()


def test_lookup_finds_the_message_and_nothing_is_sent_again(askable):
    askable.swallow_sends = True
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert (message.status, message.maybe_sent, askable.sends) == (M.QUEUED, True, 1)
    askable.swallow_sends = False
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT and not message.maybe_sent
    assert message.provider_message_id == "P1"
    assert (askable.sends, askable.lookups) == (1, 1)
    assert message.events.filter(description__startswith="Found at the provider").exists()


def test_lookup_not_found_sends_it(askable):
    askable.swallow_sends = True
    message = outbox.send_sms(PHONE, "Hi", now=True)
    askable.accepted.clear()  # the provider lost it after all
    askable.swallow_sends = False
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT
    assert (askable.sends, askable.lookups) == (2, 1)
    assert message.events.filter(description__startswith="Not found at the provider").exists()


def test_lookup_that_cannot_answer_never_sends_blindly(askable):
    askable.swallow_sends = True
    message = outbox.send_sms(PHONE, "Hi", now=True)
    askable.swallow_sends = False
    askable.lookup_status = 503
    dispatch_until_quiet(2)
    message.refresh_from_db()
    assert (message.status, message.maybe_sent, message.error_code) == (
        M.QUEUED,
        True,
        "lookup_failed",
    )
    assert (askable.sends, askable.lookups) == (1, 2)
    askable.lookup_status = 200
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT
    assert askable.sends == 1


def test_a_campaign_of_an_askable_provider_is_not_made_uncertain(askable):
    Contact.objects.create(phone=PHONE)
    askable.swallow_sends = True
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    outbox.dispatch_due()
    askable.swallow_sends = False
    dispatch_until_quiet()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    assert list(campaign.messages.values_list("status", flat=True)) == [M.SENT]
    assert askable.sends == 1
    assert Campaign.objects.count() == 1


# --- the providers' own emulators (crm_sms.sandbox) ----------------------------------------


@pytest.fixture
def emulated(settings):
    """Start ``SandboxServer(provider=name)`` that answers only after the client gave up
    (it takes the message all the same) and make it the default provider."""
    from crm_sms.sandbox import SandboxServer

    servers = []

    def start(name: str) -> SandboxServer:
        server = SandboxServer(provider=name, callbacks=False, timeout_rate=1.0, timeout_s=0.8)
        servers.append(server.start())
        url = server.sms_url("Shop") + "&read_timeout=0.3&connect_timeout=2"
        settings.CRM_SMS = {
            "PROVIDERS": {"default": parse_sms_url(url)},
            "RETRY_BACKOFF": 0.01,
            "RETRY_BACKOFF_MAX": 0.05,
        }
        return server

    yield start
    for server in servers:
        server.stop()


def test_smsc_is_asked_and_its_subscriber_gets_one_sms(emulated):
    """SMSC (LOOKUP, by phone and our id): it took the message, the answer was lost; the next
    attempt finds it at SMSC, so it is ``sent`` without a second send."""
    sandbox = emulated("smsc")
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert (message.status, message.maybe_sent) == (M.QUEUED, True)
    time.sleep(0.7)  # SMSC finishes taking it
    sandbox.configure(timeout_rate=0.0)
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.SENT and message.provider_message_id
    assert len(sandbox.accepted) == 1 and sandbox.provider.duplicates == []
    sends = [r for r in sandbox.requests if r.route == "/sys/send.php"]
    assert len(sends) == 1


def test_the_smsru_emulator_leaves_it_uncertain_with_one_sms(emulated):
    sandbox = emulated("smsru")
    message = outbox.send_sms(PHONE, "Hi", now=True)
    assert message.status == M.UNCERTAIN
    time.sleep(0.7)
    sandbox.configure(timeout_rate=0.0)
    dispatch_until_quiet()
    message.refresh_from_db()
    assert message.status == M.UNCERTAIN
    assert len(sandbox.accepted) == 1


# --- the admin -----------------------------------------------------------------------------


def test_the_admin_shows_uncertain_messages_plainly(smsru, admin_en):
    from django.urls import reverse

    smsru.swallow = "drop"
    message = outbox.send_sms(PHONE, "Hi", now=True)
    listing = reverse("admin:crm_sms_message_changelist")
    page = admin_en.get(listing, {"status__exact": "uncertain"})
    assert list(page.context["cl"].result_list) == [message]
    html = page.content.decode()
    assert "?status__exact=uncertain" in html  # a choice of the status filter
    assert 'class="crm-sms-status crm-sms-status-uncertain"' in html
    assert "uncertain whether sent" in html
    page = admin_en.get(reverse("admin:crm_sms_message_change", args=[message.pk]))
    html = page.content.decode()
    assert "the subscriber may then get the SMS twice" in html
    assert "Uncertain whether sent: the answer was lost" in html  # the event
