# The few contacts whose name has a character beyond the Basic Multilingual Plane (an emoji:
# two UCS-2 units), on PostgreSQL (issue 15.1). The Send SMS preview counts a big selection by
# the lengths of its names only when no name has one (crm_sms.outbox.counting, ASTRAL); with
# this partial index that check reads a handful of index entries instead of running a regular
# expression over a million names (0.5 s). The expression is the one Django's ``__regex``
# lookup writes, so the planner matches the index. SQLite has no REGEXP in an index: there
# the migration does nothing (the check scans).

from django.db import migrations

INDEX = "crm_sms_contact_astral_name"
ASTRAL = r"[\U00010000-\U0010FFFF]"  # crm_sms.outbox.counting.ASTRAL
CREATE = f"CREATE INDEX IF NOT EXISTS {INDEX} ON crm_sms_contact (id) WHERE " + " OR ".join(
    f"({column})::text ~ '{ASTRAL}'" for column in ("first_name", "middle_name", "last_name")
)


def create_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(CREATE)


def drop_index(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("crm_sms", "0013_campaign_status_counts"),
    ]

    operations = [migrations.RunPython(create_index, drop_index, elidable=False)]
