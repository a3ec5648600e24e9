"""Delivery reports in bulk (issue 15, point 6): ``CRM_SMS["REPORTS"] = "queued"``.

The callback view stores a request's parsed, cleaned reports with one INSERT (a
``QueuedReport`` row, committed before the 200) and ``apply_queued_reports`` (``manage.py
sms_reports``, the worker's housekeeping) applies them in batches through
``apply_delivery_reports``, with its guarantees: idempotent, order-proof, one event per change.
A row is deleted in the transaction that applies it, so a crash in between loses nothing, and
two appliers never take one row (``SKIP LOCKED`` on PostgreSQL, one writer on SQLite).
"""

from __future__ import annotations

import contextlib
import json
import logging
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from django.core.exceptions import ImproperlyConfigured
from django.core.management import call_command
from django.db import OperationalError, connection
from django.urls import reverse

from crm_sms import conf, inbox
from crm_sms.backends.base import DeliveryReport
from crm_sms.models import Message, MessageEvent, MessageStatus, QueuedReport
from crm_sms.outbox import Outbox
from tests.fixtures_outbox import ROOT, subprocess_env

S = MessageStatus
TOKEN = "queue-token-0123456789abcdef"
RECEIPT = "id:1 sub:001 dlvrd:001 submit date:2311291159 done date:2311291200 stat:DELIVRD err:000"


def queued_settings(token: str, spool_dir: Path) -> dict:
    """``CRM_SMS``: MegaFon as the default provider (never contacted), reports queued."""
    return {
        "PROVIDERS": {
            "default": {
                "BACKEND": "crm_sms.backends.megafon.MegafonBackend",
                "OPTIONS": {"login": "u", "password": "p", "base_url": "http://127.0.0.1:9"},
            }
        },
        "CALLBACK_TOKEN": token,
        "REPORT_SPOOL_DIR": str(spool_dir),
        "REPORTS": "queued",
    }


@pytest.fixture
def queued(settings, tmp_path):
    """MegaFon as the default provider (never contacted), reports queued."""
    settings.CRM_SMS = queued_settings(TOKEN, tmp_path / "spool")
    return settings


def post(client, body):
    url = reverse("crm_sms:callback", kwargs={"provider": "default", "token": TOKEN})
    return client.post(url, json.dumps(body), content_type="application/json")


def megafon(msg_id: str, status: str = "delivered") -> dict:
    short = RECEIPT if status == "delivered" else "stat:UNDELIV err:001"
    return {"msg_id": msg_id, "status": status, "short_message": short}


def sent_messages(count: int = 1, status: str = S.SENT) -> list[Message]:
    return [
        Message.objects.create(
            phone=f"+7900123{i:04d}", text="Hi", provider="default", status=status
        )
        for i in range(count)
    ]


def queue(message: Message, status: str, **fields) -> None:
    inbox.queue_reports(
        [DeliveryReport(status, msg_id=message.msg_id, raw={"status": status}, **fields)],
        provider="default",
    )


def in_other_connection(function):
    """``function()`` run in a thread, so on a connection of its own (it sees committed rows
    only); its result."""
    result = []

    def run():
        try:
            result.append(function())
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return result[0]


# --- the view: parse, clean, one INSERT, answer ---------------------------------------------


def test_queued_end_to_end_post_200_applier_delivered_one_event(
    queued, transactional_db, client, django_assert_num_queries
):
    [message] = sent_messages()
    with django_assert_num_queries(1):  # no lookups: the INSERT only
        response = post(client, [megafon(message.msg_id)])
    assert (response.status_code, response.content) == (200, b"OK")
    # Committed before the answer: another connection sees the row.
    assert in_other_connection(QueuedReport.objects.count) == 1
    message.refresh_from_db()
    assert message.status == S.SENT and not message.events.exists()  # not applied yet

    counts = inbox.apply_queued_reports()
    assert (counts["rows"], counts["applied"], counts["broken"]) == (1, 1, 0)
    message.refresh_from_db()
    assert message.status == S.DELIVERED
    assert message.delivered_at is not None
    event = message.events.get()
    assert (event.source, event.old_status, event.new_status) == ("callback", "sent", "delivered")
    assert event.payload["short_message"] == RECEIPT  # the provider's raw report
    assert not QueuedReport.objects.exists()


def test_the_queued_row_holds_cleaned_reports(queued, db, client):
    """Cut to their columns before they are stored (``clean_report``), like every report."""
    body = [{"msg_id": "x" * 17, "status": "delivery_failed", "short_message": "a\x00b" * 10}]
    assert post(client, body).status_code == 200
    [item] = json.loads(QueuedReport.objects.get().reports)
    assert item["msg_id"] == ""  # longer than any msg_id of ours
    assert "\x00" not in json.dumps(item)
    assert item["status"] == "undelivered"


def test_direct_mode_is_unchanged(queued, db, client):
    queued.CRM_SMS = {**queued.CRM_SMS, "REPORTS": "direct"}
    [message] = sent_messages()
    assert post(client, [megafon(message.msg_id)]).status_code == 200
    message.refresh_from_db()
    assert message.status == S.DELIVERED  # at once, as before
    assert message.events.count() == 1
    assert not QueuedReport.objects.exists()


def test_the_setting_and_its_environment_variable(settings):
    settings.CRM_SMS = {}
    assert conf.report_mode() == "direct"  # the default
    env = conf.settings_from_env({"SMS_REPORTS": "Queued"})
    settings.CRM_SMS = env
    assert conf.report_mode() == "queued"
    settings.CRM_SMS = {"REPORTS": "later"}
    with pytest.raises(ImproperlyConfigured, match="SMS_REPORTS"):
        conf.report_mode()


@contextlib.contextmanager
def queue_table_away():
    """The queue cannot be written, for real: PostgreSQL's connection goes to a closed port,
    SQLite loses the queue table (both OperationalError)."""
    if connection.vendor == "postgresql":
        saved = dict(connection.settings_dict)
        connection.close()
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        connection.settings_dict.update(HOST="127.0.0.1", PORT=str(port))
        try:
            yield
        finally:
            connection.close()
            connection.settings_dict.clear()
            connection.settings_dict.update(saved)
        return
    with connection.cursor() as cursor:
        cursor.execute("ALTER TABLE crm_sms_queuedreport RENAME TO crm_sms_queuedreport_away")
    try:
        yield
    finally:
        with connection.cursor() as cursor:
            cursor.execute("ALTER TABLE crm_sms_queuedreport_away RENAME TO crm_sms_queuedreport")


def test_database_away_in_queued_mode_spools_and_answers_200(queued, transactional_db, client):
    [message] = sent_messages()
    with queue_table_away():
        assert post(client, [megafon(message.msg_id)]).status_code == 200
    assert len(inbox.spooled_files()) == 1
    inbox.drain_spool()
    message.refresh_from_db()
    assert message.status == S.DELIVERED and message.events.count() == 1


# --- the applier: the rules hold across batches ----------------------------------------------


def test_idempotent_and_order_proof_across_batches(queued, db):
    first, second, third = sent_messages(3)
    queue(first, "delivered")
    queue(first, "delivered")  # a repeat
    queue(first, "sent")  # late: statuses only move forward
    queue(first, "undelivered", error_code="UNDELIV")  # late: the first final status wins
    queue(second, "undelivered", error_code="UNDELIV")
    queue(second, "delivered")
    queue(third, "delivered")
    for _ in range(2):  # applied twice: the second run finds nothing
        counts = inbox.apply_queued_reports(batch_size=2)  # reports split over four batches
    assert counts["rows"] == 0
    assert QueuedReport.objects.count() == 0
    statuses = dict(Message.objects.values_list("pk", "status"))
    assert statuses == {first.pk: S.DELIVERED, second.pk: S.UNDELIVERED, third.pk: S.DELIVERED}
    assert MessageEvent.objects.count() == 3  # one per change
    second.refresh_from_db()
    assert second.error_code == "UNDELIV" and second.delivered_at is None


def test_one_batch_counts_and_two_moves_of_one_message(queued, db):
    """A message still ``sending`` reported sent and delivered in one batch moves twice (two
    events); repeats and unknown reports are counted."""
    [early] = sent_messages(1, status=S.SENDING)
    [plain] = sent_messages(1)
    queue(early, "sent", provider_message_id="p-1")
    queue(early, "delivered")
    queue(plain, "delivered")
    queue(plain, "delivered")
    inbox.queue_reports([DeliveryReport("delivered", msg_id="unknown00000000")], provider="default")
    counts = inbox.apply_queued_reports()
    assert {k: counts[k] for k in ("rows", "applied", "duplicate", "unknown")} == {
        "rows": 5,
        "applied": 3,
        "duplicate": 1,
        "unknown": 1,
    }
    early.refresh_from_db()
    assert (early.status, early.provider_message_id) == (S.DELIVERED, "p-1")
    assert [e.new_status for e in early.events.order_by("pk")] == ["sent", "delivered"]
    assert plain.events.count() == 1


def test_many_reports_share_one_update(queued, db, django_assert_max_num_queries):
    """A batch of receipts is written in bulk: lookup, one UPDATE per set of equal values,
    the events: a handful of queries for 300 reports."""
    messages = Message.objects.bulk_create(
        Message(phone=f"+7900{i:07d}", text="Hi", provider="default", status=S.SENT)
        for i in range(300)
    )
    messages = list(Message.objects.filter(provider="default"))
    inbox.queue_reports(
        [DeliveryReport("delivered", msg_id=m.msg_id) for m in messages], provider="default"
    )
    with django_assert_max_num_queries(10):
        counts = inbox.apply_queued_reports()
    assert counts["applied"] == 300
    assert Message.objects.filter(status=S.DELIVERED).count() == 300
    assert MessageEvent.objects.count() == 300


# --- nothing is lost: a crash between the queue write and the apply ---------------------------


@pytest.mark.parametrize("crash", [KeyboardInterrupt, OperationalError])
def test_a_crash_while_applying_loses_nothing(queued, transactional_db, client, monkeypatch, crash):
    """The applier dies (a signal, the database going away) after taking the rows: its
    transaction rolls back, the rows are still queued, and the next run applies them."""
    messages = sent_messages(3)
    for message in messages:
        assert post(client, [megafon(message.msg_id)]).status_code == 200

    def dying(reports, **kwargs):
        raise crash("the applier died")

    with monkeypatch.context() as patch:
        patch.setattr("crm_sms.inbox.apply_delivery_reports", dying)
        with pytest.raises(crash):
            inbox.apply_queued_reports()
    assert QueuedReport.objects.count() == 3  # still there
    assert not MessageEvent.objects.exists()

    assert inbox.apply_queued_reports()["applied"] == 3  # a later run
    assert Message.objects.filter(status=S.DELIVERED).count() == 3
    assert MessageEvent.objects.count() == 3


def test_a_row_that_fails_alone_is_set_aside_and_the_others_applied(queued, db, caplog):
    first, second = sent_messages(2)
    queue(first, "delivered")
    QueuedReport.objects.create(provider="default", source="callback", reports="{broken")
    queue(second, "delivered")
    with caplog.at_level(logging.ERROR, logger="crm_sms.inbox"):
        counts = inbox.apply_queued_reports()
    assert (counts["rows"], counts["broken"], counts["applied"]) == (2, 1, 2)
    broken = QueuedReport.objects.get()
    assert broken.reports == "{broken" and "JSONDecodeError" in broken.error
    assert f"#{broken.pk}" in caplog.text
    assert inbox.apply_queued_reports()["rows"] == 0  # set aside: not tried again and again

    broken.reports = json.dumps([])
    broken.save()
    out = call_command_output("sms_reports", "--once", "--retry-broken")
    assert "1 broken row(s) will be tried again" in out
    assert not QueuedReport.objects.exists()


def call_command_output(*args: str) -> str:
    from io import StringIO

    out = StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- who applies: the command, the worker ------------------------------------------------------


def test_sms_reports_once_prints_counts(queued, db):
    [message] = sent_messages()
    queue(message, "delivered")
    counts = json.loads(call_command_output("sms_reports", "--once", "--json"))
    assert (counts["rows"], counts["applied"]) == (1, 1)


def test_the_worker_housekeeping_applies_the_queue(queued, transactional_db, client):
    [message] = sent_messages()
    assert post(client, [megafon(message.msg_id)]).status_code == 200
    Outbox(concurrency=1).run(once=True)
    message.refresh_from_db()
    assert message.status == S.DELIVERED


def test_the_sms_reports_loop_applies_and_stops_on_sigterm(queued, transactional_db, client):
    messages = sent_messages(3)
    env = subprocess_env(SMS_REPORTS="queued")
    command = [sys.executable, str(ROOT / "manage.py"), "sms_reports", "--json", "--sleep", "0.05"]
    applier = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
    try:
        for message in messages:
            assert post(client, [megafon(message.msg_id)]).status_code == 200
        deadline = time.monotonic() + 60
        while Message.objects.filter(status=S.DELIVERED).count() < 3:
            assert time.monotonic() < deadline, "the applier did not apply the queue"
            time.sleep(0.05)
    finally:
        applier.terminate()
        out, _ = applier.communicate(timeout=30)
    assert applier.returncode == 0
    assert sum(json.loads(line)["applied"] for line in out.splitlines() if line.strip()) == 3


# --- two appliers never apply a row twice ------------------------------------------------------


def test_two_appliers_never_apply_a_row_twice(queued, transactional_db, monkeypatch):
    """Applier A holds its batch open while applier B runs: on PostgreSQL B skips A's locked
    rows and applies the others (SKIP LOCKED); on SQLite B waits for A's transaction (one
    writer) and finds A's rows gone. Either way each report is applied once."""
    from crm_sms import reports

    messages = sent_messages(20)
    for message in messages:
        queue(message, "delivered")
    applied: list[tuple[str, str]] = []
    a_holds, b_done = threading.Event(), threading.Event()

    def recording(batch, **kwargs):
        name = threading.current_thread().name
        applied.extend((name, report.msg_id) for report in batch)
        if name == "A" and not a_holds.is_set():
            a_holds.set()
            b_done.wait(timeout=2 if connection.vendor == "sqlite" else 30)
        return reports.apply_delivery_reports(batch, **kwargs)

    monkeypatch.setattr("crm_sms.inbox.apply_delivery_reports", recording)

    def applier(batch_size: int, after: threading.Event | None, done: threading.Event | None):
        try:
            if after is not None:
                after.wait(timeout=30)
            inbox.apply_queued_reports(batch_size=batch_size)
        finally:
            connection.close()
            if done is not None:
                done.set()

    a = threading.Thread(target=applier, args=(5, None, None), name="A")
    b = threading.Thread(target=applier, args=(5, a_holds, b_done), name="B")
    for thread in (a, b):
        thread.start()
    for thread in (a, b):
        thread.join()
    msg_ids = [msg_id for _, msg_id in applied]
    assert sorted(msg_ids) == sorted(m.msg_id for m in messages)  # each once
    if connection.vendor == "postgresql":  # B applied the rest while A held its five
        assert [name for name, _ in applied] == ["A"] * 5 + ["B"] * 15
    assert MessageEvent.objects.count() == 20
    assert Message.objects.filter(status=S.DELIVERED).count() == 20
    assert not QueuedReport.objects.exists()


def test_two_applier_processes_share_the_queue(queued, transactional_db):
    """Two ``sms_reports --once`` processes on one queue of 600 reports: each applied once."""
    messages = Message.objects.bulk_create(
        Message(phone=f"+7901{i:07d}", text="Hi", provider="default", status=S.SENT)
        for i in range(600)
    )
    messages = list(Message.objects.all())
    for message in messages:
        queue(message, "delivered")
    env = subprocess_env(SMS_REPORTS="queued")
    command = [sys.executable, str(ROOT / "manage.py"), "sms_reports", "--once", "--json"]
    command += ["--batch-size", "20"]
    procs = [
        subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    outputs = [json.loads(proc.communicate(timeout=120)[0]) for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    assert sum(out["rows"] for out in outputs) == 600
    assert sum(out.get("applied", 0) for out in outputs) == 600
    assert MessageEvent.objects.count() == 600
    assert not QueuedReport.objects.exists()


# --- group commit: concurrent callbacks of a process share an INSERT and its commit ---------


def test_concurrent_callbacks_share_one_insert_and_each_row_is_committed(
    queued, transactional_db, monkeypatch
):
    """Three requests arrive while a fourth is writing: the next write takes all three, and
    every call returns only once its row is in the database."""
    if connection.vendor != "postgresql":
        pytest.skip("group commit is for PostgreSQL (SQLite has one writer anyway)")
    group = inbox.GroupCommit(inbox._insert_rows)
    monkeypatch.setattr(inbox, "_GROUP", group)
    writing, release = threading.Event(), threading.Event()
    original = group.write

    def first_write_waits(rows):
        if group.batches == 0:
            writing.set()
            assert release.wait(60)
        original(rows)

    group.write = first_write_waits
    errors = []

    def post(number):
        try:
            report = DeliveryReport("delivered", msg_id=f"m{number}")
            assert inbox.queue_reports([report], provider="default") == 1
            # Committed before the return: another connection sees the row.
            assert (
                in_other_connection(
                    QueuedReport.objects.filter(reports__contains=f'"m{number}"').count
                )
                == 1
            )
        except BaseException as exc:  # noqa: BLE001  (reported below, in the test's thread)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=post, args=(0,))]
    threads[0].start()
    assert writing.wait(60)
    threads += [threading.Thread(target=post, args=(n,)) for n in (1, 2, 3)]
    for thread in threads[1:]:
        thread.start()
    deadline = time.monotonic() + 60
    while group.waiting() < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    release.set()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert (group.batches, group.values) == (2, 4)
    assert QueuedReport.objects.count() == 4
    counts = inbox.apply_queued_reports()
    assert counts["rows"] == 4 and counts["unknown"] == 4


def test_a_failed_group_write_reaches_every_request():
    """The database refuses the shared INSERT: each request gets the error (its own copy)."""
    calls = []

    def refuse(rows):
        calls.append(len(rows))
        raise OperationalError("the database is away")

    group = inbox.GroupCommit(refuse)
    results = []

    def submit(value):
        try:
            group.submit(value)
        except OperationalError as exc:
            results.append(exc)

    threads = [threading.Thread(target=submit, args=(n,)) for n in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert len(results) == 5 and sum(calls) == 5
    assert len({id(exc) for exc in results}) == 5  # one exception object each
    assert group.waiting() == 0 and group.values == 5
