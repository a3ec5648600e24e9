"""django-import-export resources: the contact export, in the columns our import reads back.

Imports go through :mod:`crm_sms.importing` (bulk, with per-row error reports); an exported
CSV or XLSX imports back unchanged.
"""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from import_export import fields, resources, widgets

from .importing import COLUMN_TITLES, IMPORT_FIELDS
from .models import Contact, ContactGroup


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

    def filter_export(self, queryset: QuerySet, **kwargs: Any) -> QuerySet:
        # One query per chunk for the groups instead of one per contact.
        return queryset.prefetch_related("groups")

    def dehydrate_opted_out(self, contact: Contact) -> str:
        return "1" if contact.opted_out else "0"
