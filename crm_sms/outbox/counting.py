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

A text made from a template depends only on the values of the variables it reads:
``group_recipients`` groups the Contacts by them in SQL (the same recipients and exclusions
streaming gives, ``tests/test_send_preview_counts.py``), ``render_groups`` renders each
distinct text once and sums its SMS parts times its recipients (``TextParts``). When the
names make very many distinct texts (``{{ last_name }} {{ first_name }}``: 90,000 of a million
contacts, 4 s to render) and only their lengths decide the texts' parts and validity
(``lengths_decide``: a Cyrillic text), the Contacts are grouped by the lengths of the names
instead, each length standing in for every name of its length: on PostgreSQL always for the
names (a partial index finds the few names no stand-in represents), for other fields when
PostgreSQL expects very many groups.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from django.core.cache import cache
from django.core.exceptions import FieldDoesNotExist
from django.db import connections
from django.db.models import CharField, Count, F, Func, IntegerField, Q, QuerySet, TextField
from django.db.models.functions import Length
from django.db.models.lookups import GreaterThan

from ..consent import CONSENTED
from ..models import Contact
from ..quiet_hours import effective_zone
from ..text import SMSInfo
from ..translit import stays_ucs2
from .recipients import Selection, _clean_phone, cached_sms_info, odd_phone, render_values

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


# --- recipients grouped by what their text depends on ------------------------------------------


@dataclass
class RecipientGroups:
    """The recipients of a selection grouped by the values their text is made of: ``groups``
    maps a key (the values of ``names``, in order, as the template gets them; with ``zoned``
    the recipient's effective time zone last) to how many recipients have it. ``excluded`` as
    ``iter_recipients`` counts it, before any text is rendered."""

    names: tuple[str, ...]
    zoned: bool
    groups: dict[tuple, int]
    excluded: dict[str, int]

    @property
    def recipients(self) -> int:
        return sum(self.groups.values())

    def values(self, key: tuple) -> dict[str, Any]:
        """The template values of a group's ``key``."""
        return dict(zip(self.names, key, strict=False))

    def zone(self, key: tuple) -> str:
        return key[-1] if self.zoned else ""


def _any_phone(length: int | None) -> str:
    """A stand-in E.164 phone of ``length`` characters: digits only, so its text has the
    characters, encoding and SMS parts the real phone's has."""
    return "" if length is None else "+1" + "0" * (length - 2)


#: Above how many groups (PostgreSQL's estimate) a template whose texts are decided by the
#: lengths of fields other than the names (``lengths_decide``) is counted by those lengths:
#: rendering costs about 25 microseconds a group, the check for astral characters in fields
#: no index covers about 0.5 s a million rows.
LENGTH_GROUPING_FROM = 5_000
#: A name with a character beyond the Basic Multilingual Plane (two UCS-2 units) is not like
#: any other of its length: a selection that has one is grouped by the names themselves.
ASTRAL = r"[\U00010000-\U0010FFFF]"
#: The Contact fields PostgreSQL keeps a partial index of astral names for (migration 0014).
ASTRAL_INDEXED = frozenset({"first_name", "middle_name", "last_name"})
#: What a name of a given length becomes in a stand-in text: a Cyrillic letter, one UCS-2 unit.
STAND_IN = "ж"


def lengths_decide(sel: Selection) -> bool:
    """Whether the lengths of the names alone decide every text ``sel`` makes: its characters,
    SMS parts and whether the provider takes it. So for a plain template (names pasted in) on
    text fields, without transliteration, whose own text is not blank and is sent in UCS-2
    whatever the names (a Cyrillic letter: ``translit.stays_ucs2``; look-alikes are never
    replaced then), with a backend that checks only a text's length. A name of BMP characters
    then counts as any other of its length (``group_recipients`` checks there is no other)."""
    template = sel.template
    if not template.is_plain or template.is_static or sel.translit:
        return False
    if not type(sel.backend).validates_length_only:
        return False
    literal = template.literal_text
    if not literal.strip() or not stays_ucs2(literal):
        return False
    for name in template.names:
        try:
            field_object = sel.model._meta.get_field(sel.variables[name])
        except FieldDoesNotExist:
            return False
        if not isinstance(field_object, CharField | TextField):
            return False
    return True


class _Grouping:
    """How ``group_recipients`` reads a selection: the key columns and the row filters. With
    ``lengths`` (``lengths_decide``) every name is grouped by its length."""

    def __init__(self, sel: Selection, zoned: bool, *, lengths: bool = False):
        self.sel = sel
        self.zoned = zoned
        self.names = sel.template.names
        # {{ phone }} gets the normalized phone, E.164 digits: only its length counts.
        self.phones = {
            name
            for name in self.names
            if name == "phone" and sel.variables[name] == sel.phone_field
        }
        self.by_length = set(self.names) if lengths else set(self.phones)
        self.fields = [sel.variables[name] for name in self.names]
        self.zones: dict[str, str] = {}
        kept = ~Q(opted_out=True)
        self.no_consent = kept & ~CONSENTED if sel.advertising else None
        self.kept = kept & CONSENTED if sel.advertising else kept

    def columns(self) -> dict[str, Any]:
        """The GROUP BY expressions, by alias."""
        columns: dict[str, Any] = {}
        for i, (name, field_name) in enumerate(zip(self.names, self.fields, strict=True)):
            columns[f"k{i}"] = Length(field_name) if name in self.by_length else F(field_name)
        if self.zoned:
            columns["tz"] = F("time_zone")
        return columns

    def raw_key(self, row: dict[str, Any]) -> tuple:
        """A row's key as the GROUP BY computes it."""
        key = []
        for name, field_name in zip(self.names, self.fields, strict=True):
            value = row[field_name]
            key.append(len(value) if name in self.by_length and value is not None else value)
        if self.zoned:
            key.append(row["time_zone"])
        return tuple(key)

    def key_of_raw(self, raw: tuple) -> tuple:
        """The template values (and zone) a GROUP BY key stands for."""
        key = []
        for name, value in zip(self.names, raw, strict=False):
            if name in self.phones:
                key.append(_any_phone(value))
            elif name in self.by_length:
                key.append(STAND_IN * (value or 0))
            else:
                key.append("" if value is None else value)
        if self.zoned:
            zone = self.zones.get(raw[-1])
            if zone is None:
                zone = self.zones[raw[-1]] = effective_zone(raw[-1])
            key.append(zone)
        return tuple(key)

    def key_of_row(self, row: dict[str, Any], phone: str) -> tuple:
        """The template values (and zone) of a recipient row read in Python."""
        raw = list(self.raw_key(row))
        for i, name in enumerate(self.names):
            if name in self.phones:
                raw[i] = len(phone)
        return self.key_of_raw(tuple(raw))

    def read_columns(self) -> list[str]:
        columns = ["pk", self.sel.phone_field, "opted_out", *self.fields]
        if self.sel.advertising:
            columns += ["consent_given_at", "consent_withdrawn_at"]
        if self.zoned:
            columns.append("time_zone")
        return list(dict.fromkeys(columns))

    def is_kept(self, row: dict[str, Any]) -> bool:
        if row["opted_out"]:
            return False
        if self.sel.advertising:
            return row["consent_given_at"] is not None and row["consent_withdrawn_at"] is None
        return True


def group_recipients(sel: Selection, contacts: QuerySet, *, zoned: bool) -> RecipientGroups | None:
    """Group the recipients ``iter_recipients`` would yield for ``sel`` by the values their
    text depends on (``sel.template.names``; with ``zoned`` their time zone too), counting in
    SQL: one GROUP BY over the selection, one read of the rows whose phone is not E.164 (few;
    a partial index holds them on PostgreSQL) and one look-up of the E.164 rows that share a
    phone with them. Those rows are judged in Python in primary-key order, as streaming does,
    so the groups and exclusions are exactly what streaming gives. For Contacts (a unique
    phone, opted-out and consent fields of their own); None for other models and sliced or
    combined querysets, and for ``{{ phone }}`` in a template with tags or filters."""
    query = contacts.query
    if not sel.is_contact or query.is_sliced or query.combinator:
        return None
    grouping = _Grouping(sel, zoned)
    if grouping.phones and not sel.template.is_plain:
        return None
    rows = contacts.order_by()
    counters: dict[str, Any] = {"n": Count("pk", filter=grouping.kept)}
    counters["flagged"] = Count("pk", filter=Q(opted_out=True))
    if grouping.no_consent is not None:
        counters["no_consent"] = Count("pk", filter=grouping.no_consent)
    raw_groups = None
    if grouping.names and lengths_decide(sel) and _length_grouping_pays(rows, grouping, counters):
        by_length = _Grouping(sel, zoned, lengths=True)
        raw_groups = _grouped_by_length(rows, by_length, counters)
        if raw_groups is not None:
            grouping = by_length
    if raw_groups is None:
        raw_groups = _grouped(rows, grouping, counters)
    excluded = dict(sel.excluded)
    excluded["opted_out"] += sum(n[1] for _, n in raw_groups)
    if "no_consent" in excluded:
        excluded["no_consent"] += sum(n[2] for _, n in raw_groups)
    counts = {key: n[0] for key, n in raw_groups if n[0]}
    contested = _contested_rows(grouping, rows, counts)
    groups: dict[tuple, int] = {}
    for raw, n in counts.items():
        if n:
            key = grouping.key_of_raw(raw)
            groups[key] = groups.get(key, 0) + n
    seen: set[str] = set()
    for row in sorted(contested, key=lambda r: r["pk"]):
        phone = _clean_phone(row[sel.phone_field])
        if phone is None:
            excluded["invalid"] += 1
        elif phone in seen:
            excluded["duplicate"] += 1
        else:
            seen.add(phone)
            key = grouping.key_of_row(row, phone)
            groups[key] = groups.get(key, 0) + 1
    return RecipientGroups(grouping.names, zoned, groups, excluded)


def _grouped(
    rows: QuerySet, grouping: _Grouping, counters: dict[str, Any]
) -> list[tuple[tuple, tuple]]:
    """(GROUP BY key, counters) of every group of ``rows``."""
    columns = grouping.columns()
    if not columns:
        totals = rows.aggregate(**counters)
        return [((), tuple(totals[name] for name in counters))]
    grouped = rows.values(**columns).annotate(**counters)
    width = len(columns)
    return [(g[:width], g[width:]) for g in grouped.values_list(*columns, *counters)]


def _length_grouping_pays(rows: QuerySet, grouping: _Grouping, counters: dict[str, Any]) -> bool:
    """Whether to group by the names' lengths rather than by the names, on PostgreSQL: always
    for the names its partial index of astral names covers (the check is one look at it; a
    GROUP BY of small numbers is cheaper than of text and leaves fewer texts to render), for
    other fields when it expects very many groups (``_many_groups``). Elsewhere by the names."""
    if connections[rows.db].vendor != "postgresql":
        return False
    return set(_text_fields(grouping)) <= ASTRAL_INDEXED or _many_groups(rows, grouping, counters)


def _text_fields(grouping: _Grouping) -> list[str]:
    """The fields whose values go into the text as they are (not normalized phones)."""
    names = zip(grouping.names, grouping.fields, strict=True)
    return sorted({field for name, field in names if name not in grouping.phones})


def _many_groups(rows: QuerySet, grouping: _Grouping, counters: dict[str, Any]) -> bool:
    """Whether PostgreSQL expects more than ``LENGTH_GROUPING_FROM`` groups of names (one
    EXPLAIN, no rows read)."""
    plan = json.loads(rows.values(**grouping.columns()).annotate(**counters).explain(format="json"))
    return plan[0]["Plan"]["Plan Rows"] > LENGTH_GROUPING_FROM


def _grouped_by_length(
    rows: QuerySet, grouping: _Grouping, counters: dict[str, Any]
) -> list[tuple[tuple, tuple]] | None:
    """``_grouped`` by the names' lengths; None when a name has a character beyond the BMP,
    which no stand-in of its length represents: looked up in PostgreSQL's partial index of
    such names (migration 0014), or else counted in the same query."""
    postgres = connections[rows.db].vendor == "postgresql"
    fields = _text_fields(grouping)
    if postgres and set(fields) <= ASTRAL_INDEXED:
        # The partial index holds the few contacts that have such a name: one look, no scan.
        found = rows.filter(_any_of(Q(**{f"{f}__regex": ASTRAL}) for f in fields)).exists()
        return None if found else _grouped(rows, grouping, counters)
    arms = []
    for field_name in fields:
        has_one = Q(**{f"{field_name}__regex": ASTRAL})
        if postgres:  # the regular expression only where a character is not ASCII
            has_one = Q(GreaterThan(_octet_length(field_name), Length(field_name))) & has_one
        arms.append(has_one)
    astral = _any_of(arms)
    groups = _grouped(rows, grouping, {**counters, "astral": Count("pk", filter=astral)})
    if any(n[-1] for _, n in groups):
        return None
    return [(key, n[:-1]) for key, n in groups]


def _any_of(conditions: Iterable[Q]) -> Q:
    either = Q()
    for condition in conditions:
        either |= condition
    return either


def _octet_length(field_name: str) -> Func:
    return Func(F(field_name), function="OCTET_LENGTH", output_field=IntegerField())


#: How long the live counter reuses a selection's groups (seconds), and up to how many.
GROUPS_CACHE_SECONDS = 60
GROUPS_CACHE_MAX = 10_000


def cached_groups(sel: Selection, contacts: QuerySet, token: str) -> RecipientGroups | None:
    """``group_recipients`` (not zoned) for the live counter of one page (``token``), kept a
    minute in the cache: while a template is typed each pause asks again, and only the text
    around the names changes. The key is the token, the selection's SQL and what the grouping
    reads."""
    if not sel.is_contact or contacts.query.is_sliced or contacts.query.combinator:
        return None
    sql, params = contacts.order_by().query.sql_with_params()
    # Groups by length hold only for texts whose names' lengths decide them.
    names = (sel.template.names, sorted(sel.variables.items()), lengths_decide(sel))
    parts = (sql, params, *names, sel.phone_field)
    digest = hashlib.sha256(repr((token, *parts, sel.kind)).encode()).hexdigest()
    key = f"crm_sms:recipient-groups:{digest}"
    groups = cache.get(key)
    if groups is None:
        groups = group_recipients(sel, contacts, zoned=False)
        if groups is not None and len(groups.groups) <= GROUPS_CACHE_MAX:
            cache.set(key, groups, GROUPS_CACHE_SECONDS)
    return groups


def _contested_rows(
    grouping: _Grouping, rows: QuerySet, counts: dict[tuple, int]
) -> list[dict[str, Any]]:
    """The kept rows whose phone is not E.164 and the kept E.164 rows with the phone one of
    them normalizes to: taken out of ``counts`` (the GROUP BY counted them as recipients),
    to be judged one by one."""
    phone_field = grouping.sel.phone_field
    columns = grouping.read_columns()
    odd = [row for row in rows.filter(odd_phone(phone_field)).values(*columns)]
    contested = [row for row in odd if grouping.is_kept(row)]
    phones = {p for row in contested if (p := _clean_phone(row[phone_field])) is not None}
    ordered = sorted(phones)
    odd_pks = {row["pk"] for row in odd}
    for start in range(0, len(ordered), LOOKUP_CHUNK):
        lookup = {f"{phone_field}__in": ordered[start : start + LOOKUP_CHUNK]}
        for row in rows.filter(grouping.kept, **lookup).values(*columns):
            if row["pk"] not in odd_pks:
                contested.append(row)
    for row in contested:
        counts[grouping.raw_key(row)] -= 1
    return contested


# --- SMS parts of the texts -------------------------------------------------------------------


def _size(info: SMSInfo) -> tuple[int, int, int]:
    return info.segments, info.units, info.characters


@dataclass
class TextParts:
    """The SMS parts of the texts counted so far: ``after`` the transformations (what is
    sent) and ``before`` them, how many texts they ``changed``, and the ``longest`` text's
    info (most parts, then units, then characters) after and before."""

    after: int = 0
    before: int = 0
    changed: int = 0
    longest: SMSInfo | None = None
    longest_before: SMSInfo | None = None

    def add(self, original: str, text: str, count: int = 1) -> tuple[SMSInfo, SMSInfo]:
        """Count ``count`` recipients of ``text`` (rendered as ``original``); returns the
        infos of both."""
        info = original_info = cached_sms_info(text)
        if original != text:
            original_info = cached_sms_info(original)
            self.changed += count
        self.after += count * info.segments
        self.before += count * original_info.segments
        if self.longest is None or _size(info) > _size(self.longest):
            self.longest = info
        if self.longest_before is None or _size(original_info) > _size(self.longest_before):
            self.longest_before = original_info
        return info, original_info


def render_groups(sel: Selection, groups: RecipientGroups) -> tuple[int, dict[str, int], TextParts]:
    """Render each group's text once: the recipients, the exclusions (a text the provider
    would refuse leaves its group out as invalid, as streaming counts it) and the SMS parts;
    zoned groups go into ``sel.forecast``."""
    excluded = dict(groups.excluded)
    recipients = 0
    parts = TextParts()
    rendered: dict[tuple, tuple[str, str] | None] = {}  # zones apart, the same values
    for key, count in groups.groups.items():
        values_key = key[:-1] if groups.zoned else key
        if values_key not in rendered:
            rendered[values_key] = render_values(sel, groups.values(key))
        texts = rendered[values_key]
        if texts is None:
            excluded["invalid"] += count
            continue
        recipients += count
        parts.add(*texts, count)
        if groups.zoned:
            sel.forecast.add(sel.window, groups.zone(key), sel.due, count)
    return recipients, excluded, parts
