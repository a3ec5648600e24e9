"""The contact import pages: upload → check (what would happen, every bad row with its line) →
import. The reading, cleaning and writing live in :mod:`crm_sms.importing`; this module keeps
the uploaded file between the check and the import, and shows the results."""

from __future__ import annotations

import secrets
import tempfile
import time
from pathlib import Path
from typing import Any

from django.contrib import messages
from django.core.exceptions import PermissionDenied, ValidationError
from django.core.files.uploadedfile import UploadedFile
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from ..forms import ContactImportConfirmForm, ContactImportForm
from ..importing import ImportResult, import_contacts

UPLOAD_PREFIX = "crm_sms_import_"
# Uploads checked but never imported (the user went away) are kept a day at most.
UPLOAD_MAX_AGE = 24 * 3600
# The check page lists at most this many bad rows (a file may have thousands).
ERRORS_SHOWN = 500


class ContactImportMixin:
    """Adds the import pages to the contacts' ModelAdmin, for users who may add and change."""

    import_template = "admin/crm_sms/contact/import.html"

    def get_urls(self) -> list:
        info = self.opts.app_label, self.opts.model_name  # type: ignore[attr-defined]
        return [
            path(
                "import/",
                self.admin_site.admin_view(self.import_view),  # type: ignore[attr-defined]
                name=f"{info[0]}_{info[1]}_import",
            ),
            *super().get_urls(),  # type: ignore[misc]
        ]

    def has_import_permission(self, request: HttpRequest) -> bool:
        return self.has_add_permission(request) and self.has_change_permission(request)  # type: ignore[attr-defined]

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        extra_context = {**(extra_context or {})}
        extra_context["has_import_permission"] = self.has_import_permission(request)
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def import_view(self, request: HttpRequest) -> HttpResponse:
        """Upload → check (what would happen, every bad row with its line) → import."""
        if not self.has_import_permission(request):
            raise PermissionDenied
        if request.method == "POST" and "_confirm" in request.POST:
            return self._import_confirmed(request)
        form = ContactImportForm()
        result = confirm_form = None
        if request.method == "POST":
            form = ContactImportForm(request.POST, request.FILES)
            if form.is_valid():
                result, confirm_form = check_upload(form)
        return self._import_page(request, form, confirm_form, result)

    def _import_confirmed(self, request: HttpRequest) -> HttpResponse:
        """Import the checked upload named by the confirmation form, then back to the list."""
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
            messages.warning(
                request,
                ngettext(
                    "%(count)d bad row was skipped.",
                    "%(count)d bad rows were skipped.",
                    result.skipped,
                )
                % {"count": result.skipped},
            )
        return HttpResponseRedirect(self._import_changelist_url())

    def _import_page(
        self,
        request: HttpRequest,
        form: ContactImportForm,
        confirm_form: ContactImportConfirmForm | None,
        result: ImportResult | None,
    ) -> TemplateResponse:
        """The upload form, or the check's result with the form that confirms it."""
        opts = self.opts  # type: ignore[attr-defined]
        site = self.admin_site  # type: ignore[attr-defined]
        context = {
            **site.each_context(request),
            "title": _("Import contacts"),
            "subtitle": None,
            "opts": opts,
            "app_label": opts.app_label,
            "form": form,
            "confirm_form": confirm_form,
            "result": result,
            "errors_shown": result.errors[:ERRORS_SHOWN] if result else [],
            "changelist_url": self._import_changelist_url(),
            "media": self.media + form.media,  # type: ignore[attr-defined]
        }
        request.current_app = site.name
        return TemplateResponse(request, self.import_template, context)

    def _import_changelist_url(self) -> str:
        opts = self.opts  # type: ignore[attr-defined]
        return reverse(f"{self.admin_site.name}:{opts.app_label}_{opts.model_name}_changelist")  # type: ignore[attr-defined]


def check_upload(
    form: ContactImportForm,
) -> tuple[ImportResult | None, ContactImportConfirmForm | None]:
    """Keep the valid form's file and dry-run the import on it: the result and the form that
    confirms it, or ``(None, None)`` with the error on the form (and the file gone)."""
    data = form.cleaned_data
    upload_file = data["file"]
    token, upload = save_upload(upload_file)
    try:
        result = import_contacts(
            upload, filename=upload_file.name, dry_run=True, **import_options(data)
        )
    except ValidationError as exc:
        upload.unlink(missing_ok=True)
        form.add_error("file", exc)
        return None, None
    confirm_form = ContactImportConfirmForm(
        initial={
            "token": token,
            "filename": upload_file.name,
            "format": result.format,
            "encoding": result.encoding or "",
            # A tab is passed by name: hidden inputs keep it, people don't.
            "delimiter": {"\t": "tab"}.get(result.delimiter or "", result.delimiter or ""),
            "group": data["group"],
        }
    )
    return result, confirm_form


def import_options(data: dict[str, Any]) -> dict[str, Any]:
    """The form's choices as :func:`import_contacts` arguments (blank means "detect")."""
    return {
        "format": data["format"] or None,
        "encoding": data["encoding"] or None,
        "delimiter": data["delimiter"] or None,
        "group": data["group"] or None,
    }


def save_upload(upload_file: UploadedFile) -> tuple[str, Path]:
    """Write the upload to a temporary file until it is imported: its token and path."""
    remove_stale_uploads()
    token = secrets.token_urlsafe(18)
    upload = upload_path(token)
    with open(upload, "wb") as out:
        for chunk in upload_file.chunks():
            out.write(chunk)
    return token, upload


def upload_path(token: str) -> Path:
    """Where the upload with ``token`` is kept."""
    return Path(tempfile.gettempdir()) / f"{UPLOAD_PREFIX}{token}"


def remove_stale_uploads(max_age: float = UPLOAD_MAX_AGE) -> None:
    """Delete uploads older than ``max_age`` seconds: checked but never imported."""
    cutoff = time.time() - max_age
    for upload in Path(tempfile.gettempdir()).glob(f"{UPLOAD_PREFIX}*"):
        try:
            if upload.stat().st_mtime < cutoff:
                upload.unlink()
        except OSError:
            continue


def import_summary(result: ImportResult) -> str:
    """The success message: how many contacts are new, updated and unchanged."""
    return _(
        "Import done: %(created)d new contacts, %(updated)d updated, %(unchanged)d unchanged."
    ) % {"created": result.created, "updated": result.updated, "unchanged": result.unchanged}
