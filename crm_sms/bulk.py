"""Fast INSERTs for the two hot paths: queueing a campaign and importing contacts.

The ORM's ``bulk_create`` prepares every field of every row in Python and compiles one
multi-row INSERT per few hundred rows; at 100,000 rows that dominated both paths. Callers here
prepare values once (``Field.get_db_prep_save``) and hand over plain tuples.
"""

from __future__ import annotations

from django.db import connection


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
