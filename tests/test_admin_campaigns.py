"""Campaigns in the admin: progress in the list (one query per page) and on the change page,
the JSON poll, and pause / resume / cancel / retry failed / copy as a draft."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crm_sms import outbox
from crm_sms.campaign_counts import recount
from crm_sms.models import Campaign, Contact, Message

pytestmark = pytest.mark.django_db


@pytest.fixture
def campaign(contact_factory, sms_providers, admin_user):
    contact_factory(10)
    campaign = outbox.send_campaign(
        Contact.objects.all(), "Hi {{ first_name }}", name="Spring", created_by=admin_user
    )
    ids = list(campaign.messages.order_by("pk").values_list("pk", flat=True))
    Message.objects.filter(pk__in=ids[:4]).update(status="delivered")
    Message.objects.filter(pk__in=ids[4:6]).update(status="sent")
    Message.objects.filter(pk__in=ids[6:7]).update(status="failed")
    recount([campaign.pk])  # statuses set by hand, not through transitions.move_messages
    return campaign


def change_url(campaign: Campaign) -> str:
    return reverse("admin:crm_sms_campaign_change", args=[campaign.pk])


def control(client, campaign: Campaign, op: str):
    return client.post(reverse("admin:crm_sms_campaign_control", args=[campaign.pk, op]))


def test_list_shows_progress_without_per_row_queries(
    admin_en, campaign, sms_providers, django_assert_max_num_queries
):
    page = admin_en.get(reverse("admin:crm_sms_campaign_changelist"))
    html = page.content.decode()
    assert "4 delivered · 2 sent · 1 failed of 10" in html
    assert 'style="width: 40.00%"' in html  # the delivered part of the bar
    for i in range(15):
        outbox.send_campaign(Contact.objects.all()[:3], f"more {i}")
    with django_assert_max_num_queries(12):
        page = admin_en.get(reverse("admin:crm_sms_campaign_changelist"))
    assert page.content.decode().count('class="crm-sms-progress"') == 16


def test_change_page_counts_per_status_and_polls_while_running(admin_en, campaign):
    page = admin_en.get(change_url(campaign))
    html = page.content.decode()
    state = page.context["campaign_state"]
    assert state["counts"] == {
        "queued": 3,
        "sending": 0,
        "sent": 2,
        "delivered": 4,
        "undelivered": 0,
        "failed": 1,
        "cancelled": 0,
        "uncertain": 0,
    }
    assert 'data-active="1"' in html and "campaign_progress.js" in html
    assert 'data-status-count="delivered">4<' in html
    poll = admin_en.get(reverse("admin:crm_sms_campaign_progress", args=[campaign.pk])).json()
    assert poll["status"] == "running" and poll["active"] is True
    assert poll["progress"]["total"] == 10 and poll["progress"]["delivered"] == 4
    assert "crm-sms-bar" in poll["progress_html"]
    Message.objects.filter(campaign=campaign).update(status="delivered")
    recount([campaign.pk])
    Campaign.objects.filter(pk=campaign.pk).update(status="completed")
    assert (
        admin_en.get(reverse("admin:crm_sms_campaign_progress", args=[campaign.pk])).json()[
            "active"
        ]
        is False
    )
    assert 'data-active="0"' in admin_en.get(change_url(campaign)).content.decode()


def test_pause_resume_cancel_from_the_change_page(admin_en, campaign):
    html = admin_en.get(change_url(campaign)).content.decode()
    assert 'name="pause"' in html and 'name="resume"' not in html
    assert control(admin_en, campaign, "pause").status_code == 302
    campaign.refresh_from_db()
    assert campaign.status == "paused" and "admin" in campaign.pause_reason
    assert 'name="resume"' in admin_en.get(change_url(campaign)).content.decode()
    control(admin_en, campaign, "resume")
    campaign.refresh_from_db()
    assert campaign.status == "running"
    control(admin_en, campaign, "cancel")
    campaign.refresh_from_db()
    assert campaign.status == "cancelled"
    assert campaign.messages.filter(status="cancelled").count() == 3  # the queued ones
    assert campaign.messages.filter(status="delivered").count() == 4


def test_retry_failed_and_copy(admin_en, campaign, admin_user):
    data = {"action": "retry_failed_action", "index": "0", "_selected_action": [campaign.pk]}
    changelist = reverse("admin:crm_sms_campaign_changelist")
    page = admin_en.post(changelist, data)  # first: what it will do
    assert "1 failed message will be sent again with the same id." in page.content.decode()
    assert campaign.messages.filter(status="failed").count() == 1
    seen_at = page.context["seen_at"]
    response = admin_en.post(changelist, {**data, "post": "yes", "seen_at": seen_at}, follow=True)
    assert "1 failed message queued again." in response.content.decode()
    assert campaign.messages.filter(status="failed").count() == 0
    response = control(admin_en, campaign, "copy")
    copy = Campaign.objects.exclude(pk=campaign.pk).get()
    assert response["Location"] == change_url(copy)
    assert (copy.status, copy.text, copy.created_by) == ("draft", campaign.text, admin_user)
    assert copy.name == "Spring (copy)" and not copy.messages.exists()
    form = admin_en.get(change_url(copy)).context["adminform"].form
    assert "text" in form.fields  # a draft is editable
    assert "text" not in admin_en.get(change_url(campaign)).context["adminform"].form.fields


def test_control_needs_post_and_change_permission(client, campaign, viewer_user):
    client.force_login(viewer_user)
    assert control(client, campaign, "pause").status_code == 403
    campaign.refresh_from_db()
    assert campaign.status == "running"


def test_no_add_button(admin_en):
    assert admin_en.get(reverse("admin:crm_sms_campaign_add")).status_code == 403


def test_a_draft_is_sent_through_the_contact_list(admin_en, campaign):
    control(admin_en, campaign, "copy")
    draft = Campaign.objects.get(status="draft")
    admin_en.post(
        change_url(draft),
        {
            "name": "Autumn",
            "text": "Осень, {{ first_name }}",
            "sender": "",
            "provider": "default",
            "scheduled_at_0": "",
            "scheduled_at_1": "",
        },
    )
    draft.refresh_from_db()
    assert draft.text == "Осень, {{ first_name }}"
    assert 'name="use"' in admin_en.get(change_url(draft)).content.decode()
    response = control(admin_en, draft, "use")
    assert response["Location"] == reverse("admin:crm_sms_contact_changelist")
    contacts = list(Contact.objects.all()[:2])
    data = {"action": "send_sms_action", "index": "0", "_selected_action": [c.pk for c in contacts]}
    page = admin_en.post(reverse("admin:crm_sms_contact_changelist"), data)
    form = page.context["form"]
    assert form["text"].value() == "Осень, {{ first_name }}" and form["name"].value() == "Autumn"
    fields = {
        **data,
        "_sms_step": "1",
        "name": "Autumn",
        "text": form["text"].value(),
        "sender": form["sender"].value(),
        "provider": "default",
    }
    key = admin_en.post(
        reverse("admin:crm_sms_contact_changelist"), {**fields, "_preview": "1"}
    ).context["preview_key"]
    admin_en.post(
        reverse("admin:crm_sms_contact_changelist"), {**fields, "previewed": key, "_send": "1"}
    )
    sent = Campaign.objects.get(name="Autumn")
    assert sent.status == "running" and sent.recipients_count == 2
    assert not Campaign.objects.filter(status="draft").exists()  # the draft became the campaign
