"""The whole admin workflow in a real browser (Debian's chromium through Playwright's sync API):
log in, import a CSV, select contacts, "Send SMS…" (live counter, preview), confirm, and watch
the campaign reach "delivered" through the MegaFon sandbox, a worker and delivery callbacks.

Screenshots of each step go to test-output/browser/. The counter's JavaScript is also checked
against crm_sms/text.py on tricky texts.
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

from crm_sms.text import sms_info

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "browser"
TOKEN = "browser-test-token"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

CSV = (
    "Фамилия;Имя;Телефон;Группы\r\n"
    "Иванов;Иван;8 (900) 123-42-12;Браузер\r\n"
    "Петрова;Мария;8 (900) 123-42-13;Браузер\r\n"
    "Сидоров;Олег;+7 900 123 42 14;Браузер\r\n"
    "Плохой;Номер;12-34;\r\n"
).encode("cp1251")

# Texts where a naive counter goes wrong: extension characters (2 units, never split), a pair
# on the 153rd unit, non-BMP characters (2 UCS-2 units), exact limits.
COUNTER_CASES = [
    "",
    "Hello",
    "x" * 160,
    "x" * 161,
    "x" * 152 + "€" + "y",
    "[" * 80,
    "[" * 81,
    "Привет" * 11 + "Прив",
    "Привет" * 12,
    "😀" * 35,
    "😀" * 36,
    "a" * 66 + "😀" + "b",
    "Line one\nline two {{ first_name }} ^~|\\",
]


@pytest.fixture
def shot():
    SHOTS.mkdir(parents=True, exist_ok=True)
    for old in SHOTS.glob("*.png"):
        old.unlink()

    def take(page, name: str) -> None:
        page.screenshot(path=str(SHOTS / f"{name}.png"), full_page=True)

    return take


def test_import_send_and_delivery(
    django_db_setup,  # first: the live server (session-scoped) then stops before the test DB goes
    live_server,
    megafon_provider,
    settings,
    admin_user,
    shot,
    tmp_path,
    monkeypatch,
):
    from django.db import connections
    from playwright.sync_api import expect, sync_playwright

    from crm_sms import outbox
    from crm_sms.models import Campaign

    # Playwright's sync API runs an event loop in this thread; the ORM calls below (the worker)
    # are plain synchronous code in between browser steps.
    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    megafon_provider.configure(callback_delay=0.3)
    settings.CRM_SMS = {**settings.CRM_SMS, "PUBLIC_URL": live_server.url, "CALLBACK_TOKEN": TOKEN}
    upload = tmp_path / "contacts_1c.csv"
    upload.write_bytes(CSV)

    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
            ],
        )
        context = browser.new_context(locale="en-US", viewport={"width": 1280, "height": 900})
        page = context.new_page()
        page.set_default_timeout(15_000)
        try:
            # 1. log in
            page.goto(f"{live_server.url}/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            shot(page, "01-login")
            page.click("input[type=submit]")
            expect(page.locator("#site-name")).to_contain_text("CRM SMS demo")

            # 2. import a 1C-style CSV (cp1251, ';', phones like 8 (900) …)
            page.goto(f"{live_server.url}/admin/crm_sms/contact/")
            page.click("a.import_link")
            page.set_input_files("#id_file", str(upload))
            shot(page, "02-import-form")
            page.click("#import-form input[type=submit]")
            expect(page.locator("#import-created")).to_have_text("3")
            expect(page.locator("#import-skipped")).to_have_text("1")
            expect(page.locator("#import-errors")).to_contain_text("5")  # the bad line
            shot(page, "03-import-check")
            page.click("input[name=_confirm]")
            expect(page.locator(".messagelist")).to_contain_text("3 new contacts")
            expect(page.locator("#result_list tbody tr")).to_have_count(3)
            shot(page, "04-contacts")

            # 3. select them all and choose "Send SMS…"
            page.check("#action-toggle")
            page.select_option("select[name=action]", "send_sms_action")
            page.click("button[name=index]")
            expect(page.locator("#sms-recipients-count")).to_have_text("3 recipients")
            expect(page.locator("#id_sender")).to_have_value("Test")

            # the counter: typed text is counted as text.py counts it
            page.fill("#id_text", "Hello {{ first_name }}!")
            expect(page.locator("#sms-counter")).to_contain_text("GSM-7")
            page.fill("#id_text", "")
            typed = "Здравствуйте, {{ first_name }}! Скидка 10%"
            page.locator("#id_text").press_sequentially(typed)
            counter = page.locator("#sms-counter")
            expect(counter).to_contain_text("UCS-2")
            expect(counter).to_have_attribute("data-characters", str(len(typed)))
            expect(counter).to_have_attribute("data-segments", "1")
            for text in COUNTER_CASES:
                js = page.evaluate("t => window.crmSmsInfo(t)", text)
                assert js == sms_info(text).as_dict(), text
            shot(page, "05-send-sms-typed")

            # 4. preview, then send
            page.click("#sms-preview-button")
            preview = page.locator("#sms-preview")
            expect(preview).to_contain_text("Здравствуйте, Иван! Скидка 10%")
            expect(preview).to_contain_text("Здравствуйте, Мария! Скидка 10%")
            expect(page.locator("#sms-total")).to_contain_text("3 SMS parts to 3 recipients")
            shot(page, "06-preview")
            page.click("#sms-send")
            expect(page).to_have_url(re.compile(r"/admin/crm_sms/campaign/\d+/change/$"))
            expect(page.locator("#crm-sms-status")).to_have_text("running")
            shot(page, "07-campaign-queued")

            # 5. a worker sends; the sandbox calls back; the page follows by itself
            summary = outbox.dispatch_due()
            assert summary["sent"] == 3, summary
            delivered = page.locator('[data-status-count="delivered"]')
            expect(delivered).to_have_text("3", timeout=20_000)
            deadline = time.monotonic() + 10
            while Campaign.objects.get().status != "completed" and time.monotonic() < deadline:
                time.sleep(0.2)
            page.reload()
            expect(page.locator("#crm-sms-status")).to_have_text("completed")
            expect(page.locator(".crm-sms-progress-label")).to_contain_text("3 delivered")
            shot(page, "08-campaign-delivered")
            assert len(megafon_provider.accepted) == 3

            # 6. the message log, and the same pages in Russian
            page.goto(f"{live_server.url}/admin/crm_sms/message/?status__exact=delivered")
            expect(page.locator("#result_list tbody tr")).to_have_count(3)
            shot(page, "09-messages")
            ru = browser.new_context(locale="ru-RU", viewport={"width": 1280, "height": 900})
            ru_page = ru.new_page()
            ru_page.goto(f"{live_server.url}/admin/login/?next=/admin/crm_sms/campaign/")
            ru_page.fill("#id_username", "admin")
            ru_page.fill("#id_password", "password")
            ru_page.click("input[type=submit]")
            expect(ru_page.locator("#result_list")).to_contain_text("доставлено")
            shot(ru_page, "10-campaigns-ru")
            ru.close()
        finally:
            browser.close()
            # The ORM calls above ran in Playwright's context, which got connections of its own.
            connections.close_all()
