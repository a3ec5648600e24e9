# Search by part of a number (issue 14.7): "900555" finds every contact whose phone contains it.
#
# PostgreSQL only: pg_trgm and a trigram GIN index on the phone's digits, which answers the
# admin's search (``regexp_replace(phone::text, '[^0-9]', '', 'g') LIKE '%900555%'``, see
# crm_sms/admin/search.py PhoneDigits) in milliseconds on a million contacts instead of a
# sequential scan. On an expression, not the plain column: pg_trgm also answers ``=``, and the
# planner took such an index for the import's ``phone IN (…)``, 50 times slower. Not in the
# models' state: SQLite has no GIN index, and there the migration does nothing (the search
# still works, by scanning).

from django.db import migrations

try:
    from django.contrib.postgres.operations import TrigramExtension
except ImportError:  # no psycopg installed: then there is no PostgreSQL to run it on either
    TrigramExtension = None
else:

    class KeptTrigramExtension(TrigramExtension):
        """``CREATE EXTENSION IF NOT EXISTS pg_trgm``; reversed, the extension stays: other
        apps' indexes may use it (DROP EXTENSION would fail on them), and Django's own
        reversal queries pg_extension on any database, SQLite included."""

        def database_backwards(self, app_label, schema_editor, from_state, to_state):
            pass


INDEX = "crm_sms_contact_phone_trgm"


class PostgresOnlySQL(migrations.RunSQL):
    """RunSQL that runs on PostgreSQL and does nothing elsewhere."""

    def database_forwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_forwards(app_label, schema_editor, from_state, to_state)

    def database_backwards(self, app_label, schema_editor, from_state, to_state):
        if schema_editor.connection.vendor == "postgresql":
            super().database_backwards(app_label, schema_editor, from_state, to_state)


class Migration(migrations.Migration):
    dependencies = [
        ("crm_sms", "0011_event_codes"),
    ]

    operations = [
        # A no-op on other databases (CreateExtension checks the vendor itself).
        *([KeptTrigramExtension()] if TrigramExtension is not None else []),
        PostgresOnlySQL(
            f"CREATE INDEX IF NOT EXISTS {INDEX} ON crm_sms_contact USING gin "
            "((regexp_replace((phone)::text, '[^0-9]', '', 'g')) gin_trgm_ops)",
            f"DROP INDEX IF EXISTS {INDEX}",
        ),
    ]
