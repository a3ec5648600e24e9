"""The "Send SMS…" action: permission, the intermediate page (recipients, exclusions, preview,
SMS parts), "select all" across pages, sending, groups, and the mixin on another model."""

from __future__ import annotations

import re

import pytest
from django.contrib import admin
from django.contrib.admin import helpers
from django.contrib.messages.storage.fallback import FallbackStorage
from django.test import Client, RequestFactory
from django.urls import reverse

from crm_sms.admin import SendSMSAdminMixin
from crm_sms.models import Campaign, Contact, ContactGroup, Message

pytestmark = pytest.mark.django_db

CHANGELIST = "admin:crm_sms_contact_changelist"


def action_post(client: Client, contacts, url: str | None = None, **extra):
    data = {
        "action": "send_sms_action",
        "index": "0",
        helpers.ACTION_CHECKBOX_NAME: [c.pk for c in contacts],
        **extra,
    }
    return client.post(url or reverse(CHANGELIST), data)


def step(client: Client, contacts, url: str | None = None, **fields):
    data = {"_sms_step": "1", "sender": "", "provider": "default", "name": "", **fields}
    return action_post(client, contacts, url, **data)


@pytest.fixture
def people(contact_factory, sms_providers):
    contacts = contact_factory(3)
    Contact.objects.filter(pk=contacts[2].pk).update(opted_out=True)
    bad = Contact.objects.create(first_name="Bad", phone="+7123")  # stored before validation
    return [*contacts, bad]


def test_action_only_for_users_with_send_sms(client, sender_user, viewer_user, sms_providers):
    client.force_login(viewer_user)
    page = client.get(reverse(CHANGELIST))
    assert "send_sms_action" not in page.content.decode()
    client.force_login(sender_user)
    page = client.get(reverse(CHANGELIST))
    assert 'value="send_sms_action"' in page.content.decode()


def test_viewer_cannot_post_the_action(client, viewer_user, people):
    client.force_login(viewer_user)
    response = step(client, people, text="hi", _send="1")
    assert not Campaign.objects.exists()
    assert response.status_code in (200, 302)


def test_intermediate_page_counts_recipients_and_exclusions(admin_en, people):
    page = action_post(admin_en, people)
    assert page.status_code == 200
    html = page.content.decode()
    assert page.templates[0].name == "admin/crm_sms/send_sms.html"
    assert 'class="breadcrumbs"' in html and "CRM SMS demo" in html  # the admin's own look
    assert re.search(r'id="sms-recipients-count">2 recipients<', html)
    assert "opted out — 1" in html and "invalid phone — 1" in html
    assert page.context["form"]["sender"].value() == "CRM-Test"  # the provider's default
    assert [c[0] for c in page.context["form"].fields["provider"].choices] == ["default", "backup"]
    assert 'id="sms-counter"' in html and "sms_counter.js" in html
    assert "sms-gsm7-extension" in html
    assert 'name="_send"' not in html  # no sending before a preview


def test_preview_renders_the_first_texts_and_total_parts(admin_en, people):
    page = step(admin_en, people, text="Привет, {{ first_name }}!", _preview="1")
    html = page.content.decode()
    assert "Привет, Name0!" in html and "Привет, Name1!" in html
    assert page.context["preview"].total_segments == 2
    assert "In all: 2 SMS parts to 2 recipients." in html
    assert 'name="_send"' in html
    long = step(admin_en, people, text="x" * 161, _preview="1")
    assert long.context["preview"].total_segments == 4  # 2 parts each


def test_send_creates_the_campaign_and_redirects(admin_en, people, admin_user):
    text = "Привет, {{ first_name }}!\r\nВторая строка"
    preview = step(admin_en, people, text=text, _preview="1")
    key = preview.context["preview_key"]
    response = step(admin_en, people, text=text, previewed=key, _send="1", name="Весна")
    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("admin:crm_sms_campaign_change", args=[campaign.pk])
    assert (campaign.name, campaign.created_by, campaign.recipients_count) == (
        "Весна",
        admin_user,
        2,
    )
    assert campaign.excluded == {"opted_out": 1, "invalid": 1, "duplicate": 0}
    texts = sorted(Message.objects.values_list("text", flat=True))
    assert texts == ["Привет, Name0!\nВторая строка", "Привет, Name1!\nВторая строка"]


def test_send_after_a_change_shows_the_preview_again(admin_en, people):
    key = step(admin_en, people, text="one", _preview="1").context["preview_key"]
    page = step(admin_en, people, text="two", previewed=key, _send="1")
    assert page.status_code == 200 and not Campaign.objects.exists()
    assert "check the preview" in page.content.decode()


def test_scheduled_send(admin_en, people):
    fields = {"text": "later", "scheduled_at": "2099-01-01T10:00"}
    key = step(admin_en, people, _preview="1", **fields).context["preview_key"]
    step(admin_en, people, previewed=key, _send="1", **fields)
    campaign = Campaign.objects.get()
    assert campaign.status == "scheduled" and campaign.scheduled_at.year == 2099


def test_template_errors_are_shown_on_the_form(admin_en, people):
    page = step(admin_en, people, text="Hi {{ nickname }}", _preview="1")
    assert page.status_code == 200
    assert "nickname" in str(page.context["form"].errors["text"])
    assert page.context["preview"] is None


def test_select_across_sends_to_all_matching_without_loading_them(
    admin_en, contact_factory, sms_providers, django_assert_max_num_queries
):
    first_page = contact_factory(250)[:3]
    Contact.objects.filter(phone__endswith="7").update(opted_out=True)  # 25 opted out
    url = reverse(CHANGELIST) + "?opted_out__exact=0"
    fields = {"select_across": "1", "text": "all of you"}
    with django_assert_max_num_queries(20):
        page = step(admin_en, first_page, url, _preview="1", **fields)
    assert page.context["preview"].recipients == 225
    assert page.context["preview"].excluded["opted_out"] == 0  # the filter left them out
    assert 'name="select_across" value="1"' in page.content.decode()
    step(admin_en, first_page, url, previewed=page.context["preview_key"], _send="1", **fields)
    assert Campaign.objects.get().recipients_count == 225


def test_group_action_sends_to_members_once(admin_en, contact_factory, sms_providers):
    a, b, c = contact_factory(3)
    g1, g2 = ContactGroup.objects.create(name="g1"), ContactGroup.objects.create(name="g2")
    g1.contacts.set([a, b])
    g2.contacts.set([b, c])
    url = reverse("admin:crm_sms_contactgroup_changelist")
    page = step(admin_en, [g1, g2], url, text="hello", _preview="1")
    assert page.context["preview"].recipients == 3
    assert page.context["preview"].excluded["duplicate"] == 0


class MessageAsCustomerAdmin(SendSMSAdminMixin, admin.ModelAdmin):
    """Any model with a phone: here Message stands in for a site's Customer."""

    sms_phone_field = "phone"
    sms_template_variables = {"who": "sender"}


def test_mixin_on_another_model(admin_user, sms_providers):
    Message.objects.create(phone="+79001234212", text="x", sender="Alice", provider="default")
    model_admin = MessageAsCustomerAdmin(Message, admin.site)
    request = RequestFactory().post(
        "/", {"_sms_step": "1", "text": "Hi {{ who }}", "provider": "default", "_preview": "1"}
    )
    request.user = admin_user
    request.session = {}
    request._messages = FallbackStorage(request)
    assert "send_sms_action" in model_admin.get_actions(request)
    response = model_admin.send_sms_action(request, Message.objects.all())
    preview = response.context_data["preview"]
    assert preview.recipients == 1
    assert preview.samples[0]["text"] == "Hi Alice"
    assert "{{ who }}" in str(response.context_data["form"].fields["text"].help_text)


def test_group_list_counts_members_in_one_query(
    admin_en, contact_factory, django_assert_max_num_queries
):
    people = contact_factory(5)
    for i in range(30):
        ContactGroup.objects.create(name=f"group {i:02d}").contacts.set(people[: i % 6])
    with django_assert_max_num_queries(8):
        page = admin_en.get(reverse("admin:crm_sms_contactgroup_changelist"))
    counts = {g.name: g._contacts_count for g in page.context["cl"].result_list}
    assert counts["group 05"] == 5 and counts["group 06"] == 0


def test_send_page_in_russian(client, admin_user, people):
    client.force_login(admin_user)
    data = {"action": "send_sms_action", "index": "0", helpers.ACTION_CHECKBOX_NAME: [people[0].pk]}
    listing = client.get(reverse(CHANGELIST), headers={"accept-language": "ru"})
    assert "Отправить SMS…" in listing.content.decode()
    page = client.post(reverse(CHANGELIST), data, headers={"accept-language": "ru"})
    html = page.content.decode()
    assert "Отправка SMS" in html and "1 получатель" in html
    config = page.context["translit_config"]
    characters = config["plural"]["characters"]  # the counter's plural forms for the page
    assert characters["index"][1] != characters["index"][5]
