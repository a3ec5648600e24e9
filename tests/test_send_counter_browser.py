"""The live counter of "Send SMS…" in a real browser (Debian's chromium through Playwright):
typing a template shows the longest text it makes for the selected contacts ("Longest text:
…", issue 14.5), following the transliteration box; the text as typed stays in
data-characters. Screenshots go to test-output/send-counter/."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "send-counter"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

NAMES = ["Ян", "Анна", "Александра"]


def test_the_counter_shows_the_longest_rendered_text(
    django_db_setup, live_server, sms_providers, admin_user, monkeypatch
):
    from playwright.sync_api import expect, sync_playwright

    from crm_sms.models import Contact
    from crm_sms.text import sms_info
    from crm_sms.translit import prepare_text

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    SHOTS.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(NAMES):
        Contact.objects.create(first_name=name, phone=f"+7900000002{i}")
    Contact.objects.create(first_name="Константинопольская", phone="+79000000029", opted_out=True)
    typed = "Здравствуйте, {{ first_name }}! Скидка 10% до воскресенья"
    longest = sms_info(typed.replace("{{ first_name }}", "Александра"))
    latin = sms_info(prepare_text(typed.replace("{{ first_name }}", "Александра"), translit=True))
    base = live_server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_context(locale="en-US").new_page()
        page.set_default_timeout(15_000)
        try:
            page.goto(f"{base}/admin/login/?next=/admin/crm_sms/contact/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            page.check("#action-toggle")
            page.select_option("select[name=action]", "send_sms_action")
            page.click("button[name=index]")
            expect(page.locator("#sms-recipients-count")).to_have_text("3 recipients")

            counter = page.locator("#sms-counter")
            page.locator("#id_text").press_sequentially(typed)
            expect(counter).to_have_attribute("data-longest-characters", str(longest.characters))
            expect(counter).to_have_attribute("data-longest-segments", str(longest.segments))
            expect(counter).to_have_attribute("data-characters", str(len(typed)))  # as typed
            expect(counter).to_contain_text(
                f"Longest text: {longest.characters} characters, UCS-2, "
                f"{longest.segments} SMS part (70 per part)"
            )
            page.set_viewport_size({"width": 1366, "height": 900})
            page.screenshot(path=str(SHOTS / "longest-1366.png"), full_page=True)

            page.check("#id_translit")
            expect(counter).to_have_attribute("data-longest-encoding", "GSM-7")
            expect(counter).to_have_attribute("data-longest-characters", str(latin.characters))
            expect(counter).to_contain_text(
                f"before transliteration: {longest.characters} characters, UCS-2"
            )
            page.uncheck("#id_translit")

            page.locator("#id_text").fill("Hi {{ nickname }}")
            expect(counter).to_have_attribute("data-longest-error", re.compile("nickname"))
            expect(counter).to_contain_text("{{ nickname }}")
            expect(counter).to_have_attribute("data-longest-characters", "")

            page.locator("#id_text").fill("No variables here")  # counted in the browser alone
            expect(counter).to_have_text("17 characters, GSM-7, 1 SMS part (160 per part)")
            expect(counter).to_have_attribute("data-longest-pending", "0")
        finally:
            browser.close()
