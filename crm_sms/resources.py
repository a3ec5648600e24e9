"""django-import-export resources: the contact export, in the columns our import reads back.

Imports go through :mod:`crm_sms.importing` (bulk, with per-row error reports); an exported
CSV or XLSX imports back unchanged, but for the apostrophe of escaped formulas (below).

Every exported cell that a spreadsheet would run as a formula (``=HYPERLINK(…)``,
``+cmd|' /C calc'!A0``, ``@SUM(…)``, ``-2+3``) gets a leading apostrophe, as OWASP advises for
CSV injection, whatever the site's settings: the escaping is in the resource, not in
``IMPORT_EXPORT_ESCAPE_FORMULAE_ON_EXPORT`` (which only strips one leading ``=``).
"""

from __future__ import annotations

import re
from typing import Any

from django.db.models import QuerySet
from import_export import fields, resources, widgets

from .importing import COLUMN_TITLES, IMPORT_FIELDS
from .models import Contact, ContactGroup

#: What a spreadsheet treats as the start of a formula (OWASP "CSV Injection"), tab and CR
#: included because Excel skips them before a formula.
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
# A plain signed integer (an E.164 phone such as +79001234212) is a number to a spreadsheet,
# never a formula: left as it is, so phones export and import back unchanged.
_PLAIN_NUMBER = re.compile(r"[+-]?[0-9]+")


def escape_formula(value: Any) -> Any:
    """``value`` with a leading apostrophe if a spreadsheet would read it as a formula.

    Only strings starting with ``= + - @``, a tab or a carriage return are changed, and not
    plain signed integers (phones in E.164); anything else is returned as it is.
    """
    if isinstance(value, str) and value.startswith(FORMULA_START):
        if not _PLAIN_NUMBER.fullmatch(value):
            return "'" + value
    return value


class ContactResource(resources.ModelResource):
    """Contacts as rows: the column titles are in the user's language (Russian or English)."""

    groups = fields.Field(
        attribute="groups",
        column_name="groups",
        widget=widgets.ManyToManyWidget(ContactGroup, separator=", ", field="name"),
    )

    class Meta:
        model = Contact
        fields = IMPORT_FIELDS
        export_order = IMPORT_FIELDS
        import_id_fields = ("phone",)
        skip_unchanged = True
        chunk_size = 2000

    def get_export_headers(self, selected_fields: Any = None) -> list[str]:
        """Translated titles ("Телефон", "Phone"), which the import recognizes in any language."""
        return [
            str(COLUMN_TITLES[f.attribute][0]) if f.attribute in COLUMN_TITLES else f.column_name
            for f in self.get_export_fields(selected_fields)
        ]

    def export_field(self, field: fields.Field, instance: Any, **kwargs: Any) -> Any:
        """The cell of ``field``, escaped so that no spreadsheet runs it (``escape_formula``)."""
        return escape_formula(super().export_field(field, instance, **kwargs))

    def filter_export(self, queryset: QuerySet, **kwargs: Any) -> QuerySet:
        # One query per chunk for the groups instead of one per contact.
        return queryset.prefetch_related("groups")

    def dehydrate_opted_out(self, contact: Contact) -> str:
        return "1" if contact.opted_out else "0"
