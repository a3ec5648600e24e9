"""The message log shows which provider sent each message and why failover moved it
(``moved_from``, ``move_reason``: crm_sms.outbox.failover)."""

from __future__ import annotations

import pytest
from django.urls import reverse

from crm_sms.models import Message

pytestmark = pytest.mark.django_db

LIST = "admin:crm_sms_message_changelist"


def test_the_list_and_page_show_which_provider_sent_it_and_why_it_moved(admin_en, sms_providers):
    moved = Message.objects.create(
        phone="+79001234214",
        text="hi",
        provider="backup",
        status="sent",
        moved_from="default",
        move_reason="MegaFon refused the login and password (HTTP 401)",
    )
    html = admin_en.get(reverse(LIST)).content.decode()
    assert 'title="MegaFon refused the login and password (HTTP 401)">← default</span>' in html
    page = admin_en.get(reverse("admin:crm_sms_message_change", args=[moved.pk]))
    assert "MegaFon refused the login and password (HTTP 401)" in page.content.decode()
