"""Big imports out of the web request (issue 10, point 4): the admin stores the upload and
queues an ImportJob; the worker loop (its housekeeping starts a helper thread), a real
``sms_worker`` process, or the Celery task runs it; the job's page and its JSON show the
progress, then the result. Claims are atomic; a job whose runner died goes on from its last
committed batch; a stopping worker gives its job back."""

from __future__ import annotations

import signal
import threading

import pytest
from django.contrib.auth.models import User
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from crm_sms.importing import jobs
from crm_sms.importing.writing import ContactWriter
from crm_sms.models import Contact, ContactGroup, ImportJob, ImportJobStatus
from crm_sms.outbox import Outbox
from tests.fixtures_admin import csv_bytes
from tests.fixtures_outbox import subprocess_env, wait_until

IMPORT_URL = "admin:crm_sms_contact_import"


def contact_rows(count: int, start: int = 0) -> list[list[str]]:
    rows = [["Фамилия", "Телефон", "Группы"]]
    rows += [[f"Фамилия{i}", f"8 (900) 1{i:06d}", "Большой файл"] for i in range(start, count)]
    return rows


@pytest.fixture
def import_settings(settings, tmp_path):
    """Small thresholds: more than 50 rows is a background job; uploads in ``tmp_path``."""
    settings.CRM_SMS = {
        **getattr(settings, "CRM_SMS", {}),
        "IMPORT_IN_REQUEST_ROWS": 50,
        "IMPORT_DIR": str(tmp_path / "imports"),
    }
    return settings


@pytest.fixture
def staff_client(db) -> Client:
    user = User.objects.create_superuser("importer", "importer@example.com", "pw")
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


def queued_job(rows: list[list[str]], dry_run: bool = False, **options) -> ImportJob:
    token, path = jobs.save_upload([csv_bytes(rows)])
    return jobs.queue_job(path, filename="big.csv", options=options, dry_run=dry_run)


def run_worker_loop_once() -> None:
    """``Outbox.run(once=True)``, as ``sms_worker --once`` does, and wait for its import thread."""
    outbox = Outbox(concurrency=1)
    try:
        outbox.run(once=True)
    finally:
        outbox.close()
    thread = jobs.import_thread()
    assert thread is not None
    thread.join(timeout=60)
    assert not thread.is_alive()


# --- the admin flow, run by the worker loop ------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_admin_upload_check_job_then_import_job_run_by_the_worker_loop(
    import_settings, staff_client, monkeypatch
):
    accepted = []
    original = ContactWriter.accept_row
    monkeypatch.setattr(
        ContactWriter,
        "accept_row",
        lambda self, line, values: accepted.append(line) or original(self, line, values),
    )
    upload = SimpleUploadedFile("big.csv", csv_bytes(contact_rows(300)))
    page = staff_client.post(reverse(IMPORT_URL), {"file": upload})
    # The request read the first 50 rows, saw more, and queued the check.
    assert len(accepted) == 50
    check = ImportJob.objects.get()
    assert check.dry_run and check.status == ImportJobStatus.QUEUED
    job_url = reverse("admin:crm_sms_contact_import_job", args=[check.pk])
    assert page.status_code == 302 and page["Location"] == job_url
    waiting = staff_client.get(job_url)
    assert "Queued — waiting for a worker." in waiting.content.decode()
    status_url = reverse("admin:crm_sms_contact_import_job_status", args=[check.pk])
    assert staff_client.get(status_url).json()["status"] == "queued"

    run_worker_loop_once()

    state = staff_client.get(status_url).json()
    assert (state["status"], state["finished"], state["rows"], state["created"]) == (
        "done",
        True,
        300,
        300,
    )
    checked = staff_client.get(job_url).content.decode()
    assert 'id="import-created">300<' in checked and "Import 300 rows" in checked
    assert not Contact.objects.exists()  # a check writes nothing

    confirmed = staff_client.post(job_url, {"_confirm": "1"})
    job = ImportJob.objects.exclude(pk=check.pk).get()
    assert confirmed["Location"] == reverse("admin:crm_sms_contact_import_job", args=[job.pk])
    assert (job.dry_run, job.status, job.options["encoding"]) == (False, "queued", "utf-8")
    again = staff_client.post(job_url, {"_confirm": "1"})  # a second click: the same job
    assert again["Location"] == confirmed["Location"] and ImportJob.objects.count() == 2

    run_worker_loop_once()

    state = staff_client.get(
        reverse("admin:crm_sms_contact_import_job_status", args=[job.pk])
    ).json()
    assert (state["status"], state["created"], state["skipped"]) == ("done", 300, 0)
    assert "Import done: 300 new contacts" in state["message"]
    done = staff_client.get(confirmed["Location"]).content.decode()
    assert "Import done: 300 new contacts, 0 updated, 0 unchanged." in done
    assert Contact.objects.count() == 300
    assert ContactGroup.objects.get(name="Большой файл").contacts.count() == 300
    job.refresh_from_db()
    assert job.attempts == 1 and job.fraction == 1.0
    assert not (import_settings.CRM_SMS["IMPORT_DIR"] and list_uploads())  # the file is gone


def list_uploads() -> list:
    return list(jobs.import_dir().glob(f"{jobs.UPLOAD_PREFIX}*"))


def test_a_small_file_is_still_checked_and_imported_in_the_request(import_settings, admin_en):
    page = admin_en.post(
        reverse(IMPORT_URL), {"file": SimpleUploadedFile("s.csv", csv_bytes(contact_rows(50)))}
    )
    assert page.status_code == 200 and 'id="import-created">50<' in page.content.decode()
    assert not ImportJob.objects.exists()


def test_a_file_over_the_in_request_size_goes_to_a_job_unread(
    import_settings, admin_en, monkeypatch
):
    import_settings.CRM_SMS = {**import_settings.CRM_SMS, "IMPORT_IN_REQUEST_BYTES": 1000}
    monkeypatch.setattr(
        ContactWriter, "accept_row", lambda *a: pytest.fail("the request read a row")
    )
    page = admin_en.post(
        reverse(IMPORT_URL), {"file": SimpleUploadedFile("b.csv", csv_bytes(contact_rows(40)))}
    )
    assert page.status_code == 302
    assert ImportJob.objects.get().dry_run


def test_the_request_reads_a_bounded_number_of_rows_blank_ones_too(import_settings, admin_en):
    data = csv_bytes(contact_rows(10)) + b"\r\n" * 600 + csv_bytes(contact_rows(11, 10)[1:])
    page = admin_en.post(reverse(IMPORT_URL), {"file": SimpleUploadedFile("gaps.csv", data)})
    # 11 rows with data, but 600 blank lines between: more than ten times 50 lines in all.
    assert page.status_code == 302
    job = ImportJob.objects.get()
    assert jobs.run_import_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.rows, job.created) == ("done", 11, 11)


def test_job_pages_belong_to_their_user(import_settings, client, admin_user, django_user_model):
    job = queued_job(contact_rows(10))
    job.created_by = admin_user
    job.save()
    other = django_user_model.objects.create_superuser("other", "o@example.com", "pw")
    other.is_superuser = False
    other.save()
    from django.contrib.auth.models import Permission

    other.user_permissions.set(
        Permission.objects.filter(codename__in=["add_contact", "change_contact"])
    )
    client.force_login(other)
    url = reverse("admin:crm_sms_contact_import_job_status", args=[job.pk])
    assert client.get(url).status_code == 404
    client.force_login(admin_user)
    assert client.get(url).status_code == 200


def test_waiting_long_for_a_worker_says_so(import_settings, admin_en):
    job = queued_job(contact_rows(10))
    ImportJob.objects.filter(pk=job.pk).update(
        created_at=timezone.now() - timezone.timedelta(minutes=2)
    )
    state = admin_en.get(reverse("admin:crm_sms_contact_import_job_status", args=[job.pk])).json()
    assert "No worker has taken it for" in state["message"] and "sms_worker" in state["message"]


# --- runners: Celery, a real sms_worker process --------------------------------------------


@pytest.mark.django_db
def test_the_celery_task_runs_the_job(
    import_settings, monkeypatch, django_capture_on_commit_callbacks
):
    from crm_sms import tasks

    sent = []
    monkeypatch.setattr(tasks.run_import_job, "delay", lambda job_id: sent.append(job_id))
    import_settings.CRM_SMS = {**import_settings.CRM_SMS, "IMPORT_CELERY": True}
    with django_capture_on_commit_callbacks(execute=True):
        job = queued_job(contact_rows(120), group="Celery")
    assert sent == [job.pk]
    assert tasks.run_import_job.apply(args=[job.pk]).get() == 1
    job.refresh_from_db()
    assert (job.status, job.created, job.rows) == ("done", 120, 120)
    assert ContactGroup.objects.get(name="Celery").contacts.count() == 120
    assert tasks.run_import_job.apply(args=[job.pk]).get() == 0  # a redelivery: nothing to do


@pytest.mark.django_db(transaction=True)
@pytest.mark.slow
def test_a_real_sms_worker_process_runs_the_job_and_gives_it_back_on_sigterm(
    import_settings, worker_processes
):
    job = queued_job(contact_rows(60_000))
    env = subprocess_env(SMS_URL="console://")
    worker = worker_processes([], env)
    assert wait_until(lambda: ImportJob.objects.get(pk=job.pk).rows > 0, timeout=30)
    worker.signal(signal.SIGTERM)
    code, out = worker.wait(timeout=60)
    assert code == 0, out
    job.refresh_from_db()
    # Stopped mid-way (60,000 rows take seconds): given back after a batch, to go on later.
    assert job.status == ImportJobStatus.QUEUED and job.attempts == 0
    assert 0 < job.result["line"] < 60_001
    assert Contact.objects.count() == job.created == job.rows
    once = worker_processes(["--once"], env)  # --once waits for the import before it exits
    code, out = once.wait(timeout=120)
    assert code == 0, out
    job.refresh_from_db()
    assert (job.status, job.rows, job.created, job.skipped) == ("done", 60_000, 60_000, 0)
    assert Contact.objects.count() == 60_000


# --- claims, dead runners, stops ------------------------------------------------------------


@pytest.mark.django_db
def test_a_job_is_claimed_once(import_settings):
    job = queued_job(contact_rows(10))
    claimed = jobs.claim_job()
    assert claimed.pk == job.pk and claimed.status == "running" and claimed.attempts == 1
    assert jobs.claim_job() is None
    assert jobs.claim_job(job.pk) is None


class RunnerDied(BaseException):
    """The runner's process ends mid-import (nothing of it runs any more)."""


@pytest.mark.django_db
def test_a_job_whose_runner_died_is_taken_back_and_goes_on_from_its_last_batch(
    import_settings, monkeypatch
):
    rows = contact_rows(5000)
    rows.append(["Повтор", "8 (900) 1000001", ""])  # repeats a phone of the first batch
    job = queued_job(rows, group="Живучие")
    monkeypatch.setattr(jobs, "JOB_BATCH_SIZE", 1000)
    batches = []
    original = ContactWriter.write_batch

    def dying(self, batch):
        batches.append(len(batch))
        if len(batches) == 3:
            raise RunnerDied
        original(self, batch)

    monkeypatch.setattr(ContactWriter, "write_batch", dying)
    with pytest.raises(RunnerDied):
        jobs.run_job(jobs.claim_job())
    job.refresh_from_db()
    assert job.status == "running" and job.result["line"] == 2001  # two batches committed
    assert Contact.objects.count() == 2000 == job.created
    assert jobs.claim_job() is None  # its runner might still be alive: not yet

    ImportJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=301)
    )
    monkeypatch.setattr(ContactWriter, "write_batch", original)
    assert jobs.run_import_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.attempts) == ("done", 2)
    # The result is the one a single run gives: every row once, the repeat caught.
    assert (job.rows, job.created, job.skipped) == (5001, 5000, 1)
    assert job.result["duplicates"] == 1 and job.result["errors"][0]["line"] == 5002
    assert job.result["groups_created"] == ["Большой файл", "Живучие"]
    assert Contact.objects.count() == 5000
    assert ContactGroup.objects.get(name="Живучие").contacts.count() == 5000


@pytest.mark.django_db
def test_a_runner_whose_job_was_taken_over_writes_nothing_more(import_settings):
    job = queued_job(contact_rows(3000))
    slow = jobs.claim_job()
    ImportJob.objects.filter(pk=job.pk).update(
        heartbeat_at=timezone.now() - timezone.timedelta(seconds=301)
    )
    fresh = jobs.claim_job()
    assert fresh.attempts == 2
    jobs.run_job(slow)  # its first checkpoint finds the job is not its own any more
    assert not Contact.objects.exists()
    assert ImportJob.objects.get(pk=job.pk).status == "running"
    jobs.run_job(fresh)
    assert ImportJob.objects.get(pk=job.pk).status == "done"
    assert Contact.objects.count() == 3000


@pytest.mark.django_db
def test_a_stopping_worker_gives_the_job_back(import_settings, monkeypatch):
    monkeypatch.setattr(jobs, "JOB_BATCH_SIZE", 1000)
    job = queued_job(contact_rows(3500), dry_run=True)
    stop = threading.Event()
    original = ContactWriter.write_batch

    def stop_after_first(self, batch):
        original(self, batch)
        stop.set()

    monkeypatch.setattr(ContactWriter, "write_batch", stop_after_first)
    jobs.run_job(jobs.claim_job(), stop)
    job.refresh_from_db()
    assert (job.status, job.attempts, job.rows) == ("queued", 0, 1000)
    monkeypatch.setattr(ContactWriter, "write_batch", original)
    assert jobs.run_import_jobs() == 1
    job.refresh_from_db()
    assert (job.status, job.rows, job.created, job.attempts) == ("done", 3500, 3500, 1)
    assert job.result["groups_created"] == ["Большой файл"]  # once, though resumed
    assert jobs.Path(job.file_path).exists()  # a check keeps its file for the import


@pytest.mark.django_db
def test_a_job_that_keeps_killing_its_runner_is_failed(import_settings):
    job = queued_job(contact_rows(10))
    ImportJob.objects.filter(pk=job.pk).update(
        status="running",
        attempts=jobs.MAX_ATTEMPTS,
        heartbeat_at=timezone.now() - timezone.timedelta(hours=1),
    )
    assert jobs.claim_job() is None
    job.refresh_from_db()
    assert job.status == "failed" and "stopped 3 times" in job.error
    assert not jobs.Path(job.file_path).exists()


@pytest.mark.django_db
def test_a_bad_file_fails_the_job_with_the_reason(import_settings):
    job = queued_job([["Name"], ["x"]])
    assert jobs.run_import_jobs() == 1
    job.refresh_from_db()
    assert job.status == "failed" and "no phone column" in job.error


@pytest.mark.django_db(transaction=True)
@pytest.mark.postgres
def test_two_runners_racing_for_one_job_on_postgresql(requires_postgres, import_settings):
    from django.db import connection

    job = queued_job(contact_rows(10))
    barrier = threading.Barrier(8)
    won: list = []

    def race() -> None:
        try:
            barrier.wait()
            claimed = jobs.claim_job()
            if claimed is not None:
                won.append(claimed.pk)
        finally:
            connection.close()

    threads = [threading.Thread(target=race) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert won == [job.pk]
    assert ImportJob.objects.get(pk=job.pk).attempts == 1
