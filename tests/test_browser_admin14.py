"""Issue 14 in a real browser (Debian's chromium through Playwright), one browser and one live
server for the whole walk:

- the SMS dashboard, reached from the admin index's link: its SVG charts show the data the test
  made (the days with bars, each provider's delivery rate, the top failure reason and its
  count), in English and in Russian;
- the page of a running campaign shows its charts and redraws them without a reload: the test
  applies delivery reports (``crm_sms.reports``) and waits until the funnel shows them;
- the header's language switch, English → Russian → English; a message's events (written by a
  worker that ran in Russian) read in the reader's language;
- the Send SMS form (an error by its field, the live counter, the preview's "5 of 10 shown")
  and the import check page (a bad e-mail and a repeated phone);
- screenshots of every new or changed page at 1366×900 and 1920×1080 (full page), in Russian,
  the dashboard and the campaign in English too; each dark at 1366 px; into test-output/admin14/.

Assertions are on ids and data, not on wording other work may change.
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "admin14"
SIZES = ((1366, 900), (1920, 1080))
CAMPAIGN = "Весенняя распродажа"
ANNA_PHONE = "+79001234567"
HISTORY_OLD = 24  # Anna's messages before the campaign: with its one, two pages of history
WAIT_MS = 20_000

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]


# --- the data: a campaign sent by the worker, reports, history, consent events ------------------


def make_campaign():
    """Ten contacts (Anna first) and an eleventh; a campaign to the ten, sent by the worker in
    Russian: two wait (due in an hour), of the eight sent 3 delivered, 2 undelivered (1288),
    1 failed (3), 2 with no report yet. Returns (campaign, Anna, the two still "sent")."""
    from django.utils import timezone, translation

    from crm_sms import outbox
    from crm_sms.backends.base import DeliveryReport, DeliveryStatus
    from crm_sms.models import Contact, Message
    from crm_sms.reports import apply_delivery_reports

    anna = Contact.objects.create(
        first_name="Анна", last_name="Иванова", phone=ANNA_PHONE, email="anna@example.com"
    )
    for i in range(1, 11):
        Contact.objects.create(first_name=f"Клиент {i}", phone=f"+7900765{i:04d}")
    ten = Contact.objects.exclude(first_name="Клиент 10")
    campaign = outbox.send_campaign(ten, "Привет, {{ first_name }}! Скидки до воскресенья.",
                                    name=CAMPAIGN, window=None)  # fmt: skip
    messages = Message.objects.filter(campaign=campaign)
    # Queued eight minutes ago (today still: the dashboard counts days); two of its messages
    # wait an hour, so the campaign keeps running and its page keeps refreshing.
    now = timezone.now()
    midnight = timezone.localtime(now).replace(hour=0, minute=0, second=0, microsecond=0)
    messages.update(created_at=max(now - timedelta(minutes=8), midnight))
    later = list(messages.exclude(contact=anna).order_by("pk")[:2].values_list("pk", flat=True))
    messages.filter(pk__in=later).update(next_attempt_at=now + timedelta(hours=1))
    with translation.override("ru"):  # a worker whose language is Russian
        outbox.dispatch_due()
    sent = list(messages.filter(status="sent").order_by("pk"))
    assert len(sent) == 8
    verdicts = [("delivered", "", "")] * 3 + [
        ("undelivered", "1288", "Абонент недоступен"),
        ("undelivered", "1288", "Абонент недоступен"),
        ("failed", "3", "Bad number"),
    ]
    reports = [
        DeliveryReport(DeliveryStatus(status), msg_id=m.msg_id, error_code=code, error_message=text)
        for m, (status, code, text) in zip(sent, verdicts, strict=False)
    ]
    assert apply_delivery_reports(reports, provider="default")["applied"] == len(verdicts)
    return campaign, anna, sent[len(verdicts) :]


def make_history_and_backup(anna) -> None:
    """Anna's older messages (out of the dashboard's 30 days), her consent and opt-out events;
    two days ago at "backup": 3 delivered, 1 undelivered (1288)."""
    from django.utils import timezone

    from crm_sms import consent
    from crm_sms.models import Message

    now = timezone.now()
    for i in range(HISTORY_OLD):
        Message.objects.create(
            contact=anna, phone=ANNA_PHONE, text=f"Здравствуйте, Анна! Сообщение {i}",
            provider="default", msg_id=f"b14-old-{i}", status="delivered",
            created_at=now - timedelta(days=40 + i),
        )  # fmt: skip
    for i, status in enumerate(["delivered"] * 3 + ["undelivered"]):
        Message.objects.create(
            phone=f"+7900111{i:04d}", text="Hi", provider="backup", msg_id=f"b14-backup-{i}",
            status=status, error_code="1288" if status == "undelivered" else "",
            error_message="Абонент недоступен" if status == "undelivered" else "",
            created_at=now - timedelta(days=2),
        )  # fmt: skip
    consent.give_consent([anna], source=consent.SOURCE_WEB_FORM, reason="форма на сайте")
    consent.opt_out([anna], source=consent.SOURCE_SMS_REPLY, reason="СТОП")


def deliver(messages) -> None:
    from crm_sms.backends.base import DeliveryReport, DeliveryStatus
    from crm_sms.reports import apply_delivery_reports

    reports = [DeliveryReport(DeliveryStatus.DELIVERED, msg_id=m.msg_id) for m in messages]
    assert apply_delivery_reports(reports, provider="default")["applied"] == len(messages)


# --- the browser ---------------------------------------------------------------------------------


#: Elements wider than their box at 1366 px (content cut off or scrolled sideways).
OVERFLOW_JS = """() => Array.from(document.querySelectorAll(
    "#content-main, #content-main .module, #content-main .results, #content-main table, "
    + "#content-main fieldset, #content-main .submit-row, #content-main figure"))
  .filter(e => e.scrollWidth > e.clientWidth + 1)
  .map(e => e.tagName.toLowerCase() + (e.id ? "#" + e.id : "")
       + (typeof e.className === "string" && e.className
          ? "." + e.className.trim().split(/\\s+/).join(".") : "")
       + " " + e.scrollWidth + ">" + e.clientWidth)"""


def shots(page, name: str) -> None:
    """Full-page screenshots at both sizes, and dark at 1366 px; the page is left at 1366 px.
    What overflows at 1366 px is noted in overflow-1366.txt for whoever looks at them."""
    for width, height in reversed(SIZES):
        page.set_viewport_size({"width": width, "height": height})
        page.screenshot(path=str(SHOTS / f"{name}-{width}.png"), full_page=True)
    page.emulate_media(color_scheme="dark")  # the admin's theme follows the system's
    page.screenshot(path=str(SHOTS / f"{name}-dark-1366.png"), full_page=True)
    page.emulate_media(color_scheme="light")
    wide = page.evaluate(OVERFLOW_JS)
    with (SHOTS / "overflow-1366.txt").open("a", encoding="utf-8") as report:
        report.write(f"{name}: {'; '.join(wide) or 'nothing'}\n")


def number(lang: str, text: str) -> re.Pattern:
    """``text`` ("37.5%") as the language writes it (Russian: a decimal comma)."""
    if lang == "ru":
        text = text.replace(".", ",")
    return re.compile(re.escape(text).replace("%", r"\s?%"))


def check_dashboard(page, expect, base: str, lang: str, delivered: int) -> None:
    """From the admin index's link to the dashboard; its charts show the test's data
    (``delivered`` of the 8 handed to "default")."""
    from django.core.cache import cache

    cache.clear()  # the numbers are cached for a minute: these are the ones of now
    page.goto(f"{base}/admin/")
    shots(page, f"index-{lang}")
    page.locator('#content-main a[href="/admin/crm_sms/dashboard/"]').first.click()
    expect(page).to_have_url(re.compile(r"/admin/crm_sms/dashboard/$"))
    daily = page.locator("svg#crm-sms-daily")
    expect(daily).to_be_visible()
    legend = daily.locator("g.crm-sms-legend rect")
    expect(legend).to_have_count(4)
    series = {
        c.split("crm-sms-s-")[1]
        for c in legend.evaluate_all("l => l.map(r => r.className.baseVal)")
    }
    assert series == {"delivered", "sent", "queued", "failed"}
    expect(daily.locator("g.crm-sms-bars > g")).to_have_count(30)  # a column per day
    with_bars = daily.locator("g.crm-sms-bars > g:has(rect)")
    expect(with_bars).to_have_count(2)  # today and two days ago
    totals = sorted(
        int(t.rsplit(" ", 1)[-1]) for t in with_bars.locator(":scope > title").all_text_contents()
    )
    assert totals == [4, 10]
    providers = page.locator("svg#crm-sms-providers")
    expect(providers).to_contain_text(number(lang, f"{100 * delivered / 8:.1f}%"))
    expect(providers).to_contain_text(number(lang, "75.0%"))  # backup: 3 of 4
    reason = page.locator('#crm-sms-reasons tr:has(td[data-reason-count="3"])')
    expect(reason).to_contain_text("1288")
    expect(page.locator('#crm-sms-reasons td[data-reason-count="1"]')).to_have_count(1)
    expect(page.locator("#crm-sms-in-progress")).to_contain_text(CAMPAIGN)
    shots(page, f"dashboard-{lang}")


def check_campaign_refresh(page, expect, base: str, campaign, waiting) -> None:
    """The running campaign's charts; reports arrive and the funnel shows them, no reload."""
    page.goto(f"{base}/admin/crm_sms/campaign/{campaign.pk}/change/")
    charts = page.locator("#crm-sms-charts")
    expect(charts).to_have_attribute("data-active", "1")
    expect(page.locator("svg#crm-sms-timeline")).to_be_visible()
    funnel = page.locator("svg#crm-sms-funnel")
    expect(funnel).to_contain_text("10 (100.0%)")  # recipients
    expect(funnel).to_contain_text("7 (70.0%)")  # sent: delivered, sent, undelivered
    expect(funnel).to_contain_text("3 (30.0%)")  # delivered
    shots(page, "campaign-en")
    page.evaluate("window.crmSmsNotReloaded = true")
    deliver(waiting)
    expect(funnel).to_contain_text("5 (50.0%)", timeout=WAIT_MS)
    delivered_now = page.locator("svg#crm-sms-timeline polygon.crm-sms-s-delivered > title")
    expect(delivered_now).to_have_text(re.compile(r"\D5$"))  # "<label>: 5" at the last minute
    assert page.evaluate("window.crmSmsNotReloaded === true")


def check_events(page, expect, base: str, message_pk: int, lang: str) -> None:
    """The message's events in the reader's language: the worker wrote them in Russian."""
    page.goto(f"{base}/admin/crm_sms/message/{message_pk}/change/")
    main = page.locator("#content-main")
    if lang == "en":
        expect(main).to_contain_text("Attempt 1")
        expect(main).not_to_contain_text("Попытка")
    else:
        expect(main).to_contain_text("Попытка 1")


def switch_language(page, expect, lang: str) -> None:
    page.select_option("#crm-sms-language", lang)
    expect(page.locator("html")).to_have_attribute("lang", lang)
    expect(page.locator("#crm-sms-language")).to_have_value(lang)


def check_contacts(page, expect, base: str, anna) -> None:
    page.goto(f"{base}/admin/crm_sms/contact/")
    expect(page.locator("#result_list tbody tr")).to_have_count(11)
    shots(page, "contacts-ru")
    page.goto(f"{base}/admin/crm_sms/contact/{anna.pk}/change/")
    history = page.locator("#sms-history")
    expect(history.locator("tbody tr")).to_have_count(20)  # a page of her 25 messages
    expect(history).to_contain_text(CAMPAIGN)  # the newest first
    expect(history.locator("a[href*='sms_page=2']")).to_have_count(1)
    # Her consent and opt-out history: consent given, opted out, consent withdrawn.
    events = page.locator(".inline-group").filter(has_text="СТОП")
    expect(events.locator("tbody tr.has_original")).to_have_count(3)
    shots(page, "contact-ru")
    history.locator("a[href*='sms_page=2']").click()
    expect(history.locator("tbody tr")).to_have_count(HISTORY_OLD + 1 - 20)
    expect(history).not_to_contain_text(CAMPAIGN)


def check_send_page(page, expect, base: str) -> None:
    """Every contact selected: an error by its field, the counter, the preview."""
    page.goto(f"{base}/admin/crm_sms/contact/")
    page.check("#action-toggle")
    page.select_option("select[name=action]", "send_sms_action")
    page.click("button[name=index]")
    page.fill("#id_text", "Привет, {{ first_name")
    page.click("#sms-preview-button")
    expect(page.locator(".field-text .errorlist")).to_be_visible()
    shots(page, "send-error-ru")
    counter = page.locator("#sms-counter")
    page.fill("#id_text", "Ж" * 71)  # UCS-2: 70 in one part
    expect(counter).to_have_attribute("data-segments", "2")
    page.fill("#id_text", "Привет, {{ first_name }}! Скидки до воскресенья.")
    expect(counter).to_have_attribute("data-segments", "1")
    page.click("#sms-preview-button")
    expect(page.locator("#sms-preview tbody tr")).to_have_count(5)
    shown = page.locator("#sms-samples-shown")
    expect(shown).to_contain_text(re.compile(r"\b5\b.*\b10\b"))  # 11 selected, Anna opted out
    expect(page.locator("#sms-send")).to_be_visible()
    shots(page, "send-ru")


IMPORT_CSV = (
    "Имя,Телефон,Email\n"
    "Пётр,+79005550001,petr@example.com\n"
    "Ольга,+79005550002,не-почта\n"
    "Пётр второй,+79005550001,p2@example.com\n"
    "Ирина,+79005550003,irina@example.com\n"
).encode()


def check_import(page, expect, base: str) -> None:
    """The check page of a small CSV: four rows, a repeated phone listed with its line, the
    bad e-mail shown (skipped or imported without it: either is the check's word)."""
    page.goto(f"{base}/admin/crm_sms/contact/import/")
    page.set_input_files(
        "#id_file", files=[{"name": "clients.csv", "mimeType": "text/csv", "buffer": IMPORT_CSV}]
    )
    page.click("#import-form input[type=submit]")
    expect(page.locator("#import-rows")).to_have_text("4")
    repeated = page.locator("#import-errors tbody tr").filter(has_text="+79005550001")
    expect(repeated).to_have_count(1)
    expect(repeated.locator("td").first).to_have_text("4")  # the file's line
    expect(page.locator("#content-main")).to_contain_text("не-почта")
    shots(page, "import-check-ru")


def test_charts_language_switch_and_screenshots(
    django_db_setup,  # first: the live server stops before the test database goes
    live_server,
    sms_providers,
    admin_user,
    monkeypatch,
):
    from django.core.cache import cache
    from django.db import connections
    from playwright.sync_api import expect, sync_playwright

    from crm_sms.admin import dashboard
    from crm_sms.models import Message

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", 1)  # the page redraws every second
    cache.clear()
    SHOTS.mkdir(parents=True, exist_ok=True)
    (SHOTS / "overflow-1366.txt").write_text("", encoding="utf-8")
    campaign, anna, waiting = make_campaign()
    make_history_and_backup(anna)
    anna_message = Message.objects.get(campaign=campaign, contact=anna).pk
    base = live_server.url
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"]
        )
        page = browser.new_page(locale="en-US", viewport={"width": 1366, "height": 900})
        page.set_default_timeout(15_000)
        try:
            page.goto(f"{base}/admin/login/?next=/admin/")
            page.fill("#id_username", "admin")
            page.fill("#id_password", "password")
            page.click("input[type=submit]")
            expect(page.locator("html")).to_have_attribute("lang", "en")

            check_dashboard(page, expect, base, "en", delivered=3)
            check_campaign_refresh(page, expect, base, campaign, waiting)
            check_events(page, expect, base, anna_message, "en")

            switch_language(page, expect, "ru")
            check_events(page, expect, base, anna_message, "ru")
            shots(page, "message-ru")
            check_dashboard(page, expect, base, "ru", delivered=5)
            page.goto(f"{base}/admin/crm_sms/campaign/{campaign.pk}/change/")
            expect(page.locator("svg#crm-sms-funnel")).to_contain_text("5 (50,0%)")
            shots(page, "campaign-ru")
            page.goto(f"{base}/admin/crm_sms/campaign/")
            expect(page.locator("#result_list")).to_contain_text(CAMPAIGN)
            shots(page, "campaigns-ru")
            check_contacts(page, expect, base, anna)
            check_send_page(page, expect, base)
            check_import(page, expect, base)

            switch_language(page, expect, "en")
            check_events(page, expect, base, anna_message, "en")
        finally:
            browser.close()
            connections.close_all()
