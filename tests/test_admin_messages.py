"""The message log: read-only, filters, phone search in any notation, events inline, resend."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crm_sms.models import Message, MessageEvent

pytestmark = pytest.mark.django_db

LIST = "admin:crm_sms_message_changelist"


@pytest.fixture
def log(sms_providers):
    ok = Message.objects.create(phone="+79001234212", text="hi", provider="default", status="sent")
    bad = Message.objects.create(
        phone="+79001234213", text="hi", provider="backup", status="failed", error_code="5"
    )
    MessageEvent.objects.create(
        message=bad, source="send", old_status="sending", new_status="failed", description="No"
    )
    return ok, bad


def test_filters_and_search(admin_en, log):
    ok, bad = log
    page = admin_en.get(reverse(LIST), {"status__exact": "failed"})
    assert list(page.context["cl"].result_list) == [bad]
    page = admin_en.get(reverse(LIST), {"provider": "default"})
    assert list(page.context["cl"].result_list) == [ok]
    page = admin_en.get(reverse(LIST), {"q": "8 (900) 123-42-13"})
    assert list(page.context["cl"].result_list) == [bad]
    page = admin_en.get(reverse(LIST), {"q": ok.msg_id})
    assert list(page.context["cl"].result_list) == [ok]
    html = admin_en.get(reverse(LIST)).content.decode()
    assert "?provider=backup" in html  # the configured providers as filter choices


def test_list_queries_do_not_grow_with_rows(admin_en, log, django_assert_max_num_queries):
    Message.objects.bulk_create(
        [
            Message(phone="+79001234214", text="x", provider="default", msg_id=f"m{i:015d}")
            for i in range(150)
        ]
    )
    with django_assert_max_num_queries(10):
        page = admin_en.get(reverse(LIST))
    assert page.status_code == 200
    assert page.context["cl"].show_full_result_count is False


def test_change_page_is_read_only_with_events(admin_en, log):
    _ok, bad = log
    page = admin_en.get(reverse("admin:crm_sms_message_change", args=[bad.pk]))
    assert page.status_code == 200
    html = page.content.decode()
    assert "No" in html and 'name="_save"' not in html
    assert admin_en.get(reverse("admin:crm_sms_message_add")).status_code == 403
    assert admin_en.post(reverse("admin:crm_sms_message_delete", args=[bad.pk])).status_code == 403


def test_resend_action_for_failed_messages(admin_en, log):
    """A confirmation page first (what will happen), then its POST (tests/test_resend.py)."""
    ok, bad = log
    page = admin_en.post(
        reverse(LIST),
        {"action": "resend_action", "index": "0", "_selected_action": [ok.pk, bad.pk]},
    )
    html = page.content.decode()
    assert "1 message will be sent again with the same id" in html
    assert "1 message will be left as it is" in html and "the provider accepted it" in html
    assert not Message.objects.filter(status="queued").exists()
    response = admin_en.post(
        reverse(LIST),
        {
            "action": "resend_action",
            "post": "yes",
            "_selected_action": [ok.pk, bad.pk],
            f"state_{bad.pk}": page.context["plan"].again[0].token,
        },
        follow=True,
    )
    assert "1 message queued again with the same id." in response.content.decode()
    assert Message.objects.filter(phone=bad.phone, status="queued").count() == 1
    assert Message.objects.count() == 2
    ok.refresh_from_db()
    assert ok.status == "sent"


def test_resend_needs_send_sms(client, log, viewer_user):
    from django.contrib.auth.models import Permission

    viewer_user.user_permissions.add(Permission.objects.get(codename="view_message"))
    client.force_login(viewer_user)
    page = client.get(reverse(LIST))
    assert page.status_code == 200
    assert "resend_action" not in page.content.decode()


def test_event_log_is_registered(admin_en, log):
    page = admin_en.get(reverse("admin:crm_sms_messageevent_changelist"), {"q": log[1].msg_id})
    assert len(page.context["cl"].result_list) == 1
