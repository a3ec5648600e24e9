"""Delivery reports received and not applied yet: the spool (on disk, while the database
cannot take them) and the report queue (a table, ``CRM_SMS["REPORTS"] = "queued"``).

**The spool.** MegaFon cannot be asked for a status, so a report it posted is lost when we
answer 500 three times. When the database is unreachable or busy (``OperationalError``,
``InterfaceError``), the endpoint writes the reports here and answers 200; the worker's
housekeeping and ``manage.py sms_status`` apply them later through
``reports.apply_delivery_reports`` (idempotent and order-proof). The directory
(``CRM_SMS["REPORT_SPOOL_DIR"]``; default ``<BASE_DIR>/sms-report-spool``) has one file per
request, ``<time>-<pid>-<random>.jsonl``, one JSON object per report::

    {"v": 1, "provider": "default", "source": "callback", "received_at": "2026-…+00:00",
     "report": {"status": "delivered", "msg_id": "…", "provider_message_id": "…",
                "error_code": "", "error_message": "", "delivered_at": "…" or null, "raw": {…}}}

A file is written under a temporary name (``.tmp-….part``), fsync'ed, renamed, and the
directory fsync'ed: a file with the final name is complete and survives a power cut once the
provider has its 200. Draining locks each file (``flock``), applies a few files' reports in one
transaction and deletes them when it commits; a file that cannot be read or applied is renamed
``….broken`` and logged (rename it back to ``.jsonl`` to retry).

**The queue.** In "queued" mode a callback costs one INSERT of its cleaned reports
(``queue_reports``: a ``QueuedReport`` row, a JSON list of the ``report`` objects above),
committed before the answer (on PostgreSQL the callbacks a process has in hand at once share
the INSERT and its commit: ``crm_sms.groupcommit``); ``apply_queued_reports`` (``manage.py
sms_reports``, the worker) applies the rows in batches, deleting them in the same transaction
(``--retry-broken``: rows set aside because they failed alone are tried again).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, connection, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import conf
from .backends.base import DeliveryReport
from .groupcommit import GroupCommit
from .models import EventSource, QueuedReport
from .reports import apply_delivery_reports, clean_report

try:  # PostgreSQL through psycopg 3: the queue's INSERT binds its values on the server
    import psycopg as _psycopg
except ImportError:  # pragma: no cover
    _psycopg = None  # type: ignore[assignment]
else:

    class _UnpreparedCursor(_psycopg.Cursor):
        """Server-side binding, never a named prepared statement (see ``_insert_rows``)."""

        def execute(self, query: Any, params: Any = None, **kwargs: Any) -> Any:
            return super().execute(query, params, **{**kwargs, "prepare": False})


try:  # POSIX; elsewhere two drainers may both apply a file (harmless: reports are idempotent)
    import fcntl
except ImportError:  # pragma: no cover
    fcntl = None  # type: ignore[assignment]

logger = logging.getLogger("crm_sms.inbox")

SUFFIX = ".jsonl"
BROKEN_SUFFIX = ".broken"
TMP_PREFIX = ".tmp-"
VERSION = 1
#: Errors that mean "the database cannot take it now": spool, keep, try again later.
UNAVAILABLE = (OperationalError, InterfaceError)
#: Reports applied in one transaction while draining (several small files go together).
DRAIN_BATCH = 500
#: A temporary file older than this (seconds) was left by a crash before its rename; the
#: request that wrote it was never answered 200, so the provider repeats the report.
STALE_TMP_AGE = 3600
_SOURCES = frozenset({EventSource.CALLBACK, EventSource.POLL})


def spool_dir() -> Path:
    """The spool directory: ``REPORT_SPOOL_DIR``, else ``<BASE_DIR>/sms-report-spool``, else one
    in the system's temporary directory (which may not survive a reboot: set it)."""
    configured = conf.get_setting("REPORT_SPOOL_DIR")
    if configured:
        return Path(configured)
    base = getattr(settings, "BASE_DIR", None)
    if base:
        return Path(base) / "sms-report-spool"
    return Path(tempfile.gettempdir()) / "crm-sms-report-spool"


# --- writing ---------------------------------------------------------------------------------


def report_body(report: DeliveryReport) -> dict[str, Any]:
    """``report`` cleaned (``reports.clean_report``) as a JSON object: a spool line's
    ``report``, an item of a queued row's ``reports``."""
    report = clean_report(report)
    return {
        "status": str(report.status),
        "msg_id": report.msg_id,
        "provider_message_id": report.provider_message_id,
        "error_code": report.error_code,
        "error_message": report.error_message,
        "delivered_at": report.delivered_at.isoformat() if report.delivered_at else None,
        "raw": report.raw,
    }


def _report_line(report: DeliveryReport, head: dict[str, Any]) -> str:
    return json.dumps({**head, "report": report_body(report)}, separators=(",", ":"))


def spool_reports(
    reports: Iterable[DeliveryReport], *, provider: str, source: str = EventSource.CALLBACK
) -> Path | None:
    """Write ``reports`` (cleaned: ``reports.clean_report``) durably to a new spool file;
    returns its path (None for no reports). Raises OSError when the disk refuses."""
    head = {
        "v": VERSION,
        "provider": provider,
        "source": str(source),
        "received_at": timezone.now().isoformat(),
    }
    lines = [_report_line(report, head) for report in reports]
    if not lines:
        return None
    directory = spool_dir()
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    name = f"{time.time_ns():020d}-{os.getpid()}-{uuid.uuid4().hex[:12]}{SUFFIX}"
    temporary, final = directory / f"{TMP_PREFIX}{name}.part", directory / name
    data = ("\n".join(lines) + "\n").encode("utf-8")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(descriptor, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, final)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(directory)
    return final


def _fsync_directory(directory: Path) -> None:
    """Make a rename in ``directory`` durable (a no-op where directories cannot be opened)."""
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:  # pragma: no cover  (Windows)
        return
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


# --- reading ---------------------------------------------------------------------------------


def _text(data: dict[str, Any], key: str) -> str:
    value = data.get(key, "")
    if not isinstance(value, str):
        raise ValueError(f"{key} is not a string")
    return value


def _parse_line(line: str) -> tuple[str, str, DeliveryReport]:
    """(provider, source, report) from one spool line; ValueError when it is not one."""
    data = json.loads(line)
    if not isinstance(data, dict) or data.get("v") != VERSION:
        raise ValueError("not a spool line of version 1")
    provider, source, body = data.get("provider"), data.get("source"), data.get("report")
    if not isinstance(provider, str) or not provider or source not in _SOURCES:
        raise ValueError("no provider alias, or an unknown source")
    return provider, source, _report_from_body(body)


def _report_from_body(body: Any) -> DeliveryReport:
    """The report a ``report_body`` object holds; ValueError when it is not one."""
    if not isinstance(body, dict):
        raise ValueError("no report")
    delivered_at = body.get("delivered_at")
    if delivered_at is not None:
        delivered_at = parse_datetime(delivered_at) if isinstance(delivered_at, str) else None
        if delivered_at is None:
            raise ValueError("delivered_at is not a time")
    return DeliveryReport(
        _text(body, "status"),
        msg_id=_text(body, "msg_id"),
        provider_message_id=_text(body, "provider_message_id"),
        error_code=_text(body, "error_code"),
        error_message=_text(body, "error_message"),
        delivered_at=delivered_at,
        raw=body.get("raw"),
    )


def read_spool_file(handle: IO[bytes]) -> list[tuple[str, str, DeliveryReport]]:
    """Every (provider, source, report) of an open spool file; ValueError when it is broken."""
    entries = []
    for number, line in enumerate(handle.read().decode("utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            entries.append(_parse_line(line))
        except (ValueError, TypeError, RecursionError) as exc:
            raise ValueError(f"line {number}: {exc}") from exc
    return entries


# --- draining --------------------------------------------------------------------------------


@dataclass
class _Batch:
    """Spool files taken together: their open (locked) handles and their reports."""

    files: list[tuple[Path, IO[bytes]]] = field(default_factory=list)
    entries: list[tuple[str, str, DeliveryReport]] = field(default_factory=list)

    def close(self) -> None:
        for _, handle in self.files:
            handle.close()
        self.files.clear()
        self.entries.clear()


def _open_locked(path: Path) -> IO[bytes] | None:
    """``path`` opened and locked for us, or None when another drainer has it (or had it)."""
    try:
        handle = open(path, "rb")  # noqa: SIM115  (closed by the batch)
    except FileNotFoundError:
        return None
    except OSError as exc:
        logger.error("Spool file %s cannot be opened: %s", path, exc)
        return None
    if fcntl is not None:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            return None
    if os.fstat(handle.fileno()).st_nlink == 0:  # applied and removed while we opened it
        handle.close()
        return None
    return handle


def set_aside(path: Path, reason: object) -> None:
    """Rename a file that cannot be applied to ``….broken`` and say so once, in the log."""
    target = path.with_name(path.name + BROKEN_SUFFIX)
    try:
        os.replace(path, target)
    except FileNotFoundError:
        return
    except OSError as exc:
        logger.error("Spool file %s cannot be applied (%s) nor set aside: %s", path, reason, exc)
        return
    logger.error(
        "Spooled delivery reports %s could not be applied and were set aside as %s: %s "
        "(rename it back to %s to try again)",
        path.name,
        target.name,
        str(reason)[:300],
        path.name,
    )


def _remove(paths: list[Path]) -> None:
    for path in paths:
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:  # applied, but left: applying it again changes nothing
            logger.error("Applied spool file %s could not be removed: %s", path, exc)


def _apply_entries(entries: Iterable[tuple[str, str, DeliveryReport]]) -> Counter:
    """Apply (provider, source, report) entries, a call of ``apply_delivery_reports`` per
    provider and source; their counts summed."""
    groups: dict[tuple[str, str], list[DeliveryReport]] = {}
    for provider, source, report in entries:
        groups.setdefault((provider, source), []).append(report)
    applied: Counter = Counter()
    for (provider, source), reports in groups.items():
        # Cleaned when they were written (``report_body``): not cleaned twice.
        applied.update(
            apply_delivery_reports(reports, provider=provider, source=source, cleaned=True)
        )
    return applied


def _apply(batch: _Batch, counts: dict[str, int]) -> None:
    """Apply a batch's reports in one transaction and remove its files when that commits."""
    paths = [path for path, _ in batch.files]
    with transaction.atomic():
        applied = _apply_entries(batch.entries)
        transaction.on_commit(lambda: _remove(paths))
    for key, value in applied.items():
        counts[key] = counts.get(key, 0) + value
    counts["files"] += len(paths)


def _apply_or_isolate(batch: _Batch, counts: dict[str, int]) -> None:
    """Apply ``batch``; when it fails for a reason other than the database being away, apply
    its files one by one, so only the file that fails is set aside."""
    try:
        _apply(batch, counts)
        return
    except UNAVAILABLE:
        raise
    except Exception:
        if len(batch.files) > 1:
            logger.warning(
                "Applying %d spooled files together failed; one by one now", len(batch.files)
            )
        else:
            path = batch.files[0][0]
            logger.exception("Applying spooled delivery reports %s failed", path.name)
            set_aside(path, "an error while applying (the traceback is logged above)")
            counts["broken"] += 1
            return
    for path, handle in batch.files:
        handle.seek(0)
        _apply_or_isolate(_Batch([(path, handle)], read_spool_file(handle)), counts)


def drain_spool(*, max_seconds: float | None = None) -> dict[str, int]:
    """Apply the spooled reports, oldest file first, and remove each file once its reports are
    committed. Returns counts: ``files`` applied, ``broken`` set aside, ``left`` still waiting
    (time was up), and ``apply_delivery_reports``'s counts summed.

    Raises OperationalError/InterfaceError when the database is still away (the files stay; the
    worker logs it and tries again at its next housekeeping). ``max_seconds`` bounds the time
    spent (the worker's housekeeping passes a few seconds); None drains everything.
    """
    counts = {"files": 0, "broken": 0, "left": 0}
    started = time.monotonic()
    try:
        paths = _waiting(spool_dir())
    except OSError as exc:
        logger.error("The report spool %s cannot be read: %s", spool_dir(), exc)
        return counts
    batch = _Batch()
    try:
        for index, path in enumerate(paths):
            if max_seconds is not None and time.monotonic() - started > max_seconds:
                counts["left"] = len(paths) - index
                break
            _take(path, batch, counts)
            if len(batch.entries) >= DRAIN_BATCH:
                _apply_or_isolate(batch, counts)
                batch.close()
        if batch.files:
            _apply_or_isolate(batch, counts)
    finally:
        batch.close()
    if counts["files"] or counts["broken"]:
        logger.info("Spooled delivery reports applied: %s", counts)
    return counts


def _take(path: Path, batch: _Batch, counts: dict[str, int]) -> None:
    """Add spool file ``path`` to ``batch`` (locked), or set it aside when it is unreadable."""
    handle = _open_locked(path)
    if handle is None:
        return
    try:
        entries = read_spool_file(handle)
    except (ValueError, UnicodeDecodeError) as exc:
        handle.close()
        set_aside(path, exc)
        counts["broken"] += 1
        return
    batch.files.append((path, handle))
    batch.entries.extend(entries)


def _waiting(directory: Path) -> list[Path]:
    """The files waiting in ``directory``, oldest first; removes stale temporary files."""
    if not directory.is_dir():
        return []
    limit = time.time() - STALE_TMP_AGE
    for path in directory.glob(f"{TMP_PREFIX}*"):
        with contextlib.suppress(FileNotFoundError):
            if path.stat().st_mtime < limit:
                path.unlink()
    return _listed(directory)


def _listed(directory: Path) -> list[Path]:
    return sorted(p for p in directory.glob(f"*{SUFFIX}") if not p.name.startswith("."))


def spooled_files() -> list[Path]:
    """The spool files waiting to be applied, oldest first."""
    directory = spool_dir()
    return _listed(directory) if directory.is_dir() else []


# --- the report queue (CRM_SMS["REPORTS"] = "queued") ---------------------------------------

#: Queued rows (callback requests) taken and applied in one transaction.
QUEUE_BATCH = 500
_QUEUED_COLUMNS = ("provider", "source", "received_at", "reports")
_INSERT_SQL: dict[tuple[str, int], str] = {}  # (vendor, rows) -> the statement


def receive_reports(reports: list[DeliveryReport], *, provider: str) -> dict[str, int]:
    """A callback's parsed reports, taken as ``CRM_SMS["REPORTS"]`` says: "direct" applies them
    now (``apply_delivery_reports``'s counts), "queued" stores them (``queue_reports``).
    OperationalError/InterfaceError: the database cannot take them (the view spools them)."""
    if conf.report_mode() == "queued":
        return {"received": len(reports), "queued": queue_reports(reports, provider=provider)}
    from .reports import apply_delivery_reports as apply  # looked up now: tests replace it

    return apply(reports, provider=provider, source=EventSource.CALLBACK)


def queue_reports(
    reports: Iterable[DeliveryReport], *, provider: str, source: str = EventSource.CALLBACK
) -> int:
    """Store ``reports``, cleaned, as one ``QueuedReport`` row: one INSERT (no ORM ``save``,
    no lookups), committed when this returns outside a transaction. Returns how many.

    On PostgreSQL outside a transaction, concurrent calls of one process share the INSERT
    and its commit (``crm_sms.groupcommit``); each returns once its own row is committed."""
    reports = list(reports)
    if not reports:
        return 0
    row = queue_row(reports, provider, source)
    connection.ensure_connection()
    if _psycopg is not None and isinstance(connection.connection, _psycopg.Connection):
        if GROUP_COMMIT and connection.get_autocommit() and not connection.in_atomic_block:
            _GROUP.submit(row)
        else:
            _insert_rows([row])
        return len(reports)
    received_at = QueuedReport._meta.get_field("received_at")
    values = [*row[:2], received_at.get_db_prep_save(row[2], connection), row[3]]
    with connection.cursor() as cursor:
        cursor.execute(insert_sql(1), values)
    return len(reports)


def queue_row(
    reports: Iterable[DeliveryReport], provider: str, source: str
) -> tuple[str, str, Any, str]:
    """The values of a ``QueuedReport`` row (``_QUEUED_COLUMNS``) holding ``reports``, cleaned."""
    text = json.dumps([report_body(report) for report in reports], separators=(",", ":"))
    return provider, str(source), timezone.now(), text


def _insert_rows(rows: Sequence[tuple[Any, ...]]) -> None:
    """One INSERT of ``rows`` through a psycopg 3 cursor with server-side binding (no quoting
    in Python), wrapped as ``connection.cursor()`` wraps its own: Django's errors, query
    logging, ``execute_wrapper`` hooks. Never a named prepared statement, which PgBouncer's
    transaction pooling (before 1.21) would lose between transactions."""
    connection.ensure_connection()
    params = [value for row in rows for value in row]
    with connection._prepare_cursor(_UnpreparedCursor(connection.connection)) as cursor:
        cursor.execute(insert_sql(len(rows)), params)


def insert_sql(rows: int) -> str:
    """The INSERT of ``rows`` ``QueuedReport`` rows (the quoting of the connection's database)."""
    key = (connection.vendor, rows)
    sql = _INSERT_SQL.get(key)
    if sql is None:
        meta, quote = QueuedReport._meta, connection.ops.quote_name
        columns = ", ".join(quote(meta.get_field(name).column) for name in _QUEUED_COLUMNS)
        values = ", ".join(["(%s, %s, %s, %s, '')"] * rows)
        sql = _INSERT_SQL[key] = (
            f"INSERT INTO {quote(meta.db_table)} ({columns}, {quote('error')}) VALUES {values}"
        )
    return sql


#: Concurrent callbacks of this process: one INSERT and one commit for all of them.
_GROUP = GroupCommit(_insert_rows, max_batch=100)
#: False: each callback its own INSERT and commit (to compare: ``SMS_REPORT_GROUP_COMMIT=0``
#: in the demo site's wsgi.py, bench/callbacks.py).
GROUP_COMMIT = True


def apply_queued_reports(
    *, max_seconds: float | None = None, batch_size: int = QUEUE_BATCH
) -> dict[str, int]:
    """Apply the queued reports, oldest first, ``batch_size`` rows per transaction that locks
    them (``SKIP LOCKED`` where the database has it; SQLite has one writer), deletes them and
    applies their reports: a crash before the commit leaves the rows queued. A batch that
    fails for a reason other than the database is retried row by row; a row that fails alone
    gets its ``error`` (logged) and waits for an operator. Returns counts: ``rows``,
    ``broken`` and ``apply_delivery_reports``'s. OperationalError/InterfaceError: the database
    is away. ``max_seconds`` bounds the time (a batch is never cut); None: until empty."""
    counts = Counter(rows=0, broken=0)
    started = time.monotonic()
    while _apply_queued_batch(batch_size, counts) >= batch_size:
        if max_seconds is not None and time.monotonic() - started >= max_seconds:
            break
    if counts["rows"] or counts["broken"]:
        logger.debug("Queued delivery reports applied: %s", dict(counts))
    return counts


def _apply_queued_batch(limit: int, counts: Counter, pk: int | None = None) -> int:
    """Take up to ``limit`` rows (or row ``pk``), apply and delete them in one transaction;
    returns how many rows it took."""
    taken: list[int] = []
    try:
        with transaction.atomic():
            rows = _take_rows(limit, pk)
            taken = [row[0] for row in rows]
            applied = _apply_entries(_queued_entries(rows))
    except UNAVAILABLE:
        raise
    except Exception as exc:
        if not taken:
            raise
        if len(taken) > 1:
            logger.warning("Applying %d queued report rows failed; one by one now", len(taken))
            for one in taken:
                _apply_queued_batch(1, counts, pk=one)
            return len(taken)
        logger.exception("Queued delivery reports #%d failed alone: set aside", taken[0])
        reason = f"{type(exc).__name__}: {exc}"[:1000]
        QueuedReport.objects.filter(pk=taken[0]).update(error=reason)
        counts["broken"] += 1
        return 1
    counts.update(applied)
    counts["rows"] += len(taken)
    return len(taken)


def _take_rows(limit: int, pk: int | None) -> list[tuple[int, str, str, str]]:
    """Lock and delete up to ``limit`` waiting rows, in the caller's transaction."""
    rows = QueuedReport.objects.filter(error="").order_by("pk")
    if pk is not None:
        rows = rows.filter(pk=pk)
    if connection.features.has_select_for_update_skip_locked:
        rows = rows.select_for_update(skip_locked=True)
    taken = list(rows.values_list("pk", "provider", "source", "reports")[:limit])
    if taken:
        QueuedReport.objects.filter(pk__in=[row[0] for row in taken]).delete()
    return taken


def _queued_entries(rows: list[tuple[int, str, str, str]]) -> list[tuple[str, str, Any]]:
    """(provider, source, report) of every report of ``rows``; ValueError for a broken row."""
    entries = []
    for pk, provider, source, text in rows:
        items = json.loads(text)
        if not isinstance(items, list):
            raise ValueError(f"queued reports #{pk} are not a list")
        entries.extend((provider, source, _report_from_body(item)) for item in items)
    return entries
