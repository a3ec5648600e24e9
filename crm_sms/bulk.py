"""Fast bulk writes for the hot paths: queueing a campaign, importing contacts, writing send
results and delivery reports.

The ORM's ``bulk_create`` prepares every field of every row in Python and compiles one
multi-row INSERT per few hundred rows, and ``bulk_update`` compiles a CASE WHEN per field; at
100,000 rows both dominated. Here values are prepared once (``Field.get_db_prep_save``) and
handed to the database as plain tuples.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from django.db import connection, models


def insert_rows(table: str, columns: list[str], rows: list[tuple]) -> None:
    """INSERT prepared ``rows`` into ``table`` fast: SQLite runs one prepared statement for all
    rows (executemany), PostgreSQL with psycopg 3 uses COPY, other databases multi-row VALUES."""
    if not rows:
        return
    ops = connection.ops
    quoted = ", ".join(ops.quote_name(c) for c in columns)
    head = f"INSERT INTO {ops.quote_name(table)} ({quoted}) VALUES "
    one = "(" + ", ".join(["%s"] * len(columns)) + ")"
    with connection.cursor() as cursor:
        if connection.vendor == "sqlite":
            cursor.executemany(head + one, rows)
            return
        raw = getattr(cursor, "cursor", None)
        if connection.vendor == "postgresql" and hasattr(raw, "copy"):
            with raw.copy(f"COPY {ops.quote_name(table)} ({quoted}) FROM STDIN") as copy:
                for row in rows:
                    copy.write_row(row)
            return
        per_statement = max(1, min(1000, 30000 // len(columns)))
        for start in range(0, len(rows), per_statement):
            chunk = rows[start : start + per_statement]
            cursor.execute(
                head + ", ".join([one] * len(chunk)), [value for row in chunk for value in row]
            )


class RowInserter:
    """INSERTs rows of ``model``: the values every row shares (``constants``, by field name) are
    prepared once; each row passes the values of the ``varying`` fields, in that order, already
    in database form (strings, numbers, ids; ``prepare`` turns a datetime or JSON value into it).

    >>> inserter = RowInserter(Message, {"status": "queued", ...}, ["phone", "text"])
    >>> inserter.insert([("+79001234212", "Hi"), ...])
    """

    def __init__(
        self, model: type[models.Model], constants: Mapping[str, Any], varying: Sequence[str]
    ):
        self.model = model
        meta = model._meta
        self.constant_values = tuple(self.prepare(name, value) for name, value in constants.items())
        self.columns = [meta.get_field(name).column for name in [*constants, *varying]]

    def prepare(self, name: str, value: Any) -> Any:
        """``value`` of field ``name`` as the database takes it."""
        return self.model._meta.get_field(name).get_db_prep_save(value, connection)

    def insert(self, rows: Iterable[Sequence[Any]]) -> int:
        """INSERT ``rows`` (the varying values of each); returns how many."""
        constant = self.constant_values
        params = [(*constant, *row) for row in rows]
        insert_rows(self.model._meta.db_table, self.columns, params)
        return len(params)


def update_rows(model: type[models.Model], updates: Mapping[Any, Mapping[str, Any]]) -> None:
    """Write per-row field values ``{pk: {field name: value}}``, for each set of field names:
    on PostgreSQL one ``UPDATE ... FROM (VALUES ...)`` per ``UPDATE_CHUNK`` rows (parsed and
    planned once, where an UPDATE per row cost PostgreSQL about 0.1 ms each), elsewhere one
    prepared UPDATE run for every row (executemany). Lock the rows first where it matters.
    Rows often share values (a batch of send results: the status, the time, empty error
    codes), so each distinct value of a field is prepared once."""
    groups: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for pk, values in updates.items():
        groups[tuple(sorted(values))].append(pk)
    meta = model._meta
    for names, pks in groups.items():
        fields = [meta.get_field(name) for name in names]
        prepared = [(name, _Preparer(f)) for name, f in zip(names, fields, strict=True)]
        params = [[prepare(updates[pk][name]) for name, prepare in prepared] + [pk] for pk in pks]
        with connection.cursor() as cursor:
            if connection.vendor == "postgresql":
                for start in range(0, len(params), UPDATE_CHUNK):
                    chunk = params[start : start + UPDATE_CHUNK]
                    cursor.execute(_update_from_values(model, fields, len(chunk)), _flat(chunk))
            else:
                cursor.executemany(_update_by_pk(model, fields), params)


#: Rows per ``UPDATE ... FROM (VALUES ...)`` on PostgreSQL.
UPDATE_CHUNK = 1000


def _update_by_pk(model: type[models.Model], fields: list[models.Field]) -> str:
    quote = connection.ops.quote_name
    meta = model._meta
    assignments = ", ".join(f"{quote(f.column)} = %s" for f in fields)
    return f"UPDATE {quote(meta.db_table)} SET {assignments} WHERE {quote(meta.pk.column)} = %s"


def _update_from_values(model: type[models.Model], fields: list[models.Field], rows: int) -> str:
    """The rows' values in a VALUES list joined on the primary key; each cast to its column's
    type (a column of NULLs or plain strings would be text) without its length, so that a
    value too long for its column is refused, as an UPDATE of the row alone refuses it."""
    quote = connection.ops.quote_name
    meta = model._meta
    names = [f"v{i}" for i in range(len(fields))]
    assignments = ", ".join(
        f"{quote(f.column)} = v.{name}::{_base_type(f)}"
        for f, name in zip(fields, names, strict=True)
    )
    row = "(" + ", ".join(["%s"] * (len(fields) + 1)) + ")"
    pk = meta.pk
    return (
        f"UPDATE {quote(meta.db_table)} SET {assignments} "
        f"FROM (VALUES {', '.join([row] * rows)}) AS v({', '.join(names)}, pk) "
        f"WHERE {quote(meta.db_table)}.{quote(pk.column)} = v.pk::{_base_type(pk)}"
    )


def _base_type(field: models.Field) -> str:
    """``varchar`` for ``varchar(50)``: the column's type without its modifiers."""
    return re.sub(r"\(.*\)", "", field.cast_db_type(connection))


def _flat(rows: list[list[Any]]) -> list[Any]:
    return [value for row in rows for value in row]


_MISSING = object()


class _Preparer:
    """A field's values as the database takes them, each distinct hashable value once."""

    __slots__ = ("field", "seen")

    def __init__(self, field: models.Field):
        self.field, self.seen = field, {}

    def __call__(self, value: Any) -> Any:
        # The type is part of the key: 1, 1.0 and True are equal but prepare differently.
        key = (type(value), value)
        try:
            prepared = self.seen.get(key, _MISSING)
        except TypeError:  # unhashable (a JSON dict): every time
            return self.field.get_db_prep_save(value, connection)
        if prepared is _MISSING:
            prepared = self.seen[key] = self.field.get_db_prep_save(value, connection)
        return prepared
