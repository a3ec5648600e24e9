"""``crm_sms.asgi``: queued delivery reports taken in the event loop, everything else by Django.

The application is called through the ASGI interface a server calls (scope, receive, send), in
one event loop per test, on PostgreSQL (its queue connection is its own, so the tests commit:
``transactional_db``); the last test serves it with gunicorn's uvicorn workers, as in
production, and applies the queue with ``manage.py sms_reports``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from crm_sms import inbox
from crm_sms.asgi import CallbackApplication, QueueWriter
from crm_sms.models import Message, MessageEvent, MessageStatus, QueuedReport
from tests.fixtures_outbox import ROOT
from tests.test_report_inbox import (
    closed_port,
    create_sent_messages,
    manage,
    scratch_database,
)
from tests.test_report_queue import queued_settings

S = MessageStatus
TOKEN = "asgi-token-0123456789abcdef"
CALLBACK = f"/sms/callback/default/{TOKEN}/"
RECEIPT = "id:1 sub:001 dlvrd:001 submit date:2311291159 done date:2311291200 stat:DELIVRD err:000"

pytestmark = pytest.mark.postgres


@pytest.fixture
def queued(settings, tmp_path, requires_postgres, transactional_db):
    """MegaFon as the default provider (never contacted), reports queued, on PostgreSQL."""
    settings.CRM_SMS = queued_settings(TOKEN, tmp_path / "spool")
    settings.ALLOWED_HOSTS = ["127.0.0.1"]
    return settings


def report(msg_id: str, status: str = "delivered") -> bytes:
    short = RECEIPT if status == "delivered" else "stat:UNDELIV err:001"
    return json.dumps({"msg_id": msg_id, "status": status, "short_message": short}).encode()


def sent_message(phone: str = "+79001234212") -> Message:
    return Message.objects.create(phone=phone, text="Hi", provider="default", status=S.SENT)


async def request(
    app, method: str, path: str, body: bytes = b"", host: str = "127.0.0.1"
) -> tuple[int, dict[str, str], bytes]:
    """(status, headers, body) of one request, as a server would make it."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", host.encode()),
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 80),
    }
    incoming = [{"type": "http.request", "body": body, "more_body": False}]
    sent: list[dict] = []

    async def receive():
        if incoming:
            return incoming.pop(0)
        await asyncio.Event().wait()  # the client stays connected

    async def send(message):
        sent.append(message)

    await app(scope, receive, send)
    start = next(m for m in sent if m["type"] == "http.response.start")
    headers = {k.decode().lower(): v.decode() for k, v in start["headers"]}
    content = b"".join(m.get("body", b"") for m in sent if m["type"] == "http.response.body")
    return start["status"], headers, content


def run(scenario):
    """Run ``scenario(app)`` in a new event loop, closing the app's connection after it."""
    app = CallbackApplication()

    async def main():
        try:
            return await scenario(app)
        finally:
            await app.aclose()

    return asyncio.run(main())


def test_a_report_is_queued_committed_and_applied_once(queued):
    message = sent_message()

    async def scenario(app):
        return await request(app, "POST", CALLBACK, report(message.msg_id))

    status, headers, content = run(scenario)
    assert (status, content) == (200, b"OK")
    assert headers["content-length"] == "2"
    row = QueuedReport.objects.get()
    assert (row.provider, row.source, row.error) == ("default", "callback", "")
    [queued_report] = json.loads(row.reports)
    assert queued_report["msg_id"] == message.msg_id
    assert queued_report["status"] == "delivered"
    assert queued_report["delivered_at"].startswith("2023-11-29T12:00")
    message.refresh_from_db()
    assert message.status == S.SENT  # queued, not applied yet

    inbox.apply_queued_reports()
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert MessageEvent.objects.filter(message=message).count() == 1
    assert not QueuedReport.objects.exists()


def test_concurrent_reports_share_inserts_and_each_is_answered_after_its_commit(queued):
    messages = [sent_message(f"+7900123{i:04d}") for i in range(60)]

    async def scenario(app):
        answers = await asyncio.gather(
            *(request(app, "POST", CALLBACK, report(m.msg_id)) for m in messages),
            *(request(app, "POST", CALLBACK, report(m.msg_id)) for m in messages[:20]),
        )
        writer = app._writer()
        return answers, writer.batches, writer.rows

    answers, batches, rows = run(scenario)
    assert [(status, content) for status, _, content in answers] == [(200, b"OK")] * 80
    assert rows == 80 and batches < 80  # several rows per INSERT
    assert QueuedReport.objects.count() == 80
    counts = inbox.apply_queued_reports()
    assert counts["rows"] == 80
    assert Message.objects.filter(status=S.DELIVERED).count() == 60
    assert MessageEvent.objects.count() == 60  # the repeats changed nothing


@pytest.mark.parametrize(
    "path, status",
    [
        (f"/sms/callback/default/wrong-{TOKEN}/", 404),
        (f"/sms/callback/nobody/{TOKEN}/", 404),
    ],
)
def test_wrong_token_or_provider_is_404_and_nothing_is_queued(queued, path, status):
    message = sent_message()

    async def scenario(app):
        return await request(app, "POST", path, report(message.msg_id))

    assert run(scenario)[0] == status
    assert not QueuedReport.objects.exists()


def test_malformed_and_oversized_reports_are_refused_without_a_row(queued):
    queued.CRM_SMS = {**queued.CRM_SMS, "CALLBACK_MAX_BYTES": 1000}

    async def scenario(app):
        return (
            await request(app, "POST", CALLBACK, b"{not json"),
            await request(app, "POST", CALLBACK, b'{"status": "delivered"}'),
            await request(app, "POST", CALLBACK, b'{"msg_id": "' + b"x" * 2000 + b'"}'),
        )

    not_json, no_msg_id, too_large = run(scenario)
    assert not_json[0] == 400 and b"Malformed report" in not_json[2]
    assert no_msg_id[0] == 400 and b"without msg_id" in no_msg_id[2]
    assert too_large[0] == 413 and b"1000 bytes" in too_large[2]
    assert not QueuedReport.objects.exists()


def test_a_host_outside_allowed_hosts_is_400(queued):
    message = sent_message()

    async def scenario(app):
        return await request(app, "POST", CALLBACK, report(message.msg_id), host="evil.example")

    assert run(scenario)[0] == 400
    assert not QueuedReport.objects.exists()


def test_django_answers_everything_else(queued):
    async def scenario(app):
        return (
            await request(app, "GET", CALLBACK),
            await request(app, "GET", "/admin/login/"),
        )

    get_callback, login = run(scenario)
    assert get_callback[0] == 405  # the view's require_POST
    assert login[0] == 200 and b"csrfmiddlewaretoken" in login[2]


def test_direct_mode_is_left_to_django_which_applies_the_report_at_once(queued):
    queued.CRM_SMS = {**queued.CRM_SMS, "REPORTS": "direct"}
    message = sent_message()

    async def scenario(app):
        return await request(app, "POST", CALLBACK, report(message.msg_id))

    assert run(scenario)[0] == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert not QueuedReport.objects.exists()


def test_an_https_redirect_is_left_to_django(queued):
    queued.SECURE_SSL_REDIRECT = True
    message = sent_message()

    async def scenario(app):
        return await request(app, "POST", CALLBACK, report(message.msg_id))

    status, headers, _ = run(scenario)
    assert status == 301 and headers["location"].startswith("https://127.0.0.1/")
    assert not QueuedReport.objects.exists()


def test_database_away_spools_the_report_answers_200_and_it_is_applied_later(queued, tmp_path):
    message = sent_message()
    away = {"host": "127.0.0.1", "port": closed_port(), "dbname": "x", "user": "postgres"}

    async def scenario(app):
        app._writers[asyncio.get_running_loop()] = QueueWriter(away)
        return await request(app, "POST", CALLBACK, report(message.msg_id))

    status, _, content = run(scenario)
    assert (status, content) == (200, b"OK")
    assert not QueuedReport.objects.exists()
    assert len(list((tmp_path / "spool").glob("*.jsonl"))) == 1
    assert inbox.drain_spool()["files"] == 1
    message.refresh_from_db()
    assert message.status == S.DELIVERED


def test_the_spool_refusing_too_answers_500(queued, tmp_path):
    (tmp_path / "spool").write_text("a file where the directory should be")
    away = {"host": "127.0.0.1", "port": closed_port(), "dbname": "x", "user": "postgres"}
    message = sent_message()

    async def scenario(app):
        app._writers[asyncio.get_running_loop()] = QueueWriter(away)
        return await request(app, "POST", CALLBACK, report(message.msg_id))

    status, _, content = run(scenario)
    assert status == 500 and b"retry" in content


def free_port() -> socket.socket:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(64)
    return listener


@pytest.mark.slow
def test_gunicorn_with_uvicorn_workers_takes_reports_that_sms_reports_applies(
    requires_postgres, tmp_path
):
    import requests

    name = f"crm_sms_asgi_{os.getpid()}"
    with scratch_database(name, tmp_path / "spool") as (_admin, env):
        env.update(SMS_CALLBACK_TOKEN=TOKEN, SMS_REPORTS="queued", DEBUG="0")
        env["SECRET_KEY"] = "asgi-test-secret-key-not-for-production-0123456789-abcdefghij"
        msg_ids = create_sent_messages(env, "+7900123431")
        listener = free_port()
        command = [
            str(Path(sys.executable).with_name("gunicorn")),
            "config.asgi",
            "--worker-class",
            "uvicorn_worker.UvicornWorker",
            "--workers",
            "2",
            "--bind",
            f"fd://{listener.fileno()}",
            "--log-level",
            "warning",
        ]
        server = subprocess.Popen(command, cwd=ROOT, env=env, pass_fds=(listener.fileno(),))
        base = f"http://127.0.0.1:{listener.getsockname()[1]}"
        try:
            for _ in range(300):  # until gunicorn answers
                try:
                    requests.get(base + "/admin/login/", timeout=10)
                    break
                except requests.ConnectionError:
                    time.sleep(0.1)
            answers = [requests.post(base + CALLBACK, data=report(m), timeout=10) for m in msg_ids]
            repeat = requests.post(base + CALLBACK, data=report(msg_ids[0]), timeout=10)
            wrong = requests.post(base + CALLBACK.replace(TOKEN, "x"), data=b"{}", timeout=10)
            login = requests.get(base + "/admin/login/", timeout=10)
        finally:
            server.terminate()
            server.wait(timeout=30)
            listener.close()
        assert [(a.status_code, a.content) for a in answers] == [(200, b"OK")] * 3
        assert (repeat.status_code, wrong.status_code, login.status_code) == (200, 404, 200)
        applied = json.loads(manage(env, "sms_reports", "--once", "--json").splitlines()[-1])
        assert (applied["rows"], applied["broken"]) == (4, 0)
        check = "from crm_sms.models import Message as M, MessageEvent as E, QueuedReport "
        check += "as Q; print(sorted(M.objects.values_list('status', flat=True)), "
        check += "E.objects.count(), Q.objects.count())"
        assert manage(env, "shell", "-v", "0", "-c", check).strip() == (
            "['delivered', 'delivered', 'delivered'] 3 0"
        )
