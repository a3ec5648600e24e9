"""Delivery reports received while the database is away are kept and applied later (issue 10,
point 10): MegaFon cannot be asked for a status, so a report is lost if we answer 500 three times.

The callback view spools the parsed reports to a file (``crm_sms.inbox``) when applying them
raises OperationalError/InterfaceError, answers 200, and the worker's housekeeping or
``manage.py sms_status`` applies the files once the database is back. The outages here are real:
a closed port (PostgreSQL), a missing table (SQLite), and a live gunicorn whose PostgreSQL
database is renamed away under it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import OperationalError, connection
from django.urls import reverse

from crm_sms import inbox
from crm_sms.backends.base import DeliveryReport
from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.outbox import Outbox
from crm_sms.signals import message_status_changed

S = MessageStatus
TOKEN = "inbox-token-0123456789abcdef"
ROOT = Path(__file__).resolve().parent.parent
RECEIPT = "id:1 sub:001 dlvrd:001 submit date:2311291159 done date:2311291200 stat:DELIVRD err:000"


@pytest.fixture
def spool(settings, tmp_path) -> Path:
    """MegaFon as the default provider (never contacted) and a spool directory of the test's."""
    directory = tmp_path / "spool"
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {
                "BACKEND": "crm_sms.backends.megafon.MegafonBackend",
                "OPTIONS": {"login": "u", "password": "p", "base_url": "http://127.0.0.1:9"},
            }
        },
        "CALLBACK_TOKEN": TOKEN,
        "REPORT_SPOOL_DIR": str(directory),
    }
    return directory


def post(client, body):
    url = reverse("crm_sms:callback", kwargs={"provider": "default", "token": TOKEN})
    return client.post(url, json.dumps(body), content_type="application/json")


def report(msg_id: str, status: str = "delivered") -> dict:
    short = RECEIPT if status == "delivered" else "stat:UNDELIV err:001"
    return {"msg_id": msg_id, "status": status, "short_message": short}


def sent_message(phone: str = "+79001234212") -> Message:
    return Message.objects.create(phone=phone, text="Hi", provider="default", status=S.SENT)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nobody listens once it is closed


@contextlib.contextmanager
def database_away():
    """Make the database unreachable for this process, for real: PostgreSQL's connection goes
    to a closed port (psycopg: connection refused); SQLite (one in-memory database that cannot
    be closed) loses the message table (sqlite3: no such table). Both are OperationalError."""
    if connection.vendor == "postgresql":
        saved = dict(connection.settings_dict)
        connection.close()
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(closed_port()))
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)
    else:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE crm_sms_message RENAME TO crm_sms_message_away")
        try:
            yield
        finally:
            with connection.cursor() as cursor:
                cursor.execute("ALTER TABLE crm_sms_message_away RENAME TO crm_sms_message")


def test_database_away_spools_answers_200_and_the_worker_applies_it_when_back(
    spool, transactional_db, client, caplog
):
    message = sent_message()
    with database_away(), caplog.at_level(logging.WARNING, logger="crm_sms"):
        response = post(client, [report(message.msg_id)])
    assert response.status_code == 200
    assert response.content == b"OK"  # MegaFon stops repeating it: it is ours now
    [path] = inbox.spooled_files()
    assert "database is unavailable" in caplog.text and path.name in caplog.text
    assert not any(r.exc_info for r in caplog.records)  # one line, no traceback

    message.refresh_from_db()
    assert message.status == S.SENT  # not applied yet
    Outbox(concurrency=1).run(once=True)  # its housekeeping drains the spool
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    event = message.events.get()
    assert (event.source, event.old_status, event.new_status) == ("callback", "sent", "delivered")
    assert event.payload["msg_id"] == message.msg_id
    assert inbox.spooled_files() == [] and list(spool.iterdir()) == []


def test_sms_status_applies_the_spool(spool, transactional_db, client):
    from io import StringIO

    from django.core.management import call_command

    message = sent_message()
    with database_away():
        assert post(client, [report(message.msg_id, "delivery_failed")]).status_code == 200
    out = StringIO()
    call_command("sms_status", stdout=out)
    assert "Applied 1 spooled report file(s)" in out.getvalue()
    message.refresh_from_db()
    assert (message.status, message.error_code) == (S.UNDELIVERED, "UNDELIV")
    assert inbox.spooled_files() == []


def test_drain_while_the_database_is_still_away_keeps_the_files(spool, transactional_db, client):
    message = sent_message()
    with database_away():
        post(client, [report(message.msg_id)])
        with pytest.raises(OperationalError):
            inbox.drain_spool()
        assert len(inbox.spooled_files()) == 1
    assert inbox.drain_spool()["applied"] == 1


def test_spooled_reports_stay_idempotent_and_order_proof(spool, transactional_db, client):
    """Reports kept during the outage arrive after newer ones applied directly: no second
    event, no status moved back."""
    message = sent_message()
    with database_away():
        post(client, [report(message.msg_id, "sent")])
        post(client, [report(message.msg_id)])
    assert post(client, [report(message.msg_id)]).status_code == 200  # the provider's repeat
    counts = inbox.drain_spool()
    assert (counts["files"], counts["stale"], counts["duplicate"]) == (2, 1, 1)
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.events.count() == 1


def test_spool_file_is_complete_private_and_fsynced(spool, db, monkeypatch):
    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real_fsync(fd))
    path = inbox.spool_reports(
        [DeliveryReport("delivered", msg_id="m" * 16, raw={"x": "\u0000"})], provider="default"
    )
    assert len(synced) == 2  # the file, then the directory (the rename)
    assert path.parent == spool and path.suffix == ".jsonl"
    assert [p.name for p in spool.iterdir()] == [path.name]  # no temporary file left
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(spool.stat().st_mode) == 0o700
    [line] = path.read_text().splitlines()
    data = json.loads(line)
    assert (data["v"], data["provider"], data["source"]) == (1, "default", "callback")
    assert data["report"]["raw"] == {"x": ""}  # cleaned before it is written
    assert data["received_at"]


def test_broken_file_is_set_aside_and_the_others_applied(spool, transactional_db, caplog):
    message = sent_message()
    inbox.spool_reports([DeliveryReport("delivered", msg_id=message.msg_id)], provider="default")
    broken = spool / "00000000000000000000-1-garbage.jsonl"  # sorts first
    broken.write_text('{"v": 1, "provider": "default"\n')
    with caplog.at_level(logging.ERROR, logger="crm_sms.inbox"):
        counts = inbox.drain_spool()
    assert (counts["files"], counts["broken"], counts["applied"]) == (1, 1, 1)
    assert [p.name for p in spool.iterdir()] == [broken.name + ".broken"]
    [line] = [r.getMessage() for r in caplog.records]
    assert broken.name in line and "set aside" in line
    message.refresh_from_db()
    assert message.status == S.DELIVERED


def test_file_that_fails_to_apply_is_set_aside_alone(spool, transactional_db, caplog):
    """Files are applied several at a time; one whose reports raise is isolated."""
    good, bad = sent_message(), sent_message("+79001234213")

    def receiver(sender, message, **kwargs):
        if message.pk == bad.pk:
            raise RuntimeError("a receiver's bug")

    for message in (good, bad):
        inbox.spool_reports(
            [DeliveryReport("delivered", msg_id=message.msg_id)], provider="default"
        )
    message_status_changed.connect(receiver, sender=Message, dispatch_uid="inbox-test")
    try:
        counts = inbox.drain_spool()
    finally:
        message_status_changed.disconnect(sender=Message, dispatch_uid="inbox-test")
    assert (counts["files"], counts["broken"]) == (1, 1)
    assert len(list(spool.glob("*.broken"))) == 1 and inbox.spooled_files() == []
    good.refresh_from_db()
    bad.refresh_from_db()
    assert (good.status, bad.status) == (S.DELIVERED, S.SENT)


def test_a_file_another_drainer_holds_is_left_alone(spool, transactional_db):
    fcntl = pytest.importorskip("fcntl")
    message = sent_message()
    path = inbox.spool_reports(
        [DeliveryReport("delivered", msg_id=message.msg_id)], provider="default"
    )
    with open(path, "rb") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert inbox.drain_spool()["files"] == 0
    assert inbox.drain_spool()["files"] == 1
    assert MessageEvent.objects.count() == 1


def test_stale_temporary_files_are_removed(spool, db):
    spool.mkdir()
    old, fresh = spool / ".tmp-old.jsonl.part", spool / ".tmp-fresh.jsonl.part"
    for path in (old, fresh):
        path.write_text("partial")
    long_ago = time.time() - inbox.STALE_TMP_AGE - 10
    os.utime(old, (long_ago, long_ago))
    inbox.drain_spool()
    assert sorted(p.name for p in spool.iterdir()) == [fresh.name]


def test_spool_that_cannot_be_written_answers_500(spool, settings, transactional_db, client):
    """No database and no disk: the provider must retry, so 500."""
    blocker = spool.parent / "a-file"
    blocker.write_text("")
    settings.CRM_SMS = {**settings.CRM_SMS, "REPORT_SPOOL_DIR": str(blocker / "spool")}
    message = sent_message()
    with database_away():
        assert post(client, [report(message.msg_id)]).status_code == 500


def test_other_database_errors_are_not_spooled(spool, db, client, monkeypatch):
    """A bug of ours is not an outage: 500, so the provider repeats it after the fix."""
    from django.db import ProgrammingError

    def broken(*args, **kwargs):
        raise ProgrammingError("a bug")

    monkeypatch.setattr("crm_sms.reports.apply_delivery_reports", broken)
    assert post(client, [report("m" * 16)]).status_code == 500
    assert inbox.spooled_files() == []


# --- a new process drains what another one spooled -----------------------------------------


def site_environment(database_url: str, spool_dir: Path) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        DATABASE_URL=database_url,
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="1",
        SECURE_SSL_REDIRECT="0",
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SMS_URL="megafon+http://u:p@127.0.0.1:9/?sender=Test",
        SMS_CALLBACK_TOKEN=TOKEN,
        SMS_REPORT_SPOOL_DIR=str(spool_dir),
        SMS_LOG_LEVEL="WARNING",
    )
    return env


def manage(env: dict[str, str], *args: str) -> str:
    done = subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_spool_survives_a_restart_a_new_process_applies_it(
    requires_postgres, spool, transactional_db, client
):
    message = sent_message()
    with database_away():
        assert post(client, [report(message.msg_id)]).status_code == 200
    settings_dict = connection.settings_dict
    url = (
        f"postgres://{settings_dict['USER']}@{settings_dict['HOST'] or '127.0.0.1'}:"
        f"{settings_dict['PORT'] or 5432}/{settings_dict['NAME']}"
    )
    out = manage(site_environment(url, spool), "sms_status")
    assert "Applied 1 spooled report file(s)" in out
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.events.count() == 1
    assert inbox.spooled_files() == []


# --- a real outage: a live server whose database is renamed away ---------------------------


def admin_connection():
    import psycopg

    params = connection.settings_dict
    return psycopg.connect(
        host=params["HOST"] or "127.0.0.1",
        port=params["PORT"] or 5432,
        user=params["USER"] or "postgres",
        password=params["PASSWORD"] or None,
        dbname="postgres",
        autocommit=True,
    )


def rename_database(admin, old: str, new: str) -> None:
    """Rename ``old`` (throwing its sessions out first; a reconnecting server may need a few
    tries). Without its database the site's every connection fails: a real outage."""
    import psycopg

    for _ in range(100):
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (old,),
        )
        try:
            admin.execute(f'ALTER DATABASE "{old}" RENAME TO "{new}"')
            return
        except psycopg.errors.ObjectInUse:
            time.sleep(0.05)
    raise AssertionError(f"could not rename {old}")


@contextlib.contextmanager
def live_site(env: dict[str, str]):
    """gunicorn serving config.wsgi on a loopback socket bound here; yields the callback URL."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    port = listener.getsockname()[1]
    command = [str(Path(sys.executable).with_name("gunicorn")), "config.wsgi", "--workers", "1"]
    command += ["--bind", f"fd://{listener.fileno()}", "--log-level", "warning"]
    server = subprocess.Popen(
        command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),), stderr=subprocess.PIPE
    )
    url = f"http://127.0.0.1:{port}/sms/callback/default/{TOKEN}/"
    try:
        yield url, server
    finally:
        server.terminate()
        server.wait(timeout=30)
        listener.close()


def post_live(url: str, body) -> tuple[int, bytes]:
    import requests

    for _ in range(100):  # until gunicorn answers
        try:
            response = requests.post(url, json=body, timeout=10)
            return response.status_code, response.content
        except requests.ConnectionError:
            time.sleep(0.1)
    raise AssertionError("the site did not come up")


@contextlib.contextmanager
def scratch_database(name: str, spool_dir: Path, *, also_drop: tuple[str, ...] = ()):
    """A database ``name`` of its own on the test server, migrated: yields (an admin
    connection, the site's environment for it); dropped afterwards, with ``also_drop``."""
    params = connection.settings_dict
    url = f"postgres://{params['USER'] or 'postgres'}@{params['HOST'] or '127.0.0.1'}:"
    url += f"{params['PORT'] or 5432}/{name}"
    env = site_environment(url, spool_dir)
    with admin_connection() as admin:
        for database in (name, *also_drop):
            admin.execute(f'DROP DATABASE IF EXISTS "{database}"')
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            manage(env, "migrate", "--noinput", "-v", "0")
            yield admin, env
        finally:
            for database in (name, *also_drop):
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s",
                    (database,),
                )
                admin.execute(f'DROP DATABASE IF EXISTS "{database}"')


def create_sent_messages(env: dict[str, str], phone_prefix: str, count: int = 3) -> list[str]:
    """``count`` sent MegaFon messages made by a process on ``env``'s database; their msg_ids."""
    created = "import json; from crm_sms.models import Message as M; print(json.dumps("
    created += f"[M.objects.create(phone=f'{phone_prefix}{{i}}', text='Hi', provider='default',"
    created += f" status='sent').msg_id for i in range({count})]))"
    return json.loads(manage(env, "shell", "-v", "0", "-c", created))


@pytest.mark.slow
def test_real_outage_a_live_site_keeps_reports_until_the_database_is_back(
    requires_postgres, tmp_path
):
    name = f"crm_sms_outage_{os.getpid()}"
    database = scratch_database(name, tmp_path / "spool", also_drop=(f"{name}_away",))
    with database as (admin, env):
        first, second, third = create_sent_messages(env, "+7900123421")
        with live_site(env) as (callback_url, server):
            assert post_live(callback_url, [report(first)]) == (200, b"OK")  # applied now
            rename_database(admin, name, f"{name}_away")
            assert post_live(callback_url, [report(second)]) == (200, b"OK")
            assert post_live(callback_url, [report(third, "delivery_failed")]) == (200, b"OK")
            assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 2
            rename_database(admin, f"{name}_away", name)
        # The server is gone; a new process applies what it kept.
        assert "Applied 2 spooled report file(s)" in manage(env, "sms_status")
        check = "from crm_sms.models import Message as M, MessageEvent as E; "
        check += "print(sorted((m.msg_id, m.status, m.events.count()) for m in M.objects.all()))"
        assert manage(env, "shell", "-v", "0", "-c", check).strip() == str(
            sorted([(first, "delivered", 1), (second, "delivered", 1),
                    (third, "undelivered", 1)])
        )  # fmt: skip
        assert list((tmp_path / "spool").iterdir()) == []
