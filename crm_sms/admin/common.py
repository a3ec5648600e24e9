"""What the admin modules share: the send and export permissions, the draft kept in the
session, and the texts that say why a recipient was left out."""

from __future__ import annotations

from collections.abc import Mapping

from django.utils.translation import gettext_lazy

#: Needed by everything that can make an SMS go out (docs/security.md, "Permissions").
SEND_SMS_PERMISSION = "crm_sms.send_sms"
#: Needed to export contacts: "view" shows a page of them, an export hands out every phone and
#: email. Its codename is what django-import-export's IMPORT_EXPORT_EXPORT_PERMISSION_CODE =
#: "export" would ask for too.
EXPORT_CONTACTS_PERMISSION = "crm_sms.export_contact"

#: The admin's empty value on every crm-sms page (Django's default is "-"): the app's own
#: texts (a time not yet set, no reason) write "—", and one page must not mix the two.
EMPTY_VALUE = "—"

# The session key of the draft campaign chosen with "Send to contacts…": the next "Send SMS…"
# page starts from its text.
DRAFT_SESSION_KEY = "crm_sms_draft"

# Why a recipient was left out, as the preview and the campaign page say it.
EXCLUDED_REASONS = {
    "opted_out": gettext_lazy("opted out"),
    "invalid": gettext_lazy("invalid phone"),
    "duplicate": gettext_lazy("duplicate phone"),
    "no_consent": gettext_lazy("no consent to advertising"),
}


def excluded_rows(excluded: Mapping[str, int]) -> list[tuple[str, int]]:
    """``(reason as people read it, count)`` for each reason that left someone out."""
    return [(str(EXCLUDED_REASONS.get(k, k)), n) for k, n in excluded.items() if n]
