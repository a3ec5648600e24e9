# Indexes for a million contacts and messages (issue 15): every admin page under 300 ms.
#
# Portable (models' Meta): the contact list's order (last_name, first_name, id) and its
# "opted out" subset; a campaign's messages newest first; the event log in time order. The
# single-column indexes the composite ones start with are dropped (contact.last_name,
# message.campaign_id, messageevent.message_id), and contact.opted_out's (a boolean).
#
# PostgreSQL only (not in the models' state: SQLite has no text_pattern_ops, no "C" collation,
# and its LIKE could not use them): UPPER(last_name) and UPPER(email), which the admin's
# istartswith / iexact search compiles to (UPPER(col::text) LIKE 'X%' / = 'X'), and the few
# contacts whose phone is not E.164, read by crm_sms.outbox.counting (its E164_SQL).
#
# Portable, also not in the state (Django made the table): the group memberships by group
# first, so the contacts of a group are an index-only scan (the group filter, group counts).

import django.db.models.deletion
from django.db import migrations, models

E164_SQL = r"^\+[1-9][0-9]{7,14}$"

POSTGRES_INDEXES = {
    # In the search results' order (crm_sms/admin/search.py), with last_name itself so that a
    # count of "Иванов…" is an index-only scan. "C" collation: LIKE 'X%' can use it whatever
    # the database's collation.
    "crm_sms_contact_last_upper": (
        "CREATE INDEX crm_sms_contact_last_upper ON crm_sms_contact "
        '((UPPER(last_name)) COLLATE "C", first_name, id) INCLUDE (last_name)'
    ),
    "crm_sms_contact_email_upper": (
        "CREATE INDEX crm_sms_contact_email_upper ON crm_sms_contact "
        "(UPPER(email) text_pattern_ops)"
    ),
    "crm_sms_contact_odd_phone": (
        "CREATE INDEX crm_sms_contact_odd_phone ON crm_sms_contact (id) "
        f"WHERE NOT (phone::text ~ '{E164_SQL}')"
    ),
}


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
        ("crm_sms", "0004_import_job"),
    ]

    operations = [
        migrations.AlterField(
            model_name="contact",
            name="last_name",
            field=models.CharField(blank=True, max_length=150, verbose_name="last name"),
        ),
        migrations.AlterField(
            model_name="contact",
            name="opted_out",
            field=models.BooleanField(
                default=False,
                help_text="Never send SMS to this contact.",
                verbose_name="opted out",
            ),
        ),
        # The foreign keys' own indexes, by the names 0001 gave them; SeparateDatabaseAndState
        # because AlterField would drop and re-validate the foreign key constraints too.
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AlterField(
                    model_name="message",
                    name="campaign",
                    field=models.ForeignKey(
                        blank=True,
                        db_index=False,
                        null=True,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="messages",
                        to="crm_sms.campaign",
                        verbose_name="campaign",
                    ),
                ),
                migrations.AlterField(
                    model_name="messageevent",
                    name="message",
                    field=models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="events",
                        to="crm_sms.message",
                        verbose_name="message",
                    ),
                ),
            ],
            database_operations=[
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS crm_sms_message_campaign_id_30375c49",
                    "CREATE INDEX crm_sms_message_campaign_id_30375c49"
                    " ON crm_sms_message (campaign_id)",
                ),
                migrations.RunSQL(
                    "DROP INDEX IF EXISTS crm_sms_messageevent_message_id_82567008",
                    "CREATE INDEX crm_sms_messageevent_message_id_82567008"
                    " ON crm_sms_messageevent (message_id)",
                ),
            ],
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                fields=["last_name", "first_name", "id"], name="crm_sms_contact_name"
            ),
        ),
        migrations.AddIndex(
            model_name="contact",
            index=models.Index(
                condition=models.Q(("opted_out", True)),
                fields=["last_name", "first_name", "id"],
                name="crm_sms_contact_opted_out",
            ),
        ),
        migrations.AddIndex(
            model_name="message",
            index=models.Index(
                fields=["campaign", "created_at", "id"], name="crm_sms_msg_campaign_created"
            ),
        ),
        migrations.AddIndex(
            model_name="messageevent",
            index=models.Index(fields=["created_at", "id"], name="crm_sms_event_created"),
        ),
        migrations.RunSQL(
            "CREATE INDEX crm_sms_contact_groups_by_group"
            " ON crm_sms_contact_groups (contactgroup_id, contact_id)",
            "DROP INDEX IF EXISTS crm_sms_contact_groups_by_group",
        ),
        *(
            PostgresOnlySQL(sql, f"DROP INDEX IF EXISTS {name}")
            for name, sql in POSTGRES_INDEXES.items()
        ),
        # Statistics of the new expressions, for the planner's row estimates.
        PostgresOnlySQL("ANALYZE crm_sms_contact", migrations.RunSQL.noop),
        PostgresOnlySQL("ANALYZE crm_sms_contact_groups", migrations.RunSQL.noop),
    ]
