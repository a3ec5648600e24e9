"""The report spool: delivery reports kept on disk while the database cannot take them.

MegaFon cannot be asked for a status, so a report it posted is lost when we answer 500 often
enough (it gives up after three tries). When applying a callback's reports fails because the
database is unreachable or busy (``OperationalError``, ``InterfaceError``: connection refused,
restarting, too many connections, a lock timeout), the endpoint writes them here and answers
200; the worker's housekeeping and ``manage.py sms_status`` apply them later through
``reports.apply_delivery_reports`` (idempotent and order-proof, so a late, repeated or
reordered report changes nothing it should not).

The spool is a directory (``CRM_SMS["REPORT_SPOOL_DIR"]``, env ``SMS_REPORT_SPOOL_DIR``;
default ``<BASE_DIR>/sms-report-spool``) with one file per request, ``<time>-<pid>-<random>.jsonl``,
one JSON object per report::

    {"v": 1, "provider": "default", "source": "callback", "received_at": "2026-…+00:00",
     "report": {"status": "delivered", "msg_id": "…", "provider_message_id": "…",
                "error_code": "", "error_message": "", "delivered_at": "…" or null, "raw": {…}}}

A file is written under a temporary name (``.tmp-….part``), flushed and fsync'ed, then renamed, and
the directory is fsync'ed: a file with the final name is always complete, and survives a crash
or a power cut once the provider has its 200. Draining locks each file (``flock``), applies a
few files' reports in one transaction, and deletes the files when it commits; a file that cannot
be read or applied is renamed ``….broken`` and logged (rename it back to ``.jsonl`` to retry).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from django.conf import settings
from django.db import InterfaceError, OperationalError, transaction
from django.utils import timezone
from django.utils.dateparse import parse_datetime

from . import conf
from .backends.base import DeliveryReport
from .models import EventSource
from .reports import apply_delivery_reports, clean_report

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


def _report_line(report: DeliveryReport, head: dict[str, Any]) -> str:
    report = clean_report(report)
    delivered_at = report.delivered_at.isoformat() if report.delivered_at else None
    body = {
        "status": str(report.status),
        "msg_id": report.msg_id,
        "provider_message_id": report.provider_message_id,
        "error_code": report.error_code,
        "error_message": report.error_message,
        "delivered_at": delivered_at,
        "raw": report.raw,
    }
    return json.dumps({**head, "report": body}, separators=(",", ":"))


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
    if not isinstance(body, dict):
        raise ValueError("no report")
    delivered_at = body.get("delivered_at")
    if delivered_at is not None:
        delivered_at = parse_datetime(delivered_at) if isinstance(delivered_at, str) else None
        if delivered_at is None:
            raise ValueError("delivered_at is not a time")
    report = DeliveryReport(
        _text(body, "status"),
        msg_id=_text(body, "msg_id"),
        provider_message_id=_text(body, "provider_message_id"),
        error_code=_text(body, "error_code"),
        error_message=_text(body, "error_message"),
        delivered_at=delivered_at,
        raw=body.get("raw"),
    )
    return provider, source, report


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


def _apply(batch: _Batch, counts: dict[str, int]) -> None:
    """Apply a batch's reports in one transaction and remove its files when that commits."""
    groups: dict[tuple[str, str], list[DeliveryReport]] = {}
    for provider, source, report in batch.entries:
        groups.setdefault((provider, source), []).append(report)
    paths = [path for path, _ in batch.files]
    applied: dict[str, int] = {}
    with transaction.atomic():
        for (provider, source), reports in groups.items():
            result = apply_delivery_reports(reports, provider=provider, source=source)
            for key, value in result.items():
                applied[key] = applied.get(key, 0) + value
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
