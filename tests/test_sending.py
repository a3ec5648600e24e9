"""send_sms and the outbox's send path: validation, results, retries, provider errors."""

from __future__ import annotations

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone

from crm_sms import outbox
from crm_sms.backends.base import SendStatus
from crm_sms.models import Contact, EventSource, Message, MessageEvent, MessageStatus, new_msg_ids
from crm_sms.outbox import results
from tests.fixtures_outbox import sandbox_provider_config

pytestmark = pytest.mark.django_db

#: RETRY_BACKOFF of the ``outbox_settings`` fixture, seconds.
RETRY_BACKOFF = 0.01


def assert_backoff(message: Message, seconds: float) -> None:
    """``message`` is due again ``seconds`` ± 20% (the jitter) after its result was written
    (``updated_at``): measured against the write, never against the clock now."""
    backoff = (message.next_attempt_at - message.updated_at).total_seconds()
    assert seconds * 0.8 - 1e-6 <= backoff <= seconds * 1.2 + 1e-6, backoff


# --- send_sms: validation before anything is stored ---------------------------------------


@pytest.mark.parametrize(
    "to, text, kwargs, fragment",
    [
        ("12", "Hi", {}, "phone"),
        ("+7 900 123-42-12", "", {}, "empty"),
        ("+7 900 123-42-12", "Hi", {"provider": "nope"}, "nope"),
    ],
)
def test_send_sms_rejects_bad_input_before_storing(locmem_provider, to, text, kwargs, fragment):
    with pytest.raises(ValidationError) as info:
        outbox.send_sms(to, text, **kwargs)
    assert fragment in " ".join(info.value.messages).lower()
    assert Message.objects.count() == 0
    assert locmem_provider == []


def test_send_sms_rejects_a_bad_sender_of_the_provider(megafon_provider):
    with pytest.raises(ValidationError) as info:
        outbox.send_sms("+79001234212", "Hi", sender="Johnny_Viper")  # 12 characters
    assert info.value.messages
    assert Message.objects.count() == 0
    assert megafon_provider.requests == []


def test_send_sms_refuses_an_opted_out_contact(locmem_provider):
    contact = Contact.objects.create(phone="+79001234212", opted_out=True)
    with pytest.raises(ValidationError, match="opted out"):
        outbox.send_sms("8 (900) 123-42-12", "Hi")
    with pytest.raises(ValidationError, match="opted out"):
        outbox.send_sms("+79005550000", "Hi", contact=contact)
    assert Message.objects.count() == 0


def test_send_sms_queues_a_normalized_message(locmem_provider):
    message = outbox.send_sms("8 (900) 123-42-12", "Привет", sender="Shop")
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert message.phone == "+79001234212"
    assert message.sender == "Shop"
    assert message.provider == "default"
    assert message.segments == 1
    assert len(message.msg_id) == 16
    assert locmem_provider == []  # queued, not sent


def test_send_sms_links_the_contact_with_that_phone(locmem_provider):
    contact = Contact.objects.create(phone="+79001234212", first_name="Anna")
    message = outbox.send_sms("89001234212", "Hi")
    assert message.contact == contact


def test_send_sms_counts_segments(locmem_provider):
    message = outbox.send_sms("+79001234212", "Ы" * 71)
    assert message.segments == 2


def test_send_sms_now_sends_through_the_worker_path(locmem_provider):
    message = outbox.send_sms("+79001234212", "Code 1234", now=True)
    assert message.status == MessageStatus.SENT
    assert message.sent_at is not None
    assert message.attempts == 1
    assert message.provider_message_id == message.msg_id
    assert message.claimed_at is None
    assert [(s.to, s.text, s.msg_id) for s in locmem_provider] == [
        ("+79001234212", "Code 1234", message.msg_id)
    ]
    events = list(message.events.values_list("old_status", "new_status", "source"))
    assert events == [
        ("queued", "sending", EventSource.SEND),
        ("sending", "sent", EventSource.SEND),
    ]


def test_send_sms_now_to_the_sandbox(megafon_provider):
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.SENT
    assert message.msg_id in megafon_provider.accepted
    assert megafon_provider.accepted[message.msg_id]["to"] == 79001234212
    assert message.last_response is not None


def test_a_rejected_message_fails_with_the_provider_error(megafon_provider):
    megafon_provider.configure(codes={"79001234212": 1282})
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "1282"
    assert message.error_message
    assert message.attempts == 1


def test_a_retryable_failure_goes_back_to_queued_with_backoff(megafon_provider):
    megafon_provider.configure(fail_rate=1.0)
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.QUEUED
    assert message.attempts == 1
    assert_backoff(message, RETRY_BACKOFF)
    assert message.error_code


def test_retries_keep_the_msg_id_and_end_failed_after_max_attempts(megafon_provider, settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "MAX_ATTEMPTS": 3, "RETRY_BACKOFF": 0}
    megafon_provider.configure(fail_rate=1.0)
    message = outbox.send_sms("+79001234212", "Hello")
    for _ in range(5):
        outbox.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.attempts == 3
    assert megafon_provider.attempts == {message.msg_id: 3}


def test_a_duplicate_msg_id_answer_means_sent(megafon_provider):
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.SENT
    # As if the worker died after the provider accepted: queued again, same msg_id.
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.QUEUED)
    outbox.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT
    assert megafon_provider.attempts[message.msg_id] == 2
    assert len(megafon_provider.accepted) == 1


def test_retry_delay_doubles_with_jitter_and_is_capped(settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "RETRY_BACKOFF": 10, "RETRY_BACKOFF_MAX": 60}
    delays = [results.retry_delay(n) for n in (1, 2, 3, 4, 5)]
    assert 8 <= delays[0] <= 12
    assert 16 <= delays[1] <= 24
    assert 32 <= delays[2] <= 48
    assert delays[3] <= 60 and delays[4] <= 60
    assert len({results.retry_delay(1) for _ in range(20)}) > 1  # jitter


def test_a_provider_error_of_a_single_message_is_retried(megafon_provider, settings, caplog):
    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {
        "default": sandbox_provider_config(megafon_provider, password="wrong", read_timeout=0.5)
    }
    settings.CRM_SMS = crm
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.QUEUED
    assert message.attempts == 1
    assert_backoff(message, RETRY_BACKOFF)
    assert "wrong" not in str(message.last_response)
    assert any("refused" in r.getMessage() for r in caplog.records)


def test_a_delivery_report_that_came_first_keeps_its_status(locmem_provider, monkeypatch):
    message = outbox.send_sms("+79001234212", "Hello")
    original = results.write_results

    def report_first(jobs, summary, gates):
        # The report arrives after the provider answered, before the worker writes the result.
        Message.objects.filter(pk=message.pk).update(status=MessageStatus.DELIVERED)
        return original(jobs, summary, gates)

    monkeypatch.setattr(results, "write_results", report_first)
    summary = outbox.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.provider_message_id == message.msg_id
    assert message.sent_at is not None
    assert summary["sent"] == 1
    assert not message.events.filter(new_status=MessageStatus.SENT).exists()


def test_a_backend_exception_does_not_lose_the_message(locmem_provider, monkeypatch):
    from crm_sms.backends.locmem import LocmemBackend

    def broken(self, sms):
        raise RuntimeError("boom")

    monkeypatch.setattr(LocmemBackend, "send", broken)
    message = outbox.send_sms("+79001234212", "Hello", now=True)
    assert message.status == MessageStatus.QUEUED
    assert message.error_code == "exception"
    assert "boom" in message.error_message


def test_a_message_for_an_unconfigured_provider_is_not_lost(locmem_provider, settings):
    message = outbox.send_sms("+79001234212", "Hello", provider="other")
    providers = {"default": settings.CRM_SMS["PROVIDERS"]["default"]}
    settings.CRM_SMS = {**settings.CRM_SMS, "PROVIDERS": providers}
    outbox.dispatch_due()
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert message.error_code == "configuration"


def test_release_stale_claims_takes_back_old_sending_rows(megafon_provider, settings):
    """MegaFon drops a repeat of a msg_id: an expired claim is simply sent again."""
    settings.CRM_SMS = {**settings.CRM_SMS, "CLAIM_TIMEOUT": 60}
    old = outbox.send_sms("+79001234212", "a")
    fresh = outbox.send_sms("+79001234213", "b")
    now = timezone.now()
    long_ago = now - timezone.timedelta(seconds=120)
    Message.objects.filter(pk=old.pk).update(status=MessageStatus.SENDING, claimed_at=long_ago)
    Message.objects.filter(pk=fresh.pk).update(status=MessageStatus.SENDING, claimed_at=now)
    assert outbox.release_stale_claims(now=now) == 1
    old.refresh_from_db()
    fresh.refresh_from_db()
    assert old.status == MessageStatus.QUEUED and old.claimed_at is None
    assert fresh.status == MessageStatus.SENDING
    assert MessageEvent.objects.filter(message=old, new_status="queued").exists()


def test_an_expired_claim_is_uncertain_where_a_resend_could_arrive_twice(locmem_provider):
    """The worker may have died in the middle of the request; locmem, like SMS.RU, can neither
    drop a repeat nor be asked, so the message waits for an operator instead of going again."""
    message = outbox.send_sms("+79001234212", "a")
    now = timezone.now()
    long_ago = now - timezone.timedelta(seconds=3600)
    Message.objects.filter(pk=message.pk).update(status=MessageStatus.SENDING, claimed_at=long_ago)
    assert outbox.release_stale_claims(now=now) == 1
    message.refresh_from_db()
    assert (message.status, message.maybe_sent, message.claimed_at) == ("uncertain", True, None)
    assert outbox.claim_due_messages(10, now=now) == []


def test_claims_skip_rows_not_due(locmem_provider):
    later = outbox.send_sms("+79001234212", "later")
    now_msg = outbox.send_sms("+79001234213", "now")
    now = timezone.now()
    Message.objects.filter(pk=later.pk).update(next_attempt_at=now + timezone.timedelta(hours=1))
    claimed = outbox.claim_due_messages(10, now=now)
    assert [m.pk for m in claimed] == [now_msg.pk]
    assert claimed[0].status == MessageStatus.SENDING
    assert claimed[0].claimed_at == now


def test_send_result_kinds_are_the_contract():
    assert {s.value for s in SendStatus} == {"accepted", "rejected", "retry", "provider_error"}


def test_new_msg_ids_are_unique_and_well_formed():
    ids = new_msg_ids(5000)
    assert len(set(ids)) == 5000
    assert all(len(i) == 16 and i.isalnum() and i.isascii() for i in ids)


def test_a_wrong_password_costs_at_most_pause_after_requests_for_single_messages(
    megafon_provider, settings
):
    """Single messages: PAUSE_AFTER provider errors stop the batch; the rest go back to the
    queue with a backoff, without an attempt used."""
    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {
        "default": sandbox_provider_config(megafon_provider, password="wrong", read_timeout=0.5)
    }
    # Not due again while this run lasts: longer than any test may run (pytest-timeout).
    crm.update(RETRY_BACKOFF=3600, RETRY_BACKOFF_MAX=3600)
    settings.CRM_SMS = crm
    for i in range(10):
        outbox.send_sms(f"+7900123420{i}", "Hi")
    summary = outbox.dispatch_due(concurrency=8)
    assert len(megafon_provider.requests) <= 3
    assert summary["sent"] == 0 and summary["failed"] == 0
    messages = list(Message.objects.all())
    assert {m.status for m in messages} == {MessageStatus.QUEUED}
    for message in messages:
        assert_backoff(message, 3600)
    assert sum(m.attempts for m in messages) == len(megafon_provider.requests)
