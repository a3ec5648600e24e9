"""Background contact imports: an :class:`~crm_sms.models.ImportJob` row per import (or check),
run out of the web request by ``manage.py sms_worker`` or by Celery.

- The admin stores the upload (:func:`save_upload`, in ``CRM_SMS["IMPORT_DIR"]``) and queues a
  job (:func:`queue_job`). With ``CRM_SMS["IMPORT_CELERY"]`` the Celery task
  ``crm_sms.tasks.run_import_job`` is sent too, once the job is committed.
- A runner claims a job with one conditional UPDATE (``queued`` → ``running``, or a ``running``
  job whose last progress is older than ``IMPORT_JOB_TIMEOUT``: its runner died), so two
  runners never run one job at once; ``attempts`` is the claim's fence: a runner whose job was
  taken over cannot write to it any more.
- Each batch of contacts is committed together with the job's progress and running result
  (:class:`~crm_sms.importing.Checkpoints`): a job taken back goes on after the last committed
  batch, and its result is the one a single run gives. A worker that is stopping gives its job
  back the same way.
- ``sms_worker`` runs jobs in one helper thread per process (:func:`start_import_jobs`, called
  from its housekeeping), so sending never waits for an import.
"""

from __future__ import annotations

import logging
import os
import secrets
import stat
import tempfile
import threading
import time
from collections.abc import Iterable
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured, ValidationError
from django.db import close_old_connections, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..models import ImportJob, ImportJobStatus
from . import Checkpoints, ImportResult, import_contacts
from .limits import import_setting

logger = logging.getLogger("crm_sms.importing")

UPLOAD_PREFIX = "crm_sms_import_"
#: Uploads no job is running or waiting for (checked but never imported) are kept this long.
UPLOAD_MAX_AGE = 24 * 3600
#: A job whose runner died this many times is failed instead of taken back again.
MAX_ATTEMPTS = 3
#: How many bad rows (and warnings) a job keeps in its result (all are counted; the page
#: shows 500).
JOB_KEPT_ERRORS = 1000
#: Progress is committed with every batch of this many rows.
JOB_BATCH_SIZE = 2000

ACTIVE = (ImportJobStatus.QUEUED, ImportJobStatus.RUNNING)


class JobTakenOver(Exception):
    """The job was taken back by another runner (this one was too slow to show progress)."""


# --- files --------------------------------------------------------------------------------


def import_dir() -> Path:
    """Where uploads wait for their import: ``CRM_SMS["IMPORT_DIR"]`` or a private folder in
    the system's temporary directory. Web processes and workers must see the same folder."""
    configured = import_setting("IMPORT_DIR")
    if configured:
        folder = Path(configured)
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        return folder
    folder = Path(tempfile.gettempdir()) / "crm_sms_imports"
    folder.mkdir(mode=0o700, exist_ok=True)
    info = folder.lstat()
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o077:
        # Someone else made it (in a shared /tmp): they could read or swap the uploads.
        raise ImproperlyConfigured(
            f"{folder} is not a private folder of this user: set CRM_SMS['IMPORT_DIR']."
        )
    return folder


def upload_path(token: str) -> Path:
    """Where the upload with ``token`` is kept."""
    return import_dir() / f"{UPLOAD_PREFIX}{token}"


def save_upload(chunks: Iterable[bytes]) -> tuple[str, Path]:
    """Write an upload's ``chunks`` to a new file of the import folder: its token and path."""
    remove_stale_uploads()
    token = secrets.token_urlsafe(18)
    path = upload_path(token)
    with open(path, "xb") as out:
        path.chmod(0o600)
        for chunk in chunks:
            out.write(chunk)
    return token, path


def remove_stale_uploads(max_age: float = UPLOAD_MAX_AGE) -> None:
    """Delete uploads older than ``max_age`` seconds that no queued or running job needs."""
    cutoff = time.time() - max_age
    needed = set(ImportJob.objects.filter(status__in=ACTIVE).values_list("file_path", flat=True))
    for upload in import_dir().glob(f"{UPLOAD_PREFIX}*"):
        try:
            if str(upload) not in needed and upload.stat().st_mtime < cutoff:
                upload.unlink()
        except OSError:
            continue


# --- queueing and claiming ----------------------------------------------------------------


def queue_job(
    path: Path, *, filename: str, options: dict[str, Any], dry_run: bool, user: Any = None
) -> ImportJob:
    """A queued job for the stored upload at ``path``; Celery gets it too when configured."""
    job = ImportJob.objects.create(
        file_path=str(path),
        filename=filename[:255],
        file_size=path.stat().st_size,
        options={k: v for k, v in options.items() if v},
        dry_run=dry_run,
        created_by=user if getattr(user, "pk", None) else None,
    )
    if import_setting("IMPORT_CELERY"):
        transaction.on_commit(lambda: _send_to_celery(job.pk))
    return job


def _send_to_celery(job_id: int) -> None:
    from .. import tasks

    try:
        tasks.run_import_job.delay(job_id)
    except Exception:  # the broker is down: the job waits for sms_worker or the next send
        logger.exception("Import job %s: could not send it to Celery; it stays queued", job_id)


def _due(now: Any) -> Q:
    timeout = timedelta(seconds=float(import_setting("IMPORT_JOB_TIMEOUT")))
    stale = Q(status=ImportJobStatus.RUNNING, heartbeat_at__lt=now - timeout)
    return Q(status=ImportJobStatus.QUEUED) | stale


def has_due_jobs() -> bool:
    return ImportJob.objects.filter(_due(timezone.now())).exists()


def claim_job(job_id: int | None = None) -> ImportJob | None:
    """Claim the oldest due job (or job ``job_id`` if due): ``running``, one more attempt.
    None when there is none, or another runner was faster. A job taken back from a dead
    runner too often is failed here."""
    while True:
        now = timezone.now()
        due = ImportJob.objects.filter(_due(now))
        if job_id is not None:
            due = due.filter(pk=job_id)
        pk = due.order_by("created_at", "id").values_list("pk", flat=True).first()
        if pk is None:
            return None
        claimed = _move(
            ImportJob.objects.filter(_due(now), pk=pk),
            ImportJobStatus.RUNNING,
            started_at=now,
            heartbeat_at=now,
            attempts=F("attempts") + 1,
        )
        if not claimed:
            if job_id is not None:
                return None
            continue  # another runner took it: look for the next one
        job = ImportJob.objects.get(pk=pk)
        if job.attempts <= MAX_ATTEMPTS:
            return job
        _finish(
            job,
            ImportJobStatus.FAILED,
            error=ngettext(
                "The import stopped %(count)d time before it ended (its worker was stopped "
                "or ran out of memory); it is not started again.",
                "The import stopped %(count)d times before it ended (its worker was stopped "
                "or ran out of memory); it is not started again.",
                job.attempts - 1,
            )
            % {"count": job.attempts - 1},
        )


# --- running ------------------------------------------------------------------------------


def run_job(job: ImportJob, stop: threading.Event | None = None) -> ImportJob:
    """Run a claimed ``job`` to its end (``done`` or ``failed``), or until ``stop`` is set
    (then it is ``queued`` again and goes on from its last batch later)."""
    fence = ImportJob.objects.filter(
        pk=job.pk, status=ImportJobStatus.RUNNING, attempts=job.attempts
    )

    def save(result: ImportResult, fraction: float | None) -> None:
        if not fence.update(**_progress(result), fraction=fraction, heartbeat_at=timezone.now()):
            raise JobTakenOver  # (rolls back this batch: the new runner does it)

    checkpoints = Checkpoints(
        save=save, resume=job.result, stop=lambda: stop is not None and stop.is_set()
    )
    options = job.options or {}
    try:
        result = import_contacts(
            job.file_path,
            filename=job.filename,
            format=options.get("format"),
            encoding=options.get("encoding"),
            delimiter=options.get("delimiter"),
            group=options.get("group"),
            dry_run=job.dry_run,
            batch_size=JOB_BATCH_SIZE,
            checkpoints=checkpoints,
        )
    except JobTakenOver:
        logger.warning("Import job %s was taken over by another runner", job.pk)
        return job
    except ValidationError as exc:
        return _finish(job, ImportJobStatus.FAILED, error=" ".join(exc.messages))
    except FileNotFoundError:
        return _finish(job, ImportJobStatus.FAILED, error=_("The uploaded file is gone."))
    except Exception as exc:
        logger.exception("Import job %s failed", job.pk)
        error = _("The import failed: %(error)s") % {"error": f"{type(exc).__name__}: {exc}"}
        return _finish(job, ImportJobStatus.FAILED, error=error)
    if not result.complete:  # stopping: back to the queue, it goes on from its checkpoint
        _move(fence, ImportJobStatus.QUEUED, attempts=F("attempts") - 1)
        return job
    return _finish(job, ImportJobStatus.DONE, result=result)


def _move(jobs: Any, status: str, **values: Any) -> int:
    """Set the status of the ``jobs`` queryset (with ``values``); how many rows moved. An
    import job's states are its own: ``crm_sms.transitions`` (messages and campaigns, whose
    every move writes an event) does not cover them."""
    return jobs.update(**{"status": status, **values})


def _progress(result: ImportResult) -> dict[str, Any]:
    data = result.as_dict()
    data["errors"] = data["errors"][:JOB_KEPT_ERRORS]
    data["warnings"] = data["warnings"][:JOB_KEPT_ERRORS]
    return {
        "rows": result.rows,
        "created": result.created,
        "updated": result.updated,
        "unchanged": result.unchanged,
        "skipped": result.skipped,
        "result": data,
    }


def _finish(
    job: ImportJob, status: str, *, result: ImportResult | None = None, error: str = ""
) -> ImportJob:
    """End the claimed ``job`` (unless another runner took it over). An import's file goes
    when it ends; a check's stays for the import that may follow."""
    values: dict[str, Any] = {"error": error, "finished_at": timezone.now()}
    if result is not None:
        values.update(_progress(result), fraction=1.0)
    fence = ImportJob.objects.filter(
        pk=job.pk, status=ImportJobStatus.RUNNING, attempts=job.attempts
    )
    ended = _move(fence, status, **values)
    if ended and (not job.dry_run or status == ImportJobStatus.FAILED):
        Path(job.file_path).unlink(missing_ok=True)
    job.refresh_from_db()
    return job


def run_import_jobs(
    job_id: int | None = None, stop: threading.Event | None = None, max_jobs: int | None = None
) -> int:
    """Claim and run due jobs (only job ``job_id`` when given) until none is due, ``stop`` is
    set or ``max_jobs`` ran; returns how many ran."""
    count = 0
    while (max_jobs is None or count < max_jobs) and not (stop is not None and stop.is_set()):
        job = claim_job(job_id)
        if job is None:
            break
        logger.info("Import job %s (%s): started", job.pk, job.filename)
        job = run_job(job, stop)
        logger.info("Import job %s: %s %s", job.pk, job.status, job.error)
        count += 1
        if job_id is not None:
            break
    return count


# --- the worker's helper thread -----------------------------------------------------------

_thread: threading.Thread | None = None
_thread_lock = threading.Lock()


def start_import_jobs(stop: threading.Event | None = None) -> threading.Thread | None:
    """From ``sms_worker``'s housekeeping: when a job is due and this process runs none, run
    the due jobs in a helper thread (its own database connection) and return it. ``stop``
    (the worker's) makes the thread give its job back after the current batch. The thread is
    not a daemon: ``sms_worker --once`` waits for the import before it exits."""
    global _thread
    with _thread_lock:
        if _thread is not None and _thread.is_alive():
            return None
        if not has_due_jobs():
            return None
        _thread = threading.Thread(
            target=_thread_main, args=(stop,), name="crm-sms-import", daemon=False
        )
        _thread.start()
        return _thread


def import_thread() -> threading.Thread | None:
    """The helper thread this process started last (for tests and shutdown)."""
    return _thread


def _thread_main(stop: threading.Event | None) -> None:
    try:
        close_old_connections()
        run_import_jobs(stop=stop)
    except Exception:
        logger.exception("Import jobs: the helper thread failed")
    finally:
        connection.close()
