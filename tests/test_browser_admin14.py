"""Issue 14 in a real browser (Debian's chromium through Playwright): the header's language
switch turns the admin Russian and back, and screenshots of the contact page (its SMS history),
the campaign page and the Send SMS page at 1366 and 1920 px go to test-output/admin14/."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "admin14"
WIDTHS = (1366, 1920)

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


def make_data():
    from django.utils import timezone

    from crm_sms.models import Campaign, CampaignStatus, Contact, Message, MessageStatus

    campaign = Campaign.objects.create(
        name="Весенняя распродажа",
        text="Привет, {{ first_name }}!",
        status=CampaignStatus.COMPLETED,
    )
    contact = Contact.objects.create(
        first_name="Анна", last_name="Иванова", phone="+79001234567", email="anna@example.com"
    )
    for i in range(6):
        Message.objects.create(
            contact=contact,
            campaign=campaign,
            phone=contact.phone,
            text=f"Привет, Анна! Сообщение {i}",
            provider="default",
            msg_id=f"b14-{i}",
            status=MessageStatus.DELIVERED if i % 2 else MessageStatus.FAILED,
            created_at=timezone.now(),
        )
    return contact, campaign


def shots(page, url: str, name: str) -> None:
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        page.goto(url)
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)


def test_language_switch_and_screenshots(
    django_db_setup, live_server, sms_providers, admin_user, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    contact, campaign = make_data()
    base = live_server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(locale="en-US").new_page()
        page.set_default_timeout(15_000)
        try:
            page.goto(f"{base}/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            expect(page.locator("#user-tools")).to_contain_text("Log out")

            # Russian through the header's switch.
            page.select_option("#crm-sms-language", "ru")
            expect(page.locator("#user-tools")).to_contain_text("Выйти")
            contact_url = f"{base}/admin/crm_sms/contact/{contact.pk}/change/"
            page.goto(contact_url)
            expect(page.locator("#sms-history")).to_contain_text("Сообщение 5")
            shots(page, contact_url, "contact-ru")
            campaign_url = f"{base}/admin/crm_sms/campaign/{campaign.pk}/change/"
            page.goto(campaign_url)
            expect(page.locator("h1")).not_to_contain_text("Изменить")
            shots(page, campaign_url, "campaign-ru")
            page.goto(f"{base}/admin/crm_sms/contact/")
            page.check("#action-toggle")
            page.select_option("select[name=action]", "send_sms_action")
            page.click("button[name=index]")
            page.fill("#id_text", "Привет, {{ first_name }}!")
            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})
                page.screenshot(path=str(SHOTS / f"send-ru-{width}.png"), full_page=True)

            # Back to English.
            page.select_option("#crm-sms-language", "en")
            expect(page.locator("#user-tools")).to_contain_text("Log out")
            page.goto(contact_url)
            expect(page.locator("#sms-history h2")).to_contain_text("SMS history")
            shots(page, contact_url, "contact-en")
        finally:
            browser.close()
