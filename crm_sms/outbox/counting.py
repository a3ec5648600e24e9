"""Recipients and exclusions counted in SQL: what ``preview_campaign`` would count for a text
that renders the same for everyone, without streaming the rows through Python.

"Send SMS…" with "select all" shows these counts before a text is typed; with a million
contacts, streaming every row took 10 s, counting in the database takes a fraction of one.
The numbers are the same as :func:`crm_sms.outbox.recipients.iter_recipients` gives for a
static text (``tests/test_scale_admin.py`` checks it): rows flagged ``opted_out`` first, then
invalid phones, then (for models other than Contact) phones an opted-out Contact has, then
repeated phones.

Phones already in E.164 (as imports and forms store them) are counted by one aggregate query;
only the rows in other notations are read, and normalized in Python as the queueing does.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import FieldDoesNotExist
from django.db.models import Count, Q, QuerySet

from ..models import Contact
from .recipients import _clean_phone

#: E.164 as SQL can check it (PostgreSQL ``~``; Django's REGEXP on SQLite); the same as
#: ``recipients._E164`` for ASCII digits. Other rows are normalized in Python.
E164_SQL = r"^\+[1-9][0-9]{7,14}$"

#: Normalized phones looked up per query when odd rows are matched against the E.164 ones.
LOOKUP_CHUNK = 1000


@dataclass
class RecipientCounts:
    """Who would get a text: ``recipients``, and ``excluded`` by reason (opted_out, invalid,
    duplicate), as :class:`crm_sms.outbox.CampaignPreview` has them."""

    recipients: int
    excluded: dict[str, int] = field(
        default_factory=lambda: {"opted_out": 0, "invalid": 0, "duplicate": 0}
    )


def _has_field(model: type, name: str) -> bool:
    try:
        model._meta.get_field(name)
    except FieldDoesNotExist:
        return False
    return True


def count_recipients(contacts: QuerySet, *, phone_field: str = "phone") -> RecipientCounts:
    """Count the recipients and exclusions of ``contacts`` (any model with a phone field) in
    SQL: one aggregate query (no per-row work in it), one read of the rows whose phone is not
    E.164 (few; a partial index holds them on PostgreSQL), and lookups of their normalized
    phones."""
    model = contacts.model
    rows = contacts.order_by()
    flagged = Q(opted_out=True) if _has_field(model, "opted_out") else None
    kept = ~flagged if flagged is not None else Q()  # not flagged opted out
    opted_raw = None
    if not issubclass(model, Contact):  # another model: an opted-out Contact's phone is left out
        opted = Contact.objects.filter(opted_out=True).values("phone")
        opted_raw = Q(**{f"{phone_field}__in": opted})
    aggregates: dict[str, Any] = {"total": Count("*")}
    if flagged is not None:
        aggregates["flagged"] = Count("pk", filter=flagged)
    if opted_raw is not None:
        aggregates["opted_raw"] = Count("pk", filter=kept & opted_raw)
    unique = _is_unique(model, phone_field)
    if not unique:
        not_opted = kept & ~opted_raw if opted_raw is not None else kept
        aggregates["distinct"] = Count(phone_field, filter=not_opted, distinct=True)
    totals = rows.aggregate(**aggregates)
    odd_filter = kept & ~Q(**{f"{phone_field}__regex": E164_SQL})
    odd = list(rows.filter(odd_filter).values_list(phone_field, flat=True))
    tally = _Tally(totals, odd, unique)
    if opted_raw is not None:
        tally.drop_opted_raw(_existing(Contact.objects.filter(opted_out=True), "phone", odd))
    counts = tally.e164_counts()
    e164_rows = rows.filter(kept & Q(**{f"{phone_field}__regex": E164_SQL}))
    _add_odd_rows(counts, odd, e164_rows, phone_field, opted_raw is not None)
    return counts


class _Tally:
    """The aggregate's totals, less the odd rows (read separately): what the E.164 rows give."""

    def __init__(self, totals: dict[str, int], odd: list[Any], unique: bool):
        self.totals = totals
        self.odd = odd
        self.unique = unique
        self.odd_opted_raw: set[Any] = set()

    def drop_opted_raw(self, opted: set[Any]) -> None:
        """Odd rows whose raw phone an opted-out Contact has: the aggregate counted them in
        ``opted_raw`` and left them out of ``distinct``; they are judged by their normalized
        phone instead."""
        self.odd_opted_raw = opted

    def e164_counts(self) -> RecipientCounts:
        totals, odd = self.totals, self.odd
        flagged = totals.get("flagged", 0)
        odd_in_opted = sum(1 for raw in odd if raw in self.odd_opted_raw)
        opted_e164 = totals.get("opted_raw", 0) - odd_in_opted
        valid = totals["total"] - flagged - len(odd) - opted_e164
        if self.unique:
            distinct = valid
        else:
            odd_kept = {raw for raw in odd if raw is not None and raw not in self.odd_opted_raw}
            distinct = totals["distinct"] - len(odd_kept)
        counts = RecipientCounts(recipients=distinct)
        counts.excluded["opted_out"] = flagged + opted_e164
        counts.excluded["duplicate"] = valid - distinct
        return counts


def _is_unique(model: type, phone_field: str) -> bool:
    """Whether every row has its own phone (then no DISTINCT over a million phones)."""
    if "__" in phone_field:
        return False
    return model._meta.get_field(phone_field).unique


def _add_odd_rows(
    counts: RecipientCounts,
    raw_phones: list[Any],
    e164_rows: QuerySet,
    phone_field: str,
    check_opted: bool,
) -> None:
    """Count the rows whose phone is not E.164, normalized as the queueing does: invalid,
    opted out (another model's row with an opted-out Contact's phone), a repeat of each other
    or of an E.164 row, or recipients."""
    phones: list[str] = []
    for raw in raw_phones:
        phone = _clean_phone(raw)
        if phone is None:
            counts.excluded["invalid"] += 1
        else:
            phones.append(phone)
    if not phones:
        return
    if check_opted:
        opted = _existing(Contact.objects.filter(opted_out=True), "phone", phones)
        counts.excluded["opted_out"] += sum(1 for p in phones if p in opted)
        phones = [p for p in phones if p not in opted]
    distinct = set(phones)
    # Not opted out (checked above), so an E.164 row with the same phone is a recipient.
    new = distinct - _existing(e164_rows, phone_field, distinct)
    counts.recipients += len(new)
    counts.excluded["duplicate"] += len(phones) - len(new)


def _existing(rows: QuerySet, phone_field: str, phones: Iterable[Any]) -> set[Any]:
    """Which of ``phones`` some row of ``rows`` has."""
    found: set[Any] = set()
    ordered = sorted({p for p in phones if p is not None})
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        chunk = ordered[start : start + LOOKUP_CHUNK]
        lookup = {f"{phone_field}__in": chunk}
        found.update(rows.filter(**lookup).values_list(phone_field, flat=True).distinct())
    return found


def e164_counts_by(rows: QuerySet, field_name: str, *, phone_field: str = "phone") -> dict:
    """How many of ``rows`` have each value of ``field_name``, among the rows whose phone is
    E.164: all rows grouped, less the few others (read through PostgreSQL's partial index of
    them). Filtering on ``E164_SQL`` instead runs the regular expression on every row (0.4 s
    for a million)."""
    rows = rows.order_by()
    counts = dict(rows.values_list(field_name).annotate(n=Count("*")))
    odd = rows.exclude(**{f"{phone_field}__regex": E164_SQL})
    for value, n in odd.values_list(field_name).annotate(n=Count("*")):
        counts[value] -= n
    return {value: n for value, n in counts.items() if n}
