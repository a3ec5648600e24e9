"""The worker: ``sms_worker``, concurrency, failures, crashes, signals (real processes)."""

from __future__ import annotations

import io
import re
import signal
import time
from collections import Counter
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from crm_sms import outbox
from crm_sms.models import (
    ACTIVE_STATUSES,
    Campaign,
    CampaignStatus,
    Contact,
    Message,
    MessageStatus,
)
from crm_sms.outbox import results
from tests.fixtures_outbox import make_contacts, subprocess_env, wait_until


def statuses(**filters) -> Counter:
    return Counter(Message.objects.filter(**filters).values_list("status", flat=True))


def claimed_since(when) -> bool:
    return Message.objects.filter(status=MessageStatus.SENDING, claimed_at__gte=when).exists()


def assert_one_sms_per_subscriber(sandbox, count: int) -> None:
    """Each message reached the provider as accepted exactly once (msg_id de-duplication),
    and no phone got two different messages."""
    assert len(sandbox.accepted) == count
    phones = Counter(m["to"] for m in sandbox.accepted.values())
    assert max(phones.values()) == 1
    sent = set(Message.objects.filter(status=MessageStatus.SENT).values_list("msg_id", flat=True))
    assert sent == set(sandbox.accepted)


@pytest.mark.django_db
def test_sms_worker_once_sends_everything_due_and_prints_progress(locmem_provider):
    make_contacts(30)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    out = io.StringIO()
    call_command("sms_worker", "--once", "--batch-size", "10", "--concurrency", "4", stdout=out)
    assert len(locmem_provider) == 30
    assert statuses() == {MessageStatus.SENT: 30}
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
    lines = out.getvalue().splitlines()
    assert any("msg/s" in line and "sent" in line for line in lines)
    assert "Done: sent 30" in lines[-1]


@pytest.mark.django_db
def test_sms_worker_provider_option_sends_only_that_provider(locmem_provider):
    outbox.send_sms("+79001234201", "a")
    other = outbox.send_sms("+79001234202", "b", provider="other")
    call_command("sms_worker", "--once", "--provider", "other", stdout=io.StringIO())
    other.refresh_from_db()
    assert other.status == MessageStatus.SENT
    assert statuses(provider="default") == {MessageStatus.QUEUED: 1}


@pytest.mark.django_db
@pytest.mark.slow
def test_every_message_ends_sent_despite_503_timeouts_and_throttling(megafon_provider, settings):
    """10% HTTP 503, 10% answers slower than the read timeout, 10% code 88: retries with
    backoff and the same msg_id; the provider's de-duplication keeps one SMS per subscriber."""
    # About 27% of the requests fail: with the fixture's 8 attempts one of the 300 messages
    # ran out of them in about 1 run in 100 (0.27 ** 8 * 300); with 20, never in practice.
    settings.CRM_SMS = {**settings.CRM_SMS, "MAX_ATTEMPTS": 20}
    megafon_provider.configure(
        fail_rate=0.1, timeout_rate=0.1, timeout_s=0.8, throttle_rate=0.1, latency_ms=2
    )
    make_contacts(300)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    deadline = time.monotonic() + 25
    while time.monotonic() < deadline:
        outbox.dispatch_due(concurrency=16, batch_size=100)
        if not Message.objects.filter(status__in=ACTIVE_STATUSES).exists():
            break
        time.sleep(0.05)
    assert statuses() == {MessageStatus.SENT: 300}
    assert_one_sms_per_subscriber(megafon_provider, 300)
    assert max(megafon_provider.attempts.values()) > 1  # retries did happen
    assert Message.objects.filter(attempts__gt=1).exists()
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED


@pytest.mark.django_db
def test_rate_limit_is_applied_by_the_worker(megafon_provider, settings):
    crm = dict(settings.CRM_SMS)
    crm["PROVIDERS"] = {"default": {**crm["PROVIDERS"]["default"], "RATE_LIMIT": 20}}
    settings.CRM_SMS = crm
    make_contacts(15)
    outbox.send_campaign(Contact.objects.all(), "Hi")
    started = time.monotonic()
    outbox.dispatch_due(concurrency=8)
    elapsed = time.monotonic() - started
    assert statuses() == {MessageStatus.SENT: 15}
    assert elapsed >= 14 / 20 * 0.95  # 15 sends spaced at >= 1/20 s


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_two_worker_processes_never_send_a_message_twice(megafon_provider, worker_processes):
    megafon_provider.configure(latency_ms=25)
    make_contacts(400)
    outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    env = subprocess_env(megafon_provider)
    args = ["--once", "--concurrency", "8", "--batch-size", "25"]
    first, second = worker_processes(args, env), worker_processes(args, env)
    (code1, out1), (code2, out2) = first.wait(), second.wait()
    assert code1 == 0, out1
    assert code2 == 0, out2
    assert statuses() == {MessageStatus.SENT: 400}
    assert set(megafon_provider.attempts.values()) == {1}, "a message was sent twice"
    assert_one_sms_per_subscriber(megafon_provider, 400)
    # Both did a share of the work.
    shares = [int(re.search(r"Done: sent (\d+)", out).group(1)) for out in (out1, out2)]
    assert sum(shares) == 400 and min(shares) > 0, shares


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_nobody_gets_two_sms(
    megafon_provider, worker_processes, settings
):
    """SIGKILL in the middle of a batch leaves rows 'sending'; after CLAIM_TIMEOUT they are
    taken back and resent with the same msg_id: the provider answers 20102 for those it
    already had, so they are 'sent' and nobody gets a second SMS."""
    megafon_provider.configure(latency_ms=150)
    make_contacts(120)
    outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    worker = worker_processes(
        ["--concurrency", "8", "--batch-size", "40"], subprocess_env(megafon_provider)
    )
    assert wait_until(lambda: len(megafon_provider.accepted) >= 20, timeout=20)
    worker.kill()
    in_sending = Message.objects.filter(status=MessageStatus.SENDING).count()
    assert in_sending > 0, "the kill was supposed to land mid-batch"
    settings.CRM_SMS = {**settings.CRM_SMS, "CLAIM_TIMEOUT": 0.2}
    megafon_provider.configure(latency_ms=0)
    # Wait for conditions, not for a time: the claims are older than CLAIM_TIMEOUT, and the
    # sandbox has answered what the dead worker sent (each request accepts a new msg_id; a
    # request cut off mid-body is never accepted: then give up waiting after 10 s).
    assert wait_until(lambda: not claimed_since(timezone.now() - timedelta(seconds=0.2)))
    wait_until(lambda: len(megafon_provider.accepted) == len(megafon_provider.requests), 10)
    accepted_before = set(megafon_provider.accepted)
    summary = outbox.dispatch_due(concurrency=16)
    assert summary["sent"] > 0
    assert statuses() == {MessageStatus.SENT: 120}
    assert_one_sms_per_subscriber(megafon_provider, 120)
    resent = [m for m, n in megafon_provider.attempts.items() if n > 1]
    assert resent and set(resent) <= accepted_before  # the 20102 answers
    assert Message.objects.filter(events__description__icontains="claim expired").exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_sigterm_finishes_requests_in_flight_and_gives_back_the_rest(
    megafon_provider, worker_processes
):
    megafon_provider.configure(latency_ms=300)
    make_contacts(100)
    outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    worker = worker_processes(
        ["--concurrency", "4", "--batch-size", "50"], subprocess_env(megafon_provider)
    )
    assert wait_until(lambda: len(megafon_provider.accepted) >= 4, timeout=20)
    worker.signal(signal.SIGTERM)
    code, out = worker.wait(timeout=15)
    assert code == 0, out
    assert "Stopping" in out
    counts = statuses()
    assert counts[MessageStatus.SENDING] == 0
    assert counts[MessageStatus.QUEUED] > 0  # given back
    # Every request the provider saw has its result stored.
    sent = set(Message.objects.filter(status=MessageStatus.SENT).values_list("msg_id", flat=True))
    assert sent == set(megafon_provider.accepted)
    assert counts[MessageStatus.SENT] + counts[MessageStatus.QUEUED] == 100
    campaign = Campaign.objects.get()
    assert campaign.status == CampaignStatus.RUNNING


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_wrong_password_pauses_a_worker_process_and_resume_continues(
    megafon_provider, worker_processes
):
    make_contacts(50)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    env = subprocess_env(megafon_provider)  # the worker keeps password "test"
    megafon_provider.configure(password="changed")  # ... which the provider now refuses
    code, out = worker_processes(["--once", "--concurrency", "16"], env).wait()
    assert code == 0, out
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.PAUSED
    assert campaign.pause_reason
    assert len(megafon_provider.requests) <= 3
    assert statuses() == {MessageStatus.QUEUED: 50}
    megafon_provider.configure(password="test")
    outbox.resume_campaign(campaign)
    code, out = worker_processes(["--once"], env).wait()
    assert code == 0, out
    assert statuses() == {MessageStatus.SENT: 50}
    assert_one_sms_per_subscriber(megafon_provider, 50)


@pytest.mark.django_db(transaction=True)
def test_postgres_claims_skip_rows_locked_by_another_worker(requires_postgres, locmem_provider):
    """PostgreSQL: a second claimer skips rows another transaction holds (SKIP LOCKED)."""
    import threading

    from django.db import connections, transaction

    for i in range(10):
        outbox.send_sms(f"+7900123420{i}", "x")
    locked = threading.Event()
    release = threading.Event()

    def hold_five():
        with transaction.atomic():
            list(Message.objects.select_for_update().order_by("pk")[:5])
            locked.set()
            release.wait(10)
        connections.close_all()

    holder = threading.Thread(target=hold_five)
    holder.start()
    try:
        assert locked.wait(10)
        claimed = outbox.claim_due_messages(10)
        assert len(claimed) == 5
        assert min(m.pk for m in claimed) > min(Message.objects.values_list("pk", flat=True))
    finally:
        release.set()
        holder.join()


@pytest.mark.django_db(transaction=True)
def test_a_database_error_does_not_stop_a_running_worker(locmem_provider, monkeypatch):
    """A long-running worker logs a failed write, waits and writes the results again."""
    import threading

    from django.db import OperationalError

    for i in range(3):
        outbox.send_sms(f"+7900123420{i}", "x")
    stop = threading.Event()
    calls = []
    original = results.write_results

    def flaky(jobs, summary, gates):
        calls.append(len(jobs))
        if len(calls) == 1:
            raise OperationalError("database is locked")
        original(jobs, summary, gates)
        stop.set()

    monkeypatch.setattr(results, "write_results", flaky)
    summary = outbox.run_worker(stop=stop)
    assert len(calls) == 2 and calls[0] == calls[1] == 3
    assert summary.sent == 3
    assert statuses() == {MessageStatus.SENT: 3}
    assert len(locmem_provider) == 3  # sent once, written on the second try


@pytest.mark.slow
def test_the_benchmarks_run_and_print_json():
    """Smoke test of bench/throughput.py and bench/ratelimit.py on tiny loads (a temporary
    SQLite database each)."""
    import json
    import os
    import subprocess
    import sys

    from tests.fixtures_outbox import ROOT

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_URL", "SMS_"))}

    def bench(*args: str) -> dict:
        command = [sys.executable, *args]
        done = subprocess.run(
            command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120, check=True
        )
        return json.loads(done.stdout)

    result = bench("bench/throughput.py", "-n", "60", "--rounds", "1", "--in-process")
    assert result["worker_runs"][0]["sent"] == 60
    assert result["worker_rate_at_sandbox"] > 0 and result["ratio"] > 0
    # The worker and the plain client in processes of their own: their CPU per message too.
    cpu = bench("bench/throughput.py", "-n", "60", "--rounds", "1")["cpu_ms_per_message"]
    assert cpu["worker"]["process"] > 0 and cpu["plain_client"]["process"] > 0
    result = bench("bench/ratelimit.py", "--limit", "40", "-n", "50")
    assert result["sent"] == 50
    assert result["max_in_any_1s"] <= 40
