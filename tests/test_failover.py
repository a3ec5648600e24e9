"""Failover (``crm_sms.outbox.failover``, issue 15.7): a provider that fails provider-wide, or
refuses a message for a route reason, hands its queued messages to the next provider of
``CRM_SMS["FAILOVER"]`` with a new msg_id; never one that may already be at the first."""

from __future__ import annotations

import threading
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.db import close_old_connections
from django.utils import timezone

from crm_sms import conf, outbox
from crm_sms.backends import get_backend
from crm_sms.backends.base import OutgoingSMS, SendResult, SendStatus
from crm_sms.backends.megafon import MegafonBackend
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    Contact,
    EventSource,
    Message,
    MessageEvent,
    MessageStatus,
)
from crm_sms.outbox import failover
from crm_sms.outbox.pool import Job
from crm_sms.outbox.results import outcome
from crm_sms.sandbox import SandboxServer
from tests.fixtures_outbox import make_contacts, sandbox_provider_config

M, C = MessageStatus, CampaignStatus


@pytest.fixture
def sandboxes(outbox_settings):
    """Two MegaFon sandboxes: "default" (the primary) and "reserve", in that failover order."""
    primary, reserve = SandboxServer().start(), SandboxServer().start()
    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {
        alias: sandbox_provider_config(server, read_timeout=0.5, connect_timeout=2)
        for alias, server in (("default", primary), ("reserve", reserve))
    }
    crm_sms.update(DEFAULT_PROVIDER="default", FAILOVER=["default", "reserve"])
    outbox_settings.CRM_SMS = crm_sms
    try:
        yield primary, reserve
    finally:
        primary.stop()
        reserve.stop()


def set_failover(settings, chain) -> None:
    settings.CRM_SMS = {**settings.CRM_SMS, "FAILOVER": chain}


def phones_accepted(*servers: SandboxServer) -> Counter:
    """How many times each phone was accepted, over all ``servers``."""
    return Counter(m["to"] for server in servers for m in server.accepted.values())


def failover_events(message: Message) -> list[MessageEvent]:
    return [e for e in message.events.all() if (e.payload or {}).get("failover")]


def dispatch_until_quiet(seconds: float = 20.0) -> None:
    """Run the worker until nothing is queued or sending (retries back off for at most
    0.05 s in these tests)."""
    deadline = time.monotonic() + seconds
    while Message.objects.filter(status__in=(M.QUEUED, M.SENDING)).exists():
        assert time.monotonic() < deadline, "messages still queued"
        outbox.dispatch_due()
        time.sleep(0.05)


def send_campaign(count: int) -> Campaign:
    make_contacts(count)
    return outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")


# --- a provider that refuses everything ------------------------------------------------------


@pytest.mark.django_db
def test_a_campaign_at_a_provider_with_wrong_credentials_is_sent_through_the_reserve(sandboxes):
    """20 messages; "default" refuses the password. The campaign never pauses: 18 are sent
    once each through the reserve with new msg_ids; the 2 that may already be at "default"
    (maybe_sent) are not moved. Once "default" works again, "Retry failed" sends those two
    there with their own msg_ids: every subscriber got exactly one SMS, over both servers."""
    primary, reserve = sandboxes
    primary.configure(password="changed")
    campaign = send_campaign(20)
    stuck = list(campaign.messages.order_by("pk").values_list("pk", flat=True)[:2])
    Message.objects.filter(pk__in=stuck).update(maybe_sent=True)  # an earlier lost answer
    old_ids = dict(campaign.messages.values_list("pk", "msg_id"))

    dispatch_until_quiet()

    campaign.refresh_from_db()
    assert (campaign.status, campaign.pause_reason) == (C.COMPLETED, "")
    moved = campaign.messages.exclude(pk__in=stuck)
    assert Counter(moved.values_list("status", "provider", "moved_from")) == {
        (M.SENT, "reserve", "default"): 18
    }
    assert primary.accepted == {}
    assert set(reserve.accepted) == set(moved.values_list("msg_id", flat=True))
    for message in moved:
        assert message.msg_id != old_ids[message.pk]
        assert "refused the login and password" in message.move_reason
        [event] = failover_events(message)
        assert event.payload["failover"] == {
            "from": "default",
            "to": "reserve",
            "old_msg_id": old_ids[message.pk],
            "new_msg_id": message.msg_id,
            "reason": message.move_reason,
            "error_code": event.payload["failover"]["error_code"],
        }
        assert "Moved from default to reserve" in event.description
    for message in Message.objects.filter(pk__in=stuck):
        assert (message.status, message.provider, message.maybe_sent) == (M.FAILED, "default", True)
        assert (message.msg_id, message.moved_from, failover_events(message)) == (
            old_ids[message.pk],
            "",
            [],
        )

    primary.configure(password="test")
    assert outbox.retry_failed(campaign) == 2
    outbox.dispatch_due()
    assert set(primary.accepted) == {old_ids[pk] for pk in stuck}
    assert phones_accepted(primary, reserve) == Counter(
        {int(c.phone[1:]): 1 for c in Contact.objects.all()}
    )
    campaign.refresh_from_db()
    assert campaign.status == C.COMPLETED


@pytest.mark.django_db
def test_the_rest_of_a_tripped_providers_queue_moves_without_being_tried(sandboxes):
    """5 messages due now trip "default" (3 refused, 2 given back, moved with their attempt's
    event); the 15 due later move at once, without a request to "default" (queued -> queued,
    one event each), and are sent by the reserve when due."""
    primary, reserve = sandboxes
    primary.configure(password="changed")
    campaign = send_campaign(20)
    later = list(campaign.messages.order_by("pk").values_list("pk", flat=True)[5:])
    due = timezone.now() + timedelta(seconds=1)
    Message.objects.filter(pk__in=later).update(next_attempt_at=due)
    outbox.dispatch_due(batch_size=5, concurrency=1)
    handed = MessageEvent.objects.filter(old_status=M.QUEUED, new_status=M.QUEUED)
    assert set(handed.values_list("message_id", flat=True)) == set(later)
    assert {e.payload["failover"]["from"] for e in handed} == {"default"}
    assert Counter(campaign.messages.values_list("provider", flat=True)) == {"reserve": 20}
    dispatch_until_quiet()
    campaign.refresh_from_db()
    assert campaign.status == C.COMPLETED
    assert len(primary.requests) == conf.get_setting("PAUSE_AFTER")
    assert phones_accepted(reserve) == Counter({int(c.phone[1:]): 1 for c in Contact.objects.all()})
    assert all(len(failover_events(m)) == 1 for m in campaign.messages.all())


@pytest.mark.django_db
def test_a_single_message_moves_once_its_provider_trips(sandboxes):
    primary, reserve = sandboxes
    primary.configure(password="changed")
    message = outbox.send_sms("+79001234212", "Hi")
    outbox.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.provider, message.moved_from) == (M.SENT, "reserve", "default")
    assert list(reserve.accepted) == [message.msg_id]


@pytest.mark.django_db
def test_the_reserve_failing_too_pauses_the_campaign_there(sandboxes):
    """The list is followed one way: from the last provider nothing moves back; the campaign
    pauses as without failover, its messages waiting at the reserve."""
    primary, reserve = sandboxes
    primary.configure(password="changed")
    reserve.configure(password="changed")
    campaign = send_campaign(10)
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.status == C.PAUSED and "login and password" in campaign.pause_reason
    assert Counter(campaign.messages.values_list("status", "provider")) == {
        (M.QUEUED, "reserve"): 10
    }
    assert primary.accepted == reserve.accepted == {}


@pytest.mark.parametrize("chain", [[], ["default"], ["default", "unconfigured"]])
@pytest.mark.django_db
def test_without_a_reserve_the_campaign_pauses_as_before(sandboxes, settings, chain):
    primary, reserve = sandboxes
    set_failover(settings, chain)
    primary.configure(password="changed")
    campaign = send_campaign(20)
    outbox.dispatch_due()
    campaign.refresh_from_db()
    assert campaign.status == C.PAUSED
    assert Counter(campaign.messages.values_list("status", "provider", "moved_from")) == {
        (M.QUEUED, "default", ""): 20
    }
    assert len(primary.requests) <= conf.get_setting("PAUSE_AFTER")
    assert reserve.requests == []


# --- a route refusal -----------------------------------------------------------------------


@pytest.mark.django_db
def test_a_route_refusal_moves_only_that_message(sandboxes):
    """MegaFon 1288 (the region is not available) for one recipient: that message goes to the
    reserve with a new msg_id, the other four are sent by "default"."""
    primary, reserve = sandboxes
    campaign = send_campaign(5)
    refused = campaign.messages.order_by("pk")[2]
    primary.configure(codes={refused.phone: 1288})
    outbox.dispatch_due()

    refused.refresh_from_db()
    assert (refused.status, refused.provider, refused.moved_from) == (M.SENT, "reserve", "default")
    assert "region is not available" in refused.move_reason
    assert list(reserve.accepted) == [refused.msg_id]
    others = campaign.messages.exclude(pk=refused.pk)
    assert Counter(others.values_list("status", "provider")) == {(M.SENT, "default"): 4}
    assert set(primary.accepted) == set(others.values_list("msg_id", flat=True))
    assert phones_accepted(primary, reserve) == Counter(
        {int(c.phone[1:]): 1 for c in Contact.objects.all()}
    )
    [event] = failover_events(refused)
    assert (event.old_status, event.new_status, event.error_code) == (M.SENDING, M.QUEUED, "1288")
    assert event.payload["failover"]["from"] == "default"
    assert event.payload["response"]["result"]["status"]["code"] == 1288  # MegaFon's answer
    campaign.refresh_from_db()
    assert campaign.status == C.COMPLETED


@pytest.mark.django_db
def test_a_route_refusal_without_a_reserve_fails_as_before(sandboxes, settings):
    primary, reserve = sandboxes
    set_failover(settings, [])
    message = outbox.send_sms("+79001234212", "Hi")
    primary.configure(codes={message.phone: 1288})
    outbox.dispatch_due()
    message.refresh_from_db()
    assert (message.status, message.provider, message.error_code) == (M.FAILED, "default", "1288")
    assert reserve.requests == []


def test_megafon_marks_its_route_codes():
    megafon = MegafonBackend("x", {"login": "l", "password": "p"})
    refused = SendResult(SendStatus.REJECTED, error_code="1288")
    assert megafon.is_route_refusal(refused)
    assert megafon.is_route_refusal(SendResult(SendStatus.PROVIDER_ERROR, error_code="1281"))
    assert not megafon.is_route_refusal(SendResult(SendStatus.REJECTED, error_code="1282"))
    assert not megafon.is_route_refusal(SendResult(SendStatus.RETRY, error_code="1288"))
    refused.ambiguous = True
    assert not megafon.is_route_refusal(refused)


# --- what never moves, and moving once -------------------------------------------------------


def make_message(status=M.QUEUED, campaign=None, **fields) -> Message:
    fields.setdefault("phone", f"+7900{Message.objects.count():07d}")
    return Message.objects.create(
        status=status, campaign=campaign, text="Hi", provider="default", **fields
    )


@pytest.mark.django_db
def test_hand_over_moves_only_queued_messages_that_cannot_be_at_the_first_provider(sandboxes):
    running = Campaign.objects.create(name="r", text="x", status=C.RUNNING)
    paused = Campaign.objects.create(name="p", text="x", status=C.PAUSED)
    movable = [make_message(campaign=running), make_message()]
    stays = [
        make_message(campaign=running, maybe_sent=True),
        make_message(M.SENDING, campaign=running, claimed_at=timezone.now()),
        make_message(M.UNCERTAIN, campaign=running, maybe_sent=True),
        make_message(M.SENT, campaign=running),
        make_message(campaign=paused),
        make_message(M.FAILED),
    ]
    before = {m.pk: m.msg_id for m in stays}
    assert failover.hand_over("default", "reserve", "down", "http_401") == 2
    for message in movable:
        message.refresh_from_db()
        assert (message.provider, message.moved_from, message.move_reason) == (
            "reserve",
            "default",
            "down",
        )
        [event] = message.events.all()
        assert (event.old_status, event.new_status, event.source) == (
            M.QUEUED,
            M.QUEUED,
            EventSource.RETRY,
        )
        assert event.error_code == "http_401"
    assert {m.pk: (m.provider, m.msg_id) for m in Message.objects.filter(pk__in=before)} == {
        pk: ("default", msg_id) for pk, msg_id in before.items()
    }
    assert failover.hand_over("default", "reserve", "down") == 0  # nothing left to move


@pytest.mark.django_db(transaction=True)
def test_two_workers_tripping_at_once_move_each_message_once(sandboxes):
    campaign = Campaign.objects.create(name="r", text="x", status=C.RUNNING)
    make_contacts(300)
    outbox.send_campaign(Contact.objects.all(), "Hi")  # a second campaign, running too
    count = Message.objects.filter(status=M.QUEUED, provider="default").count()
    assert count == 300 and campaign.pk
    start, moved = threading.Barrier(3), []

    def worker():
        try:
            start.wait()
            moved.append(failover.hand_over("default", "reserve", "down", chunk=40))
        finally:
            close_old_connections()

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sum(moved) == 300
    assert Counter(Message.objects.values_list("provider", flat=True)) == {"reserve": 300}
    events = Counter(
        MessageEvent.objects.filter(old_status=M.QUEUED, new_status=M.QUEUED).values_list(
            "message_id", flat=True
        )
    )
    assert len(events) == 300 and set(events.values()) == {1}
    assert len(set(Message.objects.values_list("msg_id", flat=True))) == 300


def test_a_deduplicating_provider_keeps_maybe_sent_until_it_answers(settings):
    """MegaFon drops repeats, so it is never asked: after an attempt whose answer was lost, a
    later failure (wrong password, a refused connection) says nothing about the first one.
    The message stays maybe_sent, so failover never moves it."""
    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.megafon.MegafonBackend"}},
        "FAILOVER": ["default", "reserve"],
    }
    backend = get_backend("default")
    message = Message(provider="default", phone="+79001234212", text="Hi", maybe_sent=True)
    sms = OutgoingSMS(message.phone, message.text, "", message.msg_id)
    now = timezone.now()
    for status, kept in (
        (SendStatus.PROVIDER_ERROR, True),
        (SendStatus.RETRY, True),
        (SendStatus.REJECTED, False),
        (SendStatus.ACCEPTED, False),
    ):
        job = Job(message, sms, backend, 0, result=SendResult(status, error_code="x"))
        assert outcome(job, now, 5).values["maybe_sent"] is kept, status


def test_sms_failover_is_read_from_the_environment():
    env = conf.settings_from_env({"SMS_FAILOVER": "default, reserve ,"})
    assert env["FAILOVER"] == ["default", "reserve"]


def test_the_chain_skips_providers_that_are_not_configured(settings):
    settings.CRM_SMS = {
        "PROVIDERS": {"a": {}, "c": {}},
        "FAILOVER": "a, b, c, a",
    }
    assert conf.failover_chain() == ["a", "b", "c"]
    assert failover.next_provider("a") == "c"
    assert failover.next_provider("c") is None
    assert failover.next_provider("other") is None


# For tests/test_failover.py once FAILOVER-checks.patch is applied (crm_sms/checks.py, W002).


def test_a_failover_alias_that_is_not_configured_is_a_warning(settings):
    from django.core.management import call_command

    from crm_sms.checks import check_providers

    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "crm_sms.backends.console.ConsoleBackend"}},
        "FAILOVER": ["default", "reserve"],
    }
    [warning] = [p for p in check_providers() if p.id == "crm_sms.W002"]
    assert "reserve" in warning.msg and "SMS_URL_RESERVE" in warning.hint
    settings.CRM_SMS = {**settings.CRM_SMS, "FAILOVER": ["default"]}
    assert not [p for p in check_providers() if p.id == "crm_sms.W002"]
    call_command("check")  # a warning does not stop the site
