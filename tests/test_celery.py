"""Celery: the tasks, the beat schedule, and a real worker process sending a campaign."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import tempfile

import pytest

from crm_sms import outbox
from crm_sms.models import CampaignStatus, Contact, Message, MessageStatus
from tests.fixtures_outbox import ROOT, make_contacts, subprocess_env, wait_until

celery = pytest.importorskip("celery")

# This area's Redis database for the broker (see the brief: DBs 1-4).
BROKER_URL = "redis://127.0.0.1:6379/2"


def test_the_app_and_beat_schedule():
    from config import celery_app

    assert celery_app is not None and celery_app.main == "config"
    tasks = {entry["task"] for entry in celery_app.conf.beat_schedule.values()}
    assert tasks == {
        "crm_sms.tasks.dispatch_due",
        "crm_sms.tasks.release_stale_claims",
        "crm_sms.tasks.start_due_campaigns",
        "crm_sms.tasks.poll_statuses",
    }
    schedule = {e["task"]: e["schedule"] for e in celery_app.conf.beat_schedule.values()}
    assert schedule["crm_sms.tasks.dispatch_due"] <= 10
    assert schedule["crm_sms.tasks.poll_statuses"] == 60
    import crm_sms.tasks  # what autodiscover_tasks() imports in a worker

    assert crm_sms.tasks.dispatch_due.name in celery_app.tasks


@pytest.mark.django_db
def test_tasks_call_the_library(locmem_provider):
    from crm_sms import tasks

    outbox.send_sms("+79001234212", "Hi")
    summary = tasks.dispatch_due.apply().get()
    assert summary["sent"] == 1
    assert tasks.release_stale_claims.apply().get() == 0
    assert tasks.start_due_campaigns.apply().get() == 0


@pytest.mark.django_db
def test_poll_statuses_task_is_lazy_about_the_polling_module(monkeypatch, caplog):
    from crm_sms import tasks

    calls = []

    class FakePolling:
        @staticmethod
        def poll_statuses(provider=None, batch_size=500):
            calls.append((provider, batch_size))
            return {"polled": 0}

    real_import = tasks.importlib.import_module
    monkeypatch.setattr(
        tasks.importlib,
        "import_module",
        lambda name: FakePolling if name == "crm_sms.polling" else real_import(name),
    )
    assert tasks.poll_statuses.apply(kwargs={"provider": "x"}).get() == {"polled": 0}
    assert calls == [("x", 500)]

    def missing(name):
        raise ImportError("No module named 'crm_sms.polling'")

    monkeypatch.setattr(tasks.importlib, "import_module", missing)
    with caplog.at_level(logging.WARNING, logger="crm_sms.tasks"):
        assert tasks.poll_statuses.apply().get() is None
    assert "not available" in caplog.text


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_celery_worker_with_beat_sends_a_campaign(megafon_provider, redis_url):
    """``celery -A config worker -B`` on this machine's Redis, sharing the test database:
    beat's dispatch task sends the whole campaign to the sandbox."""
    import redis

    redis.Redis.from_url(BROKER_URL).flushdb()
    make_contacts(60)
    campaign = outbox.send_campaign(Contact.objects.all(), "Hi {{ first_name }}")
    schedule = os.path.join(tempfile.mkdtemp(prefix="crm-sms-beat-"), "schedule")
    env = subprocess_env(megafon_provider, CELERY_BROKER_URL=BROKER_URL, SMS_DISPATCH_EVERY="0.5")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-B",
            "-s",
            schedule,
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        done = wait_until(
            lambda: not Message.objects.exclude(status=MessageStatus.SENT).exists(), timeout=25
        )
    finally:
        proc.terminate()
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            out, _ = proc.communicate()
    assert done, out[-3000:]
    assert len(megafon_provider.accepted) == 60
    assert set(megafon_provider.attempts.values()) == {1}
    assert "crm_sms.tasks.dispatch_due" in out
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.COMPLETED
