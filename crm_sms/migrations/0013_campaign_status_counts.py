# Messages per (campaign, status), kept up to date by every insert and status move
# (crm_sms.campaign_counts; issue 15.1): the admin's campaign list reads a few rows instead of
# counting the messages of every campaign on its page. Filled from the messages once, here.

import django.db.models.deletion
from django.db import migrations, models

FILL = (
    "INSERT INTO crm_sms_campaignstatuscount (campaign_id, status, count) "
    "SELECT campaign_id, status, COUNT(*) FROM crm_sms_message "
    "WHERE campaign_id IS NOT NULL GROUP BY campaign_id, status"
)


class Migration(migrations.Migration):
    dependencies = [
        ("crm_sms", "0012_contact_phone_trigram"),
    ]

    operations = [
        migrations.CreateModel(
            name="CampaignStatusCount",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                (
                    "status",
                    models.CharField(
                        choices=[
                            ("queued", "queued"),
                            ("sending", "sending"),
                            ("sent", "sent"),
                            ("delivered", "delivered"),
                            ("undelivered", "undelivered"),
                            ("failed", "failed"),
                            ("cancelled", "cancelled"),
                            ("uncertain", "uncertain whether sent"),
                        ],
                        max_length=20,
                    ),
                ),
                ("count", models.BigIntegerField(default=0)),
                (
                    "campaign",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.CASCADE,
                        related_name="status_counts",
                        to="crm_sms.campaign",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("campaign", "status"), name="crm_sms_campaign_status_count"
                    )
                ],
            },
        ),
        migrations.RunSQL(FILL, migrations.RunSQL.noop),
    ]
