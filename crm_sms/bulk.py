"""Fast bulk writes for the hot paths: queueing a campaign, importing contacts, writing send
results and delivery reports.

The ORM's ``bulk_create`` prepares every field of every row in Python and compiles one
multi-row INSERT per few hundred rows, and ``bulk_update`` compiles a CASE WHEN per field; at
100,000 rows both dominated. Here values are prepared once (``Field.get_db_prep_save``) and
handed to the database as plain tuples.
"""

from __future__ import annotations

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
    """Write per-row field values ``{pk: {field name: value}}``: one prepared UPDATE per set of
    field names, run for all its rows (executemany; a pipeline on PostgreSQL). Lock the rows
    first where it matters. Rows often share values (a batch of send results: the status,
    the time, empty error codes), so each distinct value of a field is prepared once."""
    groups: dict[tuple[str, ...], list[Any]] = defaultdict(list)
    for pk, values in updates.items():
        groups[tuple(sorted(values))].append(pk)
    ops = connection.ops
    meta = model._meta
    table = ops.quote_name(meta.db_table)
    pk_column = ops.quote_name(meta.pk.column)
    for names, pks in groups.items():
        fields = [meta.get_field(name) for name in names]
        assignments = ", ".join(f"{ops.quote_name(f.column)} = %s" for f in fields)
        sql = f"UPDATE {table} SET {assignments} WHERE {pk_column} = %s"
        prepared = [(name, _Preparer(f)) for name, f in zip(names, fields, strict=True)]
        params = [[prepare(updates[pk][name]) for name, prepare in prepared] + [pk] for pk in pks]
        with connection.cursor() as cursor:
            cursor.executemany(sql, params)


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
