"""Fixtures for the outbox (``crm_sms.outbox``): providers, contacts, and worker subprocesses.

Worker subprocesses (``manage.py sms_worker``, a Celery worker) must see the rows a test writes,
so those tests use ``transactional_db`` and a database a second process can open: on PostgreSQL
the test database itself; on SQLite a file. For SQLite this module therefore names the test
database as a file in a temporary directory (``django_db_modify_db_settings``), unless
``TEST_DATABASE_NAME`` already chose one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def django_db_modify_db_settings(django_db_modify_db_settings_parallel_suffix):
    """SQLite: a file test database (in a private temp dir) that subprocesses can share."""
    from django.conf import settings

    db = settings.DATABASES["default"]
    if db["ENGINE"] == "django.db.backends.sqlite3" and not db.get("TEST", {}).get("NAME"):
        directory = tempfile.mkdtemp(prefix="crm-sms-test-")
        db.setdefault("TEST", {})["NAME"] = os.path.join(directory, "test.sqlite3")


def database_url() -> str:
    """A DATABASE_URL for the test database this process uses now."""
    from django.db import connection

    sd = connection.settings_dict
    if connection.vendor == "sqlite":
        name = sd["NAME"]
        if "memory" in str(name):
            pytest.skip("an in-memory SQLite database cannot be shared with a subprocess")
        return f"sqlite:///{name}"
    if connection.vendor == "postgresql":
        user = quote(sd.get("USER") or "postgres", safe="")
        password = f":{quote(sd['PASSWORD'], safe='')}" if sd.get("PASSWORD") else ""
        host = sd.get("HOST") or "127.0.0.1"
        port = sd.get("PORT") or 5432
        return f"postgres://{user}{password}@{host}:{port}/{sd['NAME']}"
    pytest.skip(f"no subprocess support for {connection.vendor}")


@pytest.fixture
def outbox_settings(settings):
    """Fast retries for tests: RETRY_BACKOFF 0.01 s (max 0.05 s), MAX_ATTEMPTS 8."""
    crm_sms = dict(getattr(settings, "CRM_SMS", {}))
    crm_sms.update(
        {
            "RETRY_BACKOFF": 0.01,
            "RETRY_BACKOFF_MAX": 0.05,
            "MAX_ATTEMPTS": 8,
            "IDLE_SLEEP": 0.05,
            "PAUSE_AFTER": 3,
        }
    )
    settings.CRM_SMS = crm_sms
    return settings


@pytest.fixture
def locmem_provider(outbox_settings):
    """The default provider is the locmem backend (``crm_sms.backends.locmem.outbox``)."""
    crm_sms = dict(outbox_settings.CRM_SMS)
    crm_sms["PROVIDERS"] = {
        "default": {"BACKEND": "crm_sms.backends.locmem.LocmemBackend"},
        "other": {"BACKEND": "crm_sms.backends.dummy.DummyBackend"},
    }
    crm_sms["DEFAULT_PROVIDER"] = "default"
    outbox_settings.CRM_SMS = crm_sms
    from crm_sms.backends import locmem

    return locmem.outbox


def sandbox_provider_config(sandbox, **options) -> dict:
    from crm_sms.conf import parse_sms_url

    config = parse_sms_url(sandbox.sms_url())
    config["OPTIONS"].update(options)
    return config


def make_contacts(count: int, *, start: int = 0, **fields):
    """``count`` contacts with distinct valid Russian mobile numbers (+7900NNNNNNN, first_name
    "NameN", last_name "LastN"), inserted in bulk (``crm_sms.bulk``: the ORM is too slow for
    100,000 rows). The one contact factory of the tests (``contact_factory`` wraps it)."""
    from django.utils import timezone

    from crm_sms.bulk import RowInserter
    from crm_sms.models import Contact

    now = timezone.now()
    constants = {
        "middle_name": "",
        "email": "",
        "opted_out": False,
        "opted_out_at": None,
        "notes": "",
        "external_id": "",
        "created_at": now,
        "updated_at": now,
        **fields,
    }
    varying = [name for name in ("phone", "first_name", "last_name") if name not in constants]
    values = {
        "phone": lambda i: f"+7900{i:07d}",
        "first_name": lambda i: f"Name{i}",
        "last_name": lambda i: f"Last{i}",
    }
    inserter = RowInserter(Contact, constants, varying)
    numbers = range(start, start + count)
    inserter.insert(tuple(values[name](i) for name in varying) for i in numbers)
    first, last = f"+7900{start:07d}", f"+7900{start + count - 1:07d}"
    return Contact.objects.filter(phone__gte=first, phone__lte=last).order_by("pk")


def subprocess_env(sandbox=None, **extra: str) -> dict[str, str]:
    """The environment of a worker subprocess sharing this test's database (and sandbox)."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("SMS_", "DATABASE_URL", "CELERY_", "TEST_DATABASE"))
    }
    env.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DATABASE_URL=database_url(),
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        SMS_LOG_LEVEL="WARNING",
    )
    if sandbox is not None:
        env["SMS_URL"] = sandbox.sms_url() + "&read_timeout=0.5&connect_timeout=2"
    env.update(extra)
    return env


class WorkerProcess:
    """A ``manage.py sms_worker`` subprocess."""

    def __init__(self, args: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(
            [sys.executable, str(ROOT / "manage.py"), "sms_worker", *args],
            cwd=ROOT,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def signal(self, sig: int) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float = 30) -> tuple[int, str]:
        try:
            out, _ = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            out, _ = self.proc.communicate()
            raise AssertionError(f"the worker did not exit in {timeout} s:\n{out}") from None
        return self.proc.returncode, out

    def kill(self) -> None:
        """SIGKILL (no clean-up at all), then reap the process."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        if self.proc.stdout is not None and not self.proc.stdout.closed:
            self.proc.communicate()


@pytest.fixture
def worker_processes():
    """Start ``sms_worker`` subprocesses with ``start(args, env)``; all are killed afterwards."""
    started: list[WorkerProcess] = []

    def start(args: list[str], env: dict[str, str]) -> WorkerProcess:
        worker = WorkerProcess(args, env)
        started.append(worker)
        return worker

    yield start
    for worker in started:
        worker.kill()


def wait_until(predicate, timeout: float = 20.0, interval: float = 0.05) -> bool:
    """Poll ``predicate`` until it is true or ``timeout`` passes; returns its last value."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value or time.monotonic() > deadline:
            return value
        time.sleep(interval)
