"""Resend and "Retry failed" are idempotent (issue 10, point 1).

"Resend" used to create a new Message with a new msg_id and leave the original ``failed``, where
"Resend" again and "Retry failed" picked it up once more: three clicks gave each of three phones
three SMS. Now a resend reuses the row and its msg_id, the admin shows what will happen before it
happens, a message moves at most once per click (the confirmation form carries each row's state),
and an uncertain message needs an explicit confirmation. Through the admin these are real POSTs
with a CSRF token (``Client(enforce_csrf_checks=True)``).
"""

from __future__ import annotations

import re
import threading
import time

import pytest
from django.contrib.admin import helpers
from django.contrib.auth.models import Permission, User
from django.core.exceptions import ValidationError
from django.db import connections
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm_sms import outbox
from crm_sms.models import Campaign, CampaignStatus, Contact, EventSource, Message, MessageStatus
from crm_sms.outbox.resending import plan_resend, retry_plan, state_token
from crm_sms.transitions import MessageMove, move_messages
from tests.fixtures_outbox import make_contacts

pytestmark = pytest.mark.django_db

M = MessageStatus
MESSAGES = "admin:crm_sms_message_changelist"
CAMPAIGNS = "admin:crm_sms_campaign_changelist"
INPUT = re.compile(r"<input ([^>]*)>")
ATTR = re.compile(r'(\w+)="([^"]*)"')
RESENT = "Resend requested"


def staff(username: str, *codenames: str) -> User:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm_sms", codename__in=codenames)
    )
    return user


class Browser:
    """A staff user's browser: CSRF enforced, each POST with the token of the page before."""

    def __init__(self, user: User):
        self.client = Client(enforce_csrf_checks=True, headers={"accept-language": "en"})
        self.client.force_login(user)

    def token(self, url: str) -> str:
        page = self.client.get(reverse(url)).content.decode()
        return re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page).group(1)

    def action(self, url: str, action: str, pks: list[int]):
        data = {
            "action": action,
            "index": "0",
            helpers.ACTION_CHECKBOX_NAME: pks,
            "csrfmiddlewaretoken": self.token(url),
        }
        return self.client.post(reverse(url), data)

    def submit(self, page, *, tick: bool = False):
        """Submit the confirmation ``page``'s form as a browser would (ticking its checkbox)."""
        response = self.client.post(reverse(MESSAGES), form_fields(page, tick=tick), follow=True)
        assert response.status_code == 200
        return response


def form_fields(page, *, tick: bool = False) -> dict[str, list[str]]:
    fields: dict[str, list[str]] = {}
    for attrs in INPUT.findall(page.content.decode()):
        attr = dict(ATTR.findall(attrs))
        if attr.get("type") == "hidden" or (attr.get("type") == "checkbox" and tick):
            fields.setdefault(attr["name"], []).append(attr["value"])
    return fields


def fail_again(message: Message) -> None:
    """What the worker does to a queued message the provider refuses again."""
    message.refresh_from_db()
    move_messages([MessageMove(message, M.SENDING, EventSource.SEND)])
    move_messages([MessageMove(message, M.FAILED, EventSource.SEND)])


@pytest.fixture
def sender(db) -> Browser:
    return Browser(staff("sender", "view_message", "view_campaign", "change_campaign", "send_sms"))


@pytest.fixture
def providers(megafon_provider, outbox_settings):
    """ "default": the MegaFon sandbox (drops a repeat of a msg_id); "plain": locmem, which
    cannot (retry_safety NONE)."""
    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {
        **crm_sms["PROVIDERS"],
        "plain": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
    }
    outbox_settings.CRM_SMS = crm_sms
    return megafon_provider


def make(status: str, provider: str = "default", **fields) -> Message:
    fields.setdefault("phone", f"+7900123{Message.objects.count():04d}")
    return Message.objects.create(status=status, text="Hi", provider=provider, **fields)


# --- the three clicks --------------------------------------------------------------


def test_three_clicks_give_each_phone_one_sms(providers, outbox_settings, sender):
    """Three messages fail after a read timeout (MegaFon had taken them). "Resend", "Resend"
    again and "Retry failed": each phone gets one SMS, and no row is added."""
    outbox_settings.CRM_SMS = {**outbox_settings.CRM_SMS, "MAX_ATTEMPTS": 1}
    make_contacts(3)
    providers.configure(timeout_rate=1.0, timeout_s=0.8)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi")
    outbox.dispatch_due()
    time.sleep(0.6)  # the sandbox takes each message after the client gave up
    providers.configure(timeout_rate=0.0)
    assert set(campaign.messages.values_list("status", flat=True)) == {M.FAILED}
    assert len(providers.accepted) == 3
    pks = list(campaign.messages.values_list("pk", flat=True))

    page = sender.action(MESSAGES, "resend_action", pks)  # click 1
    assert "3 messages will be sent again with the same id" in page.content.decode()
    first_form = page
    sender.submit(page)
    outbox.dispatch_due()
    assert set(campaign.messages.values_list("status", flat=True)) == {M.SENT}

    page = sender.action(MESSAGES, "resend_action", pks)  # click 2
    html = page.content.decode()
    assert "3 messages will be left as they are" in html and "the provider accepted it" in html
    sender.submit(page)
    sender.submit(first_form)  # and click 1's form again (the browser's back button)
    sender.action(CAMPAIGNS, "retry_failed_action", [campaign.pk])  # click 3
    outbox.dispatch_due()

    assert Message.objects.count() == 3
    assert set(campaign.messages.values_list("status", flat=True)) == {M.SENT}
    phones = [m["to"] for m in providers.accepted.values()]
    assert sorted(phones) == sorted(set(phones)) and len(phones) == 3


# --- one row, one msg_id ------------------------------------------------------------------


def test_a_refused_message_is_resent_as_its_own_row_with_its_msg_id(megafon_provider):
    megafon_provider.configure(codes={"79001234212": 1288})
    failed = outbox.send_sms("+79001234212", "Hi", now=True)
    assert failed.status == M.FAILED
    megafon_provider.configure(codes={})
    again = outbox.resend_message(failed)
    assert (again.pk, again.msg_id, again.status) == (failed.pk, failed.msg_id, M.QUEUED)
    assert Message.objects.count() == 1
    outbox.dispatch_due()
    again.refresh_from_db()
    assert again.status == M.SENT
    assert list(megafon_provider.accepted) == [failed.msg_id]


def test_resending_an_accepted_message_sends_nothing_new_where_the_provider_drops_repeats(
    megafon_provider,
):
    sent = outbox.send_sms("+79001234212", "Hi", now=True)
    again = outbox.resend_message(sent)
    assert (again.pk, again.msg_id) == (sent.pk, sent.msg_id)
    outbox.dispatch_due()
    again.refresh_from_db()
    assert again.status == M.SENT
    assert megafon_provider.attempts[sent.msg_id] == 2
    assert list(megafon_provider.accepted) == [sent.msg_id]


def test_resend_twice_queues_once(megafon_provider):
    megafon_provider.configure(codes={"79001234212": 1288})
    failed = outbox.send_sms("+79001234212", "Hi", now=True)
    outbox.resend_message(failed)
    with pytest.raises(ValidationError) as second:
        outbox.resend_message(failed)
    assert second.value.code == "active"
    assert Message.objects.count() == 1
    assert failed.events.filter(description__startswith=RESENT).count() == 1


# --- the confirmation page ---------------------------------------------------------------


def test_the_page_says_what_will_happen_and_uncertain_ones_need_the_tick(providers, sender):
    opted_out = Contact.objects.create(phone="+79001230099", opted_out=True)
    again = make(M.FAILED)
    again_too = make(M.FAILED, maybe_sent=True)  # MegaFon drops a repeat
    uncertain = make(M.UNCERTAIN, "plain", maybe_sent=True)
    maybe = make(M.FAILED, "plain", maybe_sent=True)  # locmem can neither drop nor be asked
    left = [make(M.SENT), make(M.QUEUED), make(M.FAILED, contact=opted_out)]
    pks = [m.pk for m in (again, again_too, uncertain, maybe, *left)]

    page = sender.action(MESSAGES, "resend_action", pks)
    html = page.content.decode()
    assert "2 messages will be sent again with the same id" in html
    assert "2 messages are uncertain and need your explicit confirmation" in html
    assert "the subscriber may get the SMS twice" in html
    assert "3 messages will be left as they are" in html
    for reason in ("the provider accepted it", "already waiting to be sent", "opted out"):
        assert reason in html
    assert 'type="checkbox" name="confirm_uncertain"' in html
    assert set(Message.objects.values_list("status", flat=True)) == {
        M.FAILED,
        M.UNCERTAIN,
        M.SENT,
        M.QUEUED,
    }  # nothing happened yet

    done = sender.submit(page).content.decode()  # without the tick
    assert "2 messages queued again with the same id" in done
    assert "the resend was not confirmed" in done
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert [statuses[m.pk] for m in (again, again_too, uncertain, maybe)] == [
        M.QUEUED,
        M.QUEUED,
        M.UNCERTAIN,
        M.FAILED,
    ]
    done = sender.submit(page, tick=True).content.decode()  # the same page, ticked
    assert "2 uncertain messages queued again, as you confirmed" in done
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[uncertain.pk] == statuses[maybe.pk] == M.QUEUED
    assert statuses[again.pk] == M.QUEUED  # its first move was not repeated
    assert again.events.filter(description__startswith=RESENT).count() == 1
    assert uncertain.events.get(source=EventSource.ADMIN).description.startswith(
        "Resend confirmed (the subscriber may get it twice) by sender"
    )
    assert {statuses[m.pk] for m in left} == {M.SENT, M.QUEUED, M.FAILED}


def test_a_second_post_of_the_same_form_does_nothing(megafon_provider, sender):
    """A double click or a browser's resubmit: the form's rows moved on since the page was
    shown, so its second POST changes nothing, even after the message failed again."""
    message = make(M.FAILED)
    page = sender.action(MESSAGES, "resend_action", [message.pk])
    sender.submit(page)
    message.refresh_from_db()
    assert message.status == M.QUEUED
    fail_again(message)
    done = sender.submit(page).content.decode()
    assert "it changed since the confirmation page was shown" in done
    message.refresh_from_db()
    assert message.status == M.FAILED
    assert message.events.filter(description__startswith=RESENT).count() == 1
    assert Message.objects.count() == 1


def test_plan_and_tokens(providers):
    message = make(M.FAILED)
    plan = plan_resend([message])
    assert [(i.verdict, i.code) for i in plan.items] == [("again", "refused")]
    assert plan.items[0].token == state_token(message)
    with pytest.raises(ValidationError) as stale:
        outbox.resend_message(message, token="failed@2000-01-01T00:00:00+00:00")
    assert stale.value.code == "changed"


# --- "Retry failed" ---------------------------------------------------------------------


def test_retry_failed_never_requeues_uncertain_queued_sent_or_unsafe_ones(providers):
    campaign = Campaign.objects.create(name="c", text="Hi", status=CampaignStatus.COMPLETED)
    opted_out = Contact.objects.create(phone="+79001230099", opted_out=True)
    plain = make(M.FAILED, campaign=campaign)
    deduplicated = make(M.FAILED, campaign=campaign, maybe_sent=True)
    unsafe = make(M.FAILED, "plain", campaign=campaign, maybe_sent=True)
    uncertain = make(M.UNCERTAIN, "plain", campaign=campaign, maybe_sent=True)
    others = [
        make(M.QUEUED, campaign=campaign),
        make(M.SENT, campaign=campaign),
        make(M.FAILED, campaign=campaign, contact=opted_out),
    ]
    plan = retry_plan(campaign.pk)
    assert (plan.again, plan.unsafe, plan.uncertain, plan.opted_out) == (2, 1, 1, 1)
    assert outbox.retry_failed(campaign) == 2
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses[plain.pk] == statuses[deduplicated.pk] == M.QUEUED
    assert (statuses[unsafe.pk], statuses[uncertain.pk]) == (M.FAILED, M.UNCERTAIN)
    assert [statuses[m.pk] for m in others] == [M.QUEUED, M.SENT, M.FAILED]
    assert Message.objects.count() == 7


def test_retry_failed_with_the_pages_time_is_done_once(providers):
    campaign = Campaign.objects.create(name="c", text="Hi", status=CampaignStatus.COMPLETED)
    message = make(M.FAILED, campaign=campaign)
    seen_at = timezone.now()
    assert outbox.retry_failed(campaign, seen_at=seen_at) == 1
    fail_again(message)
    assert outbox.retry_failed(campaign, seen_at=seen_at) == 0  # the same form, again
    message.refresh_from_db()
    assert message.status == M.FAILED
    assert outbox.retry_failed(campaign, seen_at=timezone.now()) == 1  # a new click


# --- permissions ----------------------------------------------------------------------


def test_resend_needs_send_sms_on_every_path(providers):
    """A staff user who may see messages and change campaigns but not send: no "Resend"
    action, and neither its first POST nor a forged confirmation POST moves anything."""
    message = make(M.FAILED)
    uncertain = make(M.UNCERTAIN, "plain")
    browser = Browser(staff("operator", "view_message", "view_campaign", "change_campaign"))
    listing = browser.client.get(reverse(MESSAGES)).content.decode()
    assert "resend_action" not in listing
    response = browser.action(MESSAGES, "resend_action", [message.pk, uncertain.pk])
    assert response.status_code in (200, 302, 403)
    assert "will be sent again" not in response.content.decode()
    forged = {
        "action": "resend_action",
        "post": "yes",
        "confirm_uncertain": "yes",
        helpers.ACTION_CHECKBOX_NAME: [message.pk, uncertain.pk],
        f"state_{message.pk}": state_token(message),
        f"state_{uncertain.pk}": state_token(uncertain),
        "csrfmiddlewaretoken": browser.token(MESSAGES),
    }
    response = browser.client.post(reverse(MESSAGES), forged)
    assert response.status_code in (200, 302, 403)
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert (statuses[message.pk], statuses[uncertain.pk]) == (M.FAILED, M.UNCERTAIN)
    assert not Message.objects.filter(events__source=EventSource.ADMIN).exists()
    # Without the CSRF token nothing happens either, even for a user who may send.
    sender = Browser(staff("sender", "view_message", "send_sms"))
    forged.pop("csrfmiddlewaretoken")
    assert sender.client.post(reverse(MESSAGES), forged).status_code == 403
    message.refresh_from_db()
    assert message.status == M.FAILED


# --- PostgreSQL: two clicks at once ----------------------------------------------------


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_posts_of_the_form_requeue_once(requires_postgres, providers):
    """A double click: two POSTs of the same confirmation form at the same moment, each in
    its own request and database connection. The row lock and the state token let one through."""
    message = make(M.FAILED)
    sender = staff("sender", "view_message", "send_sms")
    browsers = [Browser(sender), Browser(sender)]
    page = browsers[0].action(MESSAGES, "resend_action", [message.pk])
    fields = form_fields(page)
    tokens = [b.token(MESSAGES) for b in browsers]
    start = threading.Barrier(2)
    answers: list[int] = []

    def click(browser: Browser, token: str) -> None:
        try:
            start.wait(5)
            data = {**fields, "csrfmiddlewaretoken": [token]}
            answers.append(browser.client.post(reverse(MESSAGES), data).status_code)
        finally:
            connections.close_all()

    threads = [
        threading.Thread(target=click, args=pair) for pair in zip(browsers, tokens, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert answers == [302, 302]
    message.refresh_from_db()
    assert message.status == M.QUEUED
    assert message.events.filter(description__startswith=RESENT).count() == 1
    assert Message.objects.count() == 1


@pytest.mark.postgres
@pytest.mark.django_db(transaction=True)
def test_two_concurrent_resends_requeue_once(requires_postgres, providers):
    message = make(M.FAILED)
    token = state_token(message)
    start = threading.Barrier(4)
    outcomes: list[str] = []

    def resend() -> None:
        try:
            start.wait(5)
            outbox.resend_message(Message.objects.get(pk=message.pk), token=token)
            outcomes.append("queued")
        except ValidationError as exc:
            outcomes.append(exc.code)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=resend) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert sorted(outcomes) == ["changed", "changed", "changed", "queued"]
    assert message.events.filter(description__startswith=RESENT).count() == 1


def test_the_retry_failed_page_says_what_will_happen(providers, admin_user, rf):
    """The page "Retry failed" shows first (``admin.resend.retry_failed_page``): its form
    carries the time it was shown, which ``retry_failed(seen_at=...)`` honours."""
    from django.contrib import admin as django_admin

    from crm_sms.admin.resend import retry_failed_page, seen_at

    campaign = Campaign.objects.create(name="Spring", text="Hi", status=CampaignStatus.COMPLETED)
    make(M.FAILED, campaign=campaign)
    make(M.FAILED, "plain", campaign=campaign, maybe_sent=True)
    make(M.UNCERTAIN, "plain", campaign=campaign)
    request = rf.post(reverse(CAMPAIGNS))
    request.user = admin_user
    model_admin = django_admin.site._registry[Campaign]
    html = retry_failed_page(model_admin, request, [campaign]).render().content.decode()
    assert "1 failed message will be sent again with the same id." in html
    assert "1 uncertain message is left as it is" in html
    assert "1 failed message is left as it is: its last attempt may have reached" in html
    shown = re.search(r'name="seen_at" value="([^"]+)"', html).group(1)
    confirmed = rf.post(reverse(CAMPAIGNS), {"seen_at": shown, "post": "yes"})
    assert outbox.retry_failed(campaign, seen_at=seen_at(confirmed)) == 1
    assert outbox.retry_failed(campaign, seen_at=seen_at(confirmed)) == 0
