"""Issue 13 in a real browser (Debian's chromium through Playwright): an advertising campaign,
transliterated, to contacts in four of Russia's time zones. The preview leaves out the contact
without consent and says the Kamchatka recipient waits; the live counter and the preview agree
on the SMS parts, and what is sent is what the preview showed. The worker runs in the test with
the clock at 12:00 Moscow time (21:00 in Kamchatka: its window has closed), then at 09:00 in
Kamchatka.

Screenshots at 1366 px go to test-output/browser-compliance/.
"""

from __future__ import annotations

import os
import re
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser-compliance"
MSK = ZoneInfo("Europe/Moscow")
KAMCHATKA = "+74152123456"
FIXED_LINES = {
    "+74951234567": "Москва",
    "+73832123456": "Новосибирск",
    "+74012123456": "Калининград",
    KAMCHATKA: "Камчатка",
}
TEXT = "Скидка 20% на всё до воскресенья в магазинах сети «Ромашка», приходите!"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


def msk(day: int, hour: int) -> datetime:
    return datetime(2026, 3, day, hour, tzinfo=MSK).astimezone(UTC)


@pytest.fixture
def russia(settings, sms_providers):
    from crm_sms.models import Contact

    settings.TIME_ZONE = "Europe/Moscow"
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "SEND_WINDOW": "09:00-21:00",
        "UNSUBSCRIBE_TEXT": "Отказ: STOP",
    }
    given = datetime(2025, 1, 1, tzinfo=UTC)
    for phone, city in FIXED_LINES.items():
        Contact.objects.create(first_name=city, phone=phone, consent_given_at=given)
    Contact.objects.create(first_name="Без согласия", phone="+79001234212")


@pytest.fixture
def shot():
    SHOTS.mkdir(parents=True, exist_ok=True)

    def take(page, name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    return take


def launch(pw):
    return pw.chromium.launch(
        executable_path=CHROMIUM,
        args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
    )


def test_advertising_campaign_consent_quiet_hours_and_translit(
    django_db_setup,  # first: the live server stops before the test database goes
    live_server,
    russia,
    admin_user,
    clock,
    shot,
    monkeypatch,
):
    from django.db import connections
    from playwright.sync_api import expect, sync_playwright

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    clock.set(msk(2, 12))  # the live server's thread reads the same clock
    with sync_playwright() as pw:
        browser = launch(pw)
        page = browser.new_page(locale="en-US", viewport={"width": 1366, "height": 900})
        page.set_default_timeout(15_000)
        try:
            sent_text, parts = compose_and_preview(page, live_server.url, shot, expect)
            page.click("#sms-send")
            expect(page).to_have_url(re.compile(r"/admin/crm_sms/campaign/\d+/change/$"))
            shot(page, "03-campaign")
        finally:
            browser.close()
            connections.close_all()
    check_the_worker(clock, sent_text, parts)


def compose_and_preview(page, url: str, shot, expect) -> tuple[str, int]:
    """Log in, select everyone, write the advertising text; returns the preview's text and the
    counter's SMS parts."""
    page.goto(f"{url}/admin/login/?next=/admin/crm_sms/contact/")
    page.fill("#id_username", "admin")
    page.fill("#id_password", "password")
    page.click("input[type=submit]")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "send_sms_action")
    page.click("button[name=index]")
    expect(page.locator("#sms-recipients-count")).to_have_text("5 recipients")
    expect(page.locator("#id_window_start")).to_have_value("09:00")
    page.check("input[name=kind][value=advertising]")
    page.check("#id_translit")
    page.locator("#id_text").fill(TEXT)
    counter = page.locator("#sms-counter")
    expect(counter).to_have_attribute("data-changed", "1")
    expect(counter).to_contain_text("before transliteration")
    expect(counter).to_have_attribute("data-segments-before", "2")
    parts = int(counter.get_attribute("data-segments"))
    assert parts == 1
    shot(page, "01-send-page")

    page.click("#sms-preview-button")
    expect(page.locator("#sms-preview")).to_be_visible()
    expect(page.locator("#sms-recipients-count")).to_have_text("4 recipients")
    expect(page.locator("#sms-excluded")).to_contain_text("no consent to advertising — 1")
    expect(page.locator("#sms-window")).to_contain_text(
        "1 recipient's window is closed: they get it at March 3, 2026, midnight."
    )
    expect(page.locator("#sms-parts-change")).to_contain_text(
        "SMS parts as written: 8; after the changes: 4."
    )
    first = page.locator("#sms-preview tbody tr").first
    expect(first.locator(".crm-sms-parts")).to_have_text(f"2 → {parts}")
    expect(page.locator("#sms-counter")).to_have_attribute("data-segments", str(parts))
    sent_text = first.locator(".crm-sms-final").inner_text()
    assert sent_text.endswith("Otkaz: STOP") and "Skidka 20%" in sent_text
    shot(page, "02-preview")
    return sent_text, parts


def check_the_worker(clock, sent_text: str, parts: int) -> None:
    """12:00 Moscow: all but Kamchatka go; 09:00 in Kamchatka (00:00 Moscow): it goes too."""
    from crm_sms import outbox
    from crm_sms.backends import locmem
    from crm_sms.models import Message

    outbox.dispatch_due()
    kamchatka = Message.objects.get(phone=KAMCHATKA)
    assert (kamchatka.status, kamchatka.time_zone) == ("queued", "Asia/Kamchatka")
    assert kamchatka.next_attempt_at == msk(3, 0)  # 09:00 in Petropavlovsk-Kamchatsky
    others = Message.objects.exclude(phone=KAMCHATKA)
    assert sorted(others.values_list("status", flat=True)) == ["sent"] * 3
    assert len(locmem.outbox) == 3
    clock.set(msk(2, 23))  # 08:00 in Kamchatka: still closed
    outbox.dispatch_due()
    assert Message.objects.get(phone=KAMCHATKA).status == "queued"
    clock.set(msk(3, 0))
    outbox.dispatch_due()
    assert Message.objects.get(phone=KAMCHATKA).status == "sent"
    assert set(Message.objects.values_list("text", flat=True)) == {sent_text}
    assert set(Message.objects.values_list("segments", flat=True)) == {parts}
