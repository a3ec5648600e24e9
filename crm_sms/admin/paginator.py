"""Paging lists of a million rows in the admin.

- **No COUNT(*) over a whole big table on every page.** An unfiltered list on PostgreSQL takes
  the planner's estimate of the table's rows (``pg_class.reltuples`` scaled to the table's
  present size, as PostgreSQL itself does), as large Django admins do; the page says it is an
  estimate and links to the exact count (``?_exact_count=1``;
  ``templates/admin/crm_sms/pagination.html``). Filtered and searched lists, small tables and
  other databases count exactly (the ModelAdmins set ``show_full_result_count = False``, so a
  filtered page does not count the whole table as well).
- **No deep OFFSET.** A deep page in the second half of the list is read backwards from the
  end (the last page is the first rows of the reversed order: an index scan of a hundred rows;
  with an estimated count, the last page is the last rows and its neighbours count from it); a
  deep page in the first half reads only the primary keys of its rows first (an index-only scan
  when an index holds the ordering columns), then those rows.
- **Filtered pages by their keys.** A filtered or searched page reads its primary keys first,
  then its rows: the filter and the order are then often answered from an index alone (a
  group's members, "Иванов Пётр"), where reading each candidate row was most of the time.
- **A cheap row checkbox.** Django renders the action checkbox of each row through the form
  widget templates (a third of a list's rendering time); the same HTML is formatted directly.
"""

from __future__ import annotations

from typing import Any

from django.contrib.admin import helpers
from django.core.paginator import Page, Paginator
from django.db import connections
from django.db.models import QuerySet
from django.http import HttpRequest
from django.utils.functional import cached_property
from django.utils.html import format_html
from django.utils.safestring import SafeString
from django.utils.translation import gettext as _

#: The query parameter asking a list for its exact count.
EXACT_COUNT_VAR = "_exact_count"
#: Below this many (estimated) rows a list counts exactly: COUNT(*) is cheap there.
ESTIMATE_ABOVE = 100_000
#: Pages starting this deep are read from the end, or by their primary keys first.
DEEP_OFFSET = 5_000

_ESTIMATE_SQL = """
SELECT CASE WHEN c.reltuples < 0 THEN NULL
            WHEN c.relpages = 0 THEN 0
            ELSE c.reltuples / c.relpages
                 * (pg_relation_size(c.oid) / current_setting('block_size')::int)
       END::bigint
FROM pg_class c WHERE c.oid = to_regclass(%s)
"""


def estimated_count(queryset: QuerySet) -> int | None:
    """The planner's estimate of the rows of ``queryset``'s table when the queryset is the whole
    table on PostgreSQL (no filter, DISTINCT, GROUP BY, slice or union); None otherwise."""
    query = queryset.query
    connection = connections[queryset.db]
    if connection.vendor != "postgresql":
        return None
    if query.where or query.distinct or query.combinator or query.is_sliced:
        return None
    if query.group_by is not None or query.extra:
        return None
    table = connection.ops.quote_name(queryset.model._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(_ESTIMATE_SQL, [table])
        row = cursor.fetchone()
    return None if row is None or row[0] is None else int(row[0])


class LargeTablePaginator(Paginator):
    """Django's paginator with an estimated count for whole big tables (``estimated`` says
    when) and deep pages read without a deep OFFSET (see the module's docstring)."""

    def __init__(self, *args: Any, exact: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.exact = exact
        self.estimated = False

    @cached_property
    def count(self) -> int:
        if not self.exact and isinstance(self.object_list, QuerySet):
            estimate = estimated_count(self.object_list)
            if estimate is not None and estimate >= ESTIMATE_ABOVE:
                self.estimated = True
                return estimate
        return super().count

    def page(self, number: Any) -> Page:
        number = self.validate_number(number)
        qs = self.object_list
        plain = isinstance(qs, QuerySet) and qs.ordered and not qs.query.is_sliced
        if not plain or qs.query.distinct or self.count <= self.per_page:
            return super().page(number)
        bottom = (number - 1) * self.per_page
        top = bottom + self.per_page
        if top + self.orphans >= self.count:
            top = self.count
        if bottom >= DEEP_OFFSET and number > self.num_pages / 2:
            rows = self._from_end(number, bottom, top)
        elif bottom >= DEEP_OFFSET or qs.query.where:
            rows = self._by_keys(bottom, top)
        else:
            return super().page(number)
        return self._get_page(rows, number, self)

    def _from_end(self, number: int, bottom: int, top: int) -> list:
        """The page read backwards from the end of the list. With an estimated count the pages
        of the second half are counted from the end: the last page is the last rows."""
        if self.estimated:
            start = (self.num_pages - number) * self.per_page
            stop = start + self.per_page
        else:
            start, stop = self.count - top, self.count - bottom
        rows = list(self.object_list.reverse()[start:stop])
        rows.reverse()
        return rows

    def _by_keys(self, bottom: int, top: int) -> list:
        """The page's primary keys first (an index-only scan when an index holds the filtered
        and ordering columns), then its rows."""
        qs = self.object_list
        keys = list(qs.values_list("pk", flat=True)[bottom:top])
        by_key = {obj.pk: obj for obj in qs.filter(pk__in=keys).order_by()}
        return [by_key[k] for k in keys if k in by_key]


class LargeListMixin:
    """For the ModelAdmins of big tables: :class:`LargeTablePaginator`, the exact count on
    demand (``?_exact_count=1``, linked from the paginator), and a cheap row checkbox."""

    paginator = LargeTablePaginator

    def get_paginator(
        self,
        request: HttpRequest,
        queryset: QuerySet,
        per_page: int,
        orphans: int = 0,
        allow_empty_first_page: bool = True,
    ) -> Paginator:
        exact = getattr(request, "_crm_sms_exact_count", False)
        if issubclass(self.paginator, LargeTablePaginator):
            return self.paginator(queryset, per_page, orphans, allow_empty_first_page, exact=exact)
        return self.paginator(queryset, per_page, orphans, allow_empty_first_page)

    def changelist_view(self, request: HttpRequest, extra_context: dict | None = None):
        if EXACT_COUNT_VAR in request.GET:
            # Not a filter: the ChangeList would refuse an unknown parameter.
            request.GET = request.GET.copy()
            del request.GET[EXACT_COUNT_VAR]
            request._crm_sms_exact_count = True  # type: ignore[attr-defined]
        return super().changelist_view(request, extra_context)  # type: ignore[misc]

    def get_changelist_instance(self, request: HttpRequest):
        changelist = super().get_changelist_instance(request)  # type: ignore[misc]
        changelist.exact_count_url = changelist.get_query_string({EXACT_COUNT_VAR: "1"})
        return changelist

    def action_checkbox(self, obj: Any) -> SafeString:
        """The row's checkbox, the same HTML Django's widget renders, formatted directly."""
        return format_html(
            '<input type="checkbox" name="{}" value="{}" class="action-select" aria-label="{}">',
            helpers.ACTION_CHECKBOX_NAME,
            str(obj.pk),
            _("Select this object for an action - {}").format(obj),
        )
