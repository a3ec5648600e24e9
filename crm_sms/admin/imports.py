"""The contact import pages: upload → check (what would happen, every bad row with its line) →
import. The reading, cleaning and writing live in :mod:`crm_sms.importing`.

A small file (``IMPORT_IN_REQUEST_ROWS`` rows, ``IMPORT_IN_REQUEST_BYTES``) is checked and
imported inside the request, as before. A bigger one is never read whole by a web request: its
check, and then its import, are background jobs (:mod:`crm_sms.importing.jobs`) that
``sms_worker`` or Celery runs, and the job's page shows their progress (it polls a small JSON
view) and then the result.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.db import transaction
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import get_object_or_404
from django.template.defaultfilters import filesizeformat, yesno
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import timezone
from django.utils.html import format_html
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..forms import ContactImportConfirmForm, ContactImportForm
from ..importing import FIELD_LABELS, IMPORT_FIELDS, ImportResult, import_contacts
from ..importing.cleaning import CONSENT, TIME_ZONE
from ..importing.jobs import (
    UPLOAD_MAX_AGE,
    UPLOAD_PREFIX,
    queue_job,
    remove_stale_uploads,
    save_upload,
    upload_path,
)
from ..importing.limits import Limits, check_file_size, check_stored_file, import_setting
from ..models import ImportJob, ImportJobStatus

__all__ = [
    "ERRORS_SHOWN",
    "UPLOAD_MAX_AGE",
    "UPLOAD_PREFIX",
    "ContactImportMixin",
    "import_options",
    "import_summary",
    "remove_stale_uploads",
    "upload_path",
]

# The check page lists at most this many bad rows (a file may have thousands), and warnings.
ERRORS_SHOWN = 500
#: The preview's columns after the phone, in this order (those the file has).
PREVIEW_FIELDS = (*(f for f in IMPORT_FIELDS if f != "phone"), CONSENT, TIME_ZONE)
#: A job queued this long without a worker taking it: the page says no worker seems to run.
NO_WORKER_AFTER = 30
#: What a multipart request carries besides the file (the other fields, the boundaries).
FORM_OVERHEAD_BYTES = 64 * 1024


class ContactImportMixin:
    """Adds the import pages to the contacts' ModelAdmin, for users who may add and change."""

    import_template = "admin/crm_sms/contact/import.html"
    import_job_template = "admin/crm_sms/contact/import_job.html"

    def get_urls(self) -> list:
        app, model = self.opts.app_label, self.opts.model_name  # type: ignore[attr-defined]
        view = self.admin_site.admin_view  # type: ignore[attr-defined]
        return [
            path("import/", view(self.import_view), name=f"{app}_{model}_import"),
            path(
                "import/<int:job_id>/",
                view(self.import_job_view),
                name=f"{app}_{model}_import_job",
            ),
            path(
                "import/<int:job_id>/status/",
                view(self.import_job_status_view),
                name=f"{app}_{model}_import_job_status",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)  # type: ignore[attr-defined]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {})}
        extra_context["has_import_permission"] = self.has_import_permission(request)
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    # --- upload, check, import ---------------------------------------------------------
    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload → check (what would happen, every bad row with its line) → import."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        too_big = _request_too_big(request) if request.method == "POST" else ""
        if too_big:  # refused before Django reads the body (and writes the upload to disk)
            messages.error(request, too_big)
            return HttpResponseRedirect(request.path)
        if request.method == "POST" and "_confirm" in request.POST:
            return self._import_confirmed(request)
        form = ContactImportForm()
        if request.method == "POST":
            form = ContactImportForm(request.POST, request.FILES)
            if form.is_valid():
                return self._check_upload(request, form)
        return self._import_page(request, form, None, None)

    def _check_upload(self, request: HttpRequest, form: ContactImportForm) -> HttpResponse:
        """Keep the upload and check it: in this request when it is small (the check page
        with the form that confirms it), else as a background job (its page)."""
        data = form.cleaned_data
        upload_file = data["file"]
        try:
            check_file_size(upload_file.size, Limits.from_settings())
        except ValidationError as exc:
            form.add_error("file", exc)
            return self._import_page(request, form, None, None)
        token, upload = save_upload(upload_file.chunks())
        options = import_options(data)
        try:
            size = check_stored_file(upload, Limits.from_settings())
            if size > int(import_setting("IMPORT_IN_REQUEST_BYTES")):
                return self._queue(request, upload, upload_file.name, options, dry_run=True)
            result = import_contacts(
                upload,
                filename=upload_file.name,
                dry_run=True,
                preview_rows=int(import_setting("IMPORT_IN_REQUEST_ROWS")),
                **options,
            )
        except ValidationError as exc:
            upload.unlink(missing_ok=True)
            form.add_error("file", exc)
            return self._import_page(request, form, None, None)
        if not result.complete:  # more rows than a request reads: the rest in the background
            return self._queue(request, upload, upload_file.name, options, dry_run=True)
        confirm_form = ContactImportConfirmForm(
            initial={"token": token, "filename": upload_file.name, **confirm_options(result)}
            | {"group": data["group"]}
        )
        return self._import_page(request, form, confirm_form, result)

    def _import_confirmed(self, request: HttpRequest) -> HttpResponse:
        """Import the checked upload named by the confirmation form, then back to the list.
        (Only a file checked whole in a request has a token: it is small.)"""
        confirm = ContactImportConfirmForm(request.POST)
        upload = upload_path(confirm.cleaned_data["token"]) if confirm.is_valid() else None
        if upload is None or not upload.exists():
            messages.error(request, _("The uploaded file is gone: upload it again."))
            return HttpResponseRedirect(request.path)
        data = confirm.cleaned_data
        try:
            result = import_contacts(upload, filename=data["filename"], **import_options(data))
        except ValidationError as exc:
            messages.error(request, " ".join(exc.messages))
            return HttpResponseRedirect(request.path)
        finally:
            upload.unlink(missing_ok=True)
        messages.success(request, import_summary(result))
        if result.skipped:
            messages.warning(request, skipped_message(result))
        if result.warned:
            messages.warning(request, warned_message(result))
        return HttpResponseRedirect(self._import_changelist_url())

    def _queue(
        self,
        request: HttpRequest,
        upload: Path,
        filename: str,
        options: dict[str, Any],
        dry_run: bool,
    ) -> HttpResponse:
        job = queue_job(
            upload, filename=filename, options=options, dry_run=dry_run, user=request.user
        )
        return HttpResponseRedirect(self._import_job_url(job, "import_job"))

    def _import_page(
        self,
        request: HttpRequest,
        form: ContactImportForm,
        confirm_form: ContactImportConfirmForm | None,
        result: ImportResult | None,
    ) -> TemplateResponse:
        """The upload form, or the check's result with the form that confirms it."""
        context = {
            **self._import_context(request, _("Import contacts")),
            "form": form,
            "confirm_form": confirm_form,
            "result": result,
            "filename": confirm_form.initial.get("filename") if confirm_form else "",
            **self._result_context(result),
            "media": self.media + form.media,  # type: ignore[attr-defined]
        }
        return TemplateResponse(request, self.import_template, context)

    # --- background jobs ---------------------------------------------------------------
    def import_job_view(self, request: HttpRequest, job_id: int) -> HttpResponse:
        """A background check or import: its progress, then its result. A finished check
        offers the import (POST ``_confirm``), which is queued as a job of its own."""
        job = self._get_job(request, job_id)
        if request.method == "POST" and "_confirm" in request.POST:
            return self._queue_checked_import(request, job)
        result = ImportResult.from_dict(job.result) if job.result else None
        title = _("Checking the file") if job.dry_run else _("Importing contacts")
        context = {
            **self._import_context(request, title),
            "job": job,
            "state": job_state(job),
            "result": result if job.status == ImportJobStatus.DONE else None,
            "filename": job.filename,
            **self._result_context(result),
            "status_url": self._import_job_url(job, "import_job_status"),
            "file_kept": Path(job.file_path).exists(),
        }
        return TemplateResponse(request, self.import_job_template, context)

    def import_job_status_view(self, request: HttpRequest, job_id: int) -> JsonResponse:
        """The job's progress as JSON, for its page to poll."""
        return JsonResponse(job_state(self._get_job(request, job_id)))

    def _queue_checked_import(self, request: HttpRequest, check: ImportJob) -> HttpResponse:
        """Queue the import of a file a background check went through (once per check)."""
        with transaction.atomic():
            check = ImportJob.objects.select_for_update().get(pk=check.pk)
            done = check.dry_run and check.status == ImportJobStatus.DONE
            upload = Path(check.file_path)
            if not done or not upload.exists():
                messages.error(request, _("The uploaded file is gone: upload it again."))
                return HttpResponseRedirect(reverse(self._import_url_name("import")))
            if check.options.get("import_job"):  # confirmed already (a second click)
                job = ImportJob.objects.get(pk=check.options["import_job"])
            else:
                options = {k: v for k, v in check.options.items() if k != "import_job"}
                job = queue_job(
                    upload,
                    filename=check.filename,
                    options=options | confirm_options(ImportResult.from_dict(check.result)),
                    dry_run=False,
                    user=request.user,
                )
                check.options = {**check.options, "import_job": job.pk}
                check.save(update_fields=["options"])
        return HttpResponseRedirect(self._import_job_url(job, "import_job"))

    def _get_job(self, request: HttpRequest, job_id: int) -> ImportJob:
        """The job, for a user who may import and started it (or a superuser)."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        job = get_object_or_404(ImportJob, pk=job_id)
        if not (request.user.is_superuser or job.created_by_id == request.user.pk):
            raise Http404
        return job

    # --- helpers -----------------------------------------------------------------------
    def _result_context(self, result: ImportResult | None) -> dict[str, Any]:
        """What ``import_result.html`` shows besides the counts: the file's columns, the
        first good rows, the rows of known phones, the bad rows and the warnings, each
        problem under the column title the file uses."""
        if result is None:
            return {"errors_shown": [], "warnings_shown": []}
        titles = {name: title for _position, title, name in result.headers if name}
        return {
            "columns_shown": [
                {
                    "letter": column_letter(position),
                    "title": title,
                    "field": FIELD_LABELS.get(name, name) if name else "",
                }
                for position, title, name in result.headers
            ],
            "preview": preview_table(result.preview, self._contact_url),
            "matches_shown": [
                {**match, "result": fate(match, self._contact_url)} for match in result.matches
            ],
            "errors_shown": problems_shown(result.errors, titles),
            "warnings_shown": problems_shown(result.warnings, titles),
        }

    def _contact_url(self, contact_id: int) -> str:
        return reverse(self._import_url_name("change"), args=[contact_id])

    def _import_context(self, request: HttpRequest, title: str) -> dict[str, Any]:
        opts = self.opts  # type: ignore[attr-defined]
        site = self.admin_site  # type: ignore[attr-defined]
        request.current_app = site.name
        return {
            **site.each_context(request),
            "title": title,
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "changelist_url": self._import_changelist_url(),
            "upload_url": reverse(self._import_url_name("import")),
        }

    def _import_url_name(self, view: str) -> str:
        opts = self.opts  # type: ignore[attr-defined]
        return f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_{view}"  # type: ignore[attr-defined]

    def _import_job_url(self, job: ImportJob, view: str) -> str:
        return reverse(self._import_url_name(view), args=[job.pk])

    def _import_changelist_url(self) -> str:
        return reverse(self._import_url_name("changelist"))


def job_state(job: ImportJob) -> dict[str, Any]:
    """What the job page shows, as JSON: status, counts, the part of the file read, and a
    sentence for people."""
    waiting = 0
    if job.status == ImportJobStatus.QUEUED:
        waiting = int((timezone.now() - job.created_at).total_seconds())
    return {
        "id": job.pk,
        "status": job.status,
        "status_display": job.get_status_display(),
        "dry_run": job.dry_run,
        "finished": job.status in (ImportJobStatus.DONE, ImportJobStatus.FAILED),
        "rows": job.rows,
        "created": job.created,
        "updated": job.updated,
        "unchanged": job.unchanged,
        "skipped": job.skipped,
        "percent": None if job.fraction is None else round(job.fraction * 100),
        "waiting_seconds": waiting,
        "message": job_message(job, waiting),
        "error": job.error,
    }


def job_message(job: ImportJob, waiting: int) -> str:
    """One sentence on where the job is."""
    if job.status == ImportJobStatus.QUEUED:
        message = _("Queued — waiting for a worker.")
        if job.result:
            message = _("Queued again — a worker stopped; the next one goes on where it was.")
        if waiting >= NO_WORKER_AFTER:
            message += " " + ngettext(
                "No worker has taken it for %(seconds)d second: is “manage.py sms_worker” "
                "(or Celery) running?",
                "No worker has taken it for %(seconds)d seconds: is “manage.py sms_worker” "
                "(or Celery) running?",
                waiting,
            ) % {"seconds": waiting}
        return message
    if job.status == ImportJobStatus.RUNNING:
        size = filesizeformat(job.file_size)
        if job.dry_run:
            text = ngettext(
                "Checking: %(rows)d row read of a %(size)s file.",
                "Checking: %(rows)d rows read of a %(size)s file.",
                job.rows,
            )
        else:
            text = ngettext(
                "Importing: %(rows)d row read of a %(size)s file.",
                "Importing: %(rows)d rows read of a %(size)s file.",
                job.rows,
            )
        return text % {"rows": job.rows, "size": size}
    if job.status == ImportJobStatus.FAILED:
        return _("The file was not imported: %(error)s") % {"error": job.error}
    if job.dry_run:
        return ngettext("Checked: %(rows)d row.", "Checked: %(rows)d rows.", job.rows) % {
            "rows": job.rows
        }
    return import_summary(ImportResult.from_dict(job.result or {}))


def import_options(data: dict[str, Any]) -> dict[str, Any]:
    """The form's choices as :func:`import_contacts` arguments (blank means "detect")."""
    return {
        "format": data["format"] or None,
        "encoding": data["encoding"] or None,
        "delimiter": data["delimiter"] or None,
        "group": data["group"] or None,
    }


def confirm_options(result: ImportResult) -> dict[str, str]:
    """What the check detected, for the import that follows it."""
    return {
        "format": result.format,
        "encoding": result.encoding or "",
        # A tab is passed by name: hidden inputs keep it, people don't.
        "delimiter": {"\t": "tab"}.get(result.delimiter or "", result.delimiter or ""),
    }


def _request_too_big(request: HttpRequest) -> str:
    """The error for a POST whose body is bigger than the import's file limit, else ""."""
    try:
        length = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        return ""
    limits = Limits.from_settings()
    if length <= limits.max_file_bytes + FORM_OVERHEAD_BYTES:
        return ""
    try:
        check_file_size(length - FORM_OVERHEAD_BYTES, limits)
    except ValidationError as exc:
        return " ".join(exc.messages)
    return ""


def import_summary(result: ImportResult) -> str:
    """The success message: how many contacts are new, updated and unchanged."""
    created, updated, unchanged = result.created, result.updated, result.unchanged
    return _("Import done: %(created)s, %(updated)s, %(unchanged)s.") % {
        "created": ngettext("%(count)d new contact", "%(count)d new contacts", created)
        % {"count": created},
        "updated": ngettext("%(count)d updated", "%(count)d updated", updated) % {"count": updated},
        "unchanged": ngettext("%(count)d unchanged", "%(count)d unchanged", unchanged)
        % {"count": unchanged},
    }


def skipped_message(result: ImportResult) -> str:
    return ngettext(
        "%(count)d bad row was skipped.", "%(count)d bad rows were skipped.", result.skipped
    ) % {"count": result.skipped}


def warned_message(result: ImportResult) -> str:
    return ngettext(
        "%(count)d row was imported with a warning: an e-mail that is not one was left out, "
        "or a phone's extension dropped.",
        "%(count)d rows were imported with a warning: an e-mail that is not one was left out, "
        "or a phone's extension dropped.",
        result.warned,
    ) % {"count": result.warned}


# --- the check page's tables ----------------------------------------------------------------


def column_letter(position: int) -> str:
    """A column as spreadsheets name it: 0 → A, 26 → AA (CSV files open in them too)."""
    letters = ""
    position += 1
    while position:
        position, rest = divmod(position - 1, 26)
        letters = chr(ord("A") + rest) + letters
    return letters


def problems_shown(problems: list, titles: dict[str, str]) -> list[dict[str, Any]]:
    """The first ERRORS_SHOWN problems, each under its column's title in the file."""
    return [
        {
            "line": p.line,
            "column": titles.get(p.column) or FIELD_LABELS.get(p.column, p.column),
            "value": p.value,
            "message": p.message,
        }
        for p in problems[:ERRORS_SHOWN]
    ]


def fate(row: dict[str, Any], contact_url: Any) -> str:
    """What happens to a good row: a new contact, or which contact it updates (a link)."""
    if row.get("action") == "new":
        return _("New contact")
    if not row.get("contact_id"):
        return ""
    link = format_html('<a href="{}">{}</a>', contact_url(row["contact_id"]), row["contact"])
    if row["action"] == "update":
        return format_html(_("Updates {}"), link)
    return format_html(_("No change to {}"), link)


def preview_table(rows: list[dict[str, Any]], contact_url: Any) -> dict[str, Any]:
    """The first good rows as they will be imported: the titles of the value columns and,
    per row, its line, its phone as written and in E.164, its values, its fate."""
    fields = [f for f in PREVIEW_FIELDS if any(f in row["values"] for row in rows)]
    return {
        "titles": [FIELD_LABELS[f] for f in fields],
        "rows": [
            {
                "line": row["line"],
                "written": row["written"],
                "phone": row["phone"],
                "cells": [preview_cell(row["values"].get(f)) for f in fields],
                "result": fate(row, contact_url),
            }
            for row in rows
        ],
    }


def preview_cell(value: Any) -> str:
    """A preview value as text: yes/no, a consent's "yes, 2024-03-01", "" for nothing."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return yesno(value)
    if isinstance(value, list):  # a consent: [given, ISO time or None]
        given, at = value
        return f"{yesno(given)}, {at[:10]}" if at else yesno(given)
    return str(value)
