"""Finding contacts among a million: a search and a group filter that indexes answer.

The lookups are the ones the indexes of migration 0006 fit: on PostgreSQL ``istartswith`` and
``iexact`` compile to ``UPPER(col::text) LIKE 'X%'`` and ``UPPER(col::text) = 'X'``, which the
``UPPER(last_name)`` and ``UPPER(email)`` indexes (``text_pattern_ops``) answer; the external id
is matched exactly (its plain index). SQLite runs the same lookups without those indexes.

- ``ivanov@mail.ru``: the e-mail, whatever its case;
- ``Иванов``: last names starting with it;
- ``Иванов Пётр С``: last name, first name and middle name, each by its start;
- ``900555``, ``900-555`` (only digits and a phone's punctuation, at least
  :data:`MIN_PHONE_DIGITS` digits, not a whole phone): contacts whose phone contains those
  digits (:class:`PhoneDigits` ``__contains``; on PostgreSQL the trigram index of migration
  0012, built on that same expression, answers it),
  or whose external id is the term;
- ``CRM-000123`` (has digits, is not a phone): the external id, exactly.

A whole phone in any notation is found before this by :class:`.contacts.PhoneSearchMixin`.

Search results are ordered by ``UPPER(last_name)`` (in the "C" collation on PostgreSQL),
first name and id: the order of the PostgreSQL index, so the first page of "Иванов" (4% of a
million) reads a hundred index entries, and its count is an index-only scan. Ordered by the
plain last name, PostgreSQL walked the list's name index and filtered, expecting the matches to
be spread over the whole list; the matches of a prefix sit together, so for a common one it
read half the table first.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.contrib.admin.views.main import SEARCH_VAR
from django.db import connections
from django.db.models import CharField, Exists, Func, OuterRef, Q, QuerySet
from django.db.models.functions import Collate, Upper
from django.db.models.lookups import Contains
from django.http import HttpRequest
from django.utils.translation import gettext_lazy

from ..models import Contact, ContactGroup

#: The name fields a search term's words are matched against, in order.
NAME_FIELDS = ("last_name", "first_name", "middle_name")
#: Fewer digits than this are in too many phones to be worth a search (a trigram index needs 3).
MIN_PHONE_DIGITS = 4
#: What a part of a number may be written with besides digits.
PHONE_PUNCTUATION = frozenset(" +-().")


def phone_digits(term: str) -> str | None:
    """The digits of a term that is part of a number ("900555", "(900) 555-1"), or None when
    the term has other characters or fewer than :data:`MIN_PHONE_DIGITS` digits."""
    if any(not ch.isdigit() and ch not in PHONE_PUNCTUATION for ch in term):
        return None
    digits = "".join(ch for ch in term if ch.isdigit())
    return digits if len(digits) >= MIN_PHONE_DIGITS and digits.isascii() else None


class PhoneDigits(Func):
    """A phone's digits, on PostgreSQL: ``regexp_replace(phone::text, '[^0-9]', '', 'g')``,
    the expression migration 0012's trigram index is built on (the constants are written into
    the SQL, not passed as parameters, so the planner can match the index). Indexing the plain
    column instead led the planner to that index for the import's ``phone IN (…)`` (pg_trgm
    answers ``=`` too): 50 times slower than the unique index. Elsewhere the phone as stored
    (the contacts' phones are E.164, so a part of the digits is a part of the phone)."""

    output_field = CharField()

    def as_sql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list[Any]]:
        return compiler.compile(self.source_expressions[0])

    def as_postgresql(self, compiler: Any, connection: Any, **extra: Any) -> tuple[str, list]:
        return super().as_sql(
            compiler,
            connection,
            template="regexp_replace((%(expressions)s)::text, '[^0-9]', '', 'g')",
            **extra,
        )


def contact_search(term: str) -> Q | None:
    """The condition for a search ``term`` (None when it is blank)."""
    term = term.strip()
    if not term:
        return None
    if "@" in term:
        return Q(email__iexact=term)
    digits = phone_digits(term)
    if digits:  # an id may be all digits too
        return Q(Contains(PhoneDigits("phone"), digits)) | Q(external_id=term)
    if any(ch.isdigit() for ch in term):  # names have no digits; ids have
        return Q(external_id=term)
    words = term.split()[: len(NAME_FIELDS)]
    return Q(**{f"{f}__istartswith": w for f, w in zip(NAME_FIELDS, words, strict=False)})


def search_ordering(vendor: str) -> tuple[Any, ...]:
    """The order of search results: the name index's on PostgreSQL (its first column is
    ``UPPER(last_name) COLLATE "C"``), else by ``UPPER(last_name)``."""
    last = Upper("last_name")
    if vendor == "postgresql":
        last = Collate(last, "C")
    return (last, "first_name", "id")


class ContactSearchMixin:
    """``get_search_results`` with :func:`contact_search`, and the search results' order."""

    def get_search_results(
        self, request: HttpRequest, queryset: QuerySet, search_term: str
    ) -> tuple[QuerySet, bool]:
        condition = contact_search(search_term)
        if condition is None:
            return queryset, False
        return queryset.filter(condition), False

    def get_ordering(self, request: HttpRequest) -> Any:
        if request.GET.get(SEARCH_VAR, "").strip():
            database = self.model.objects.db  # type: ignore[attr-defined]
            return search_ordering(connections[database].vendor)
        return super().get_ordering(request)  # type: ignore[misc]


class GroupFilter(admin.SimpleListFilter):
    """The contact list's group filter as an ``EXISTS`` over the memberships: Django's own
    filter on a many-to-many field joins the memberships and adds ``SELECT DISTINCT`` over every
    column of every matching contact. Same parameter, so links keep working."""

    title = gettext_lazy("groups")
    parameter_name = "groups__id__exact"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[int, str]]:
        # Once per request: an action's page builds the filters twice.
        groups = getattr(request, "_crm_sms_groups", None)
        if groups is None:
            groups = [(g.pk, g.name) for g in ContactGroup.objects.order_by("name")]
            request._crm_sms_groups = groups  # type: ignore[attr-defined]
        return groups

    def queryset(self, request: HttpRequest, queryset: QuerySet) -> QuerySet:
        value = self.value()
        if not value:
            return queryset
        members = Contact.groups.through.objects.filter(
            contact_id=OuterRef("pk"), contactgroup_id=value
        )
        return queryset.filter(Exists(members))
