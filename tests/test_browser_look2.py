"""Issue 14's screenshots, second round, in a real browser (Debian's chromium through
Playwright) at 1366×900: the campaign list and the message list fit the screen with both
sidebars in English and Russian (no sideways scrolling, "0 of 6 selected" on one line); on a
campaign's page the funnel sits beside the timeline; the message page has no row labels above
its events; the status colours keep their contrast in the dark theme.
Screenshots go to test-output/look2/."""

from __future__ import annotations

import os
from datetime import timedelta
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
SHOTS = Path(__file__).resolve().parent.parent / "test-output" / "look2"

pytestmark = [
    pytest.mark.browser,
    pytest.mark.slow,
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(not os.path.exists(CHROMIUM), reason="needs Debian's chromium"),
]

STATUSES = ["delivered", "delivered", "sent", "failed", "undelivered", "queued", "cancelled"]


def make_data(admin_user):
    """Campaigns of every status with long names and all their times; messages of every
    status, moved between providers, with error codes and long texts."""
    from django.utils import timezone

    from crm_sms.models import Campaign, CampaignStatus, Contact, Message, MessageEvent

    now = timezone.now()
    contact = Contact.objects.create(
        last_name="Константинопольская", first_name="Александра", phone="+79005550001"
    )
    campaigns = []
    for i, status in enumerate(
        [
            CampaignStatus.RUNNING,
            CampaignStatus.COMPLETED,
            CampaignStatus.PAUSED,
            CampaignStatus.SCHEDULED,
            CampaignStatus.CANCELLED,
            CampaignStatus.DRAFT,
        ]
    ):
        campaigns.append(
            Campaign.objects.create(
                name=f"Весенняя распродажа для постоянных клиентов {i}",
                text="Здравствуйте, {{ first_name }}! Скидки до воскресенья.",
                status=status,
                created_by=admin_user,
                recipients_count=120_000,
                started_at=now - timedelta(hours=2) if status != CampaignStatus.DRAFT else None,
                finished_at=now if status == CampaignStatus.COMPLETED else None,
            )
        )
    messages = []
    for i, status in enumerate(STATUSES * 2):
        message = Message.objects.create(
            campaign=campaigns[0],
            contact=contact,
            phone=contact.phone,
            text="Здравствуйте, Александра! Скидки до воскресенья на всё в магазине.",
            provider="backup" if i % 3 == 0 else "default",
            moved_from="default" if i % 3 == 0 else "",
            move_reason="default refused",
            msg_id=f"look2-{i:04d}",
            status=status,
            error_code="1288" if status in ("failed", "undelivered") else "",
            attempts=2,
            created_at=now - timedelta(minutes=30 - i),
            sent_at=now - timedelta(minutes=29 - i) if status != "queued" else None,
            delivered_at=now - timedelta(minutes=28 - i) if status == "delivered" else None,
        )
        messages.append(message)
    delivered = messages[0]
    for old, new, source in (("queued", "sending", "send"), ("sending", "sent", "send")):
        MessageEvent.objects.create(
            message=delivered, old_status=old, new_status=new, source=source
        )
    MessageEvent.objects.create(
        message=delivered, old_status="sent", new_status="delivered", source="callback"
    )
    return campaigns, delivered


def widths(page) -> dict[str, int]:
    """The page's and the result table's box's scroll and visible widths."""
    return page.evaluate(
        """() => {
            const box = document.querySelector('#changelist .results');
            return {page: document.documentElement.scrollWidth, window: window.innerWidth,
                    results: box.scrollWidth, resultsBox: box.clientWidth};
        }"""
    )


@pytest.mark.parametrize("language", ["en", "ru"])
def test_campaign_and_message_lists_fit_1366(browser_page, admin_user, language):
    base, open_page = browser_page
    campaigns, _ = make_data(admin_user)
    browser, page = open_page(language)
    try:
        for name, url, rows in (
            ("campaigns", "/admin/crm_sms/campaign/", len(campaigns)),
            ("messages", "/admin/crm_sms/message/", len(STATUSES) * 2),
        ):
            page.goto(f"{base}{url}")
            assert page.locator("#changelist-filter").is_visible()
            assert page.locator("#nav-sidebar").is_visible()
            assert page.locator("#result_list tbody tr").count() == rows
            page.screenshot(path=str(SHOTS / f"{name}-{language}-1366.png"), full_page=True)
            measured = widths(page)
            assert measured["page"] <= measured["window"], (name, measured)
            assert measured["results"] <= measured["resultsBox"], (name, measured)
            # "0 of 6 selected" on one line, not "0 of" / "6".
            lines = page.eval_on_selector(
                "#changelist .actions .action-counter", "e => e.getClientRects().length"
            )
            assert lines == 1, name
    finally:
        browser.close()


def contrast(page, selector: str) -> float:
    """The WCAG contrast ratio of an element's text colour against the page's background."""
    return page.eval_on_selector(
        selector,
        """e => {
            const rgb = s => s.match(/[\\d.]+/g).slice(0, 3).map(Number);
            const lum = c => {
                const [r, g, b] = c.map(v => v / 255).map(
                    v => v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4));
                return 0.2126 * r + 0.7152 * g + 0.0722 * b;
            };
            const fg = lum(rgb(getComputedStyle(e).color));
            const bg = lum(rgb(getComputedStyle(document.body).backgroundColor));
            return (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
        }""",
    )


@pytest.mark.parametrize("language", ["en", "ru"])
def test_campaign_charts_side_by_side_and_message_page(browser_page, admin_user, language):
    base, open_page = browser_page
    campaigns, delivered = make_data(admin_user)
    for scheme in ("light", "dark"):
        browser, page = open_page(language, scheme)
        try:
            page.goto(f"{base}/admin/crm_sms/campaign/{campaigns[0].pk}/change/")
            wide = page.locator("#crm-sms-charts .crm-sms-figure-wide").bounding_box()
            narrow = page.locator("#crm-sms-charts .crm-sms-figure-narrow").bounding_box()
            page.screenshot(
                path=str(SHOTS / f"campaign-{language}-{scheme}-1366.png"), full_page=True
            )
            assert wide and narrow
            # The funnel beside the timeline, on the same line.
            assert abs(wide["y"] - narrow["y"]) <= 1, (wide, narrow)
            assert narrow["x"] >= wide["x"] + wide["width"], (wide, narrow)
            # The legend's items do not run into each other, and their gaps are even: the
            # gap from a label's end to the next swatch (16 px planned) within 6..24 px.
            gaps = page.eval_on_selector(
                "#crm-sms-timeline .crm-sms-legend",
                """g => {
                    const rects = [...g.querySelectorAll('rect')];
                    const texts = [...g.querySelectorAll('text')];
                    const gaps = [];
                    for (let i = 1; i < rects.length; i++) {
                        const prev = texts[i - 1].getBBox(), next = rects[i].getBBox();
                        if (Math.abs(prev.y - texts[i].getBBox().y) < 1) {
                            gaps.push(next.x - (prev.x + prev.width));
                        }
                    }
                    return gaps;
                }""",
            )
            assert gaps and all(6 <= gap <= 24 for gap in gaps), gaps
            # The progress bar's delivered part follows the theme (charts.css's greens).
            bar = page.eval_on_selector(
                ".crm-sms-campaign .crm-sms-delivered", "e => getComputedStyle(e).backgroundColor"
            )
            assert bar == {"light": "rgb(60, 154, 95)", "dark": "rgb(79, 191, 121)"}[scheme]

            page.goto(f"{base}/admin/crm_sms/message/{delivered.pk}/change/")
            page.screenshot(
                path=str(SHOTS / f"message-{language}-{scheme}-1366.png"), full_page=True
            )
            rows = page.locator("fieldset.crm-sms-log tbody tr.has_original")
            assert rows.count() == 3
            # No "1: queued → sending" above the rows.
            labels = page.locator("fieldset.crm-sms-log td.original p")
            assert all(not labels.nth(i).is_visible() for i in range(labels.count()))
            # Readable status colours in either theme (WCAG AA for normal text: 4.5).
            assert contrast(page, ".field-status_badge .crm-sms-status-delivered") >= 4.5
            assert page.locator(".field-maybe_sent").count() == 0
        finally:
            browser.close()


def test_dashboard_headings_chart_sizes_and_cache_note(browser_page, admin_user):
    base, open_page = browser_page
    make_data(admin_user)
    browser, page = open_page("ru")
    try:
        for width in (1366, 1920):
            page.set_viewport_size({"width": width, "height": 900})
            page.goto(f"{base}/admin/crm_sms/dashboard/")
            page.screenshot(path=str(SHOTS / f"dashboard-ru-{width}.png"), full_page=True)
            # Every section title in one style: the chart headings and the table captions.
            styles = page.eval_on_selector_all(
                "#content-main .module > h2, #content-main .module caption",
                "els => els.map(e => [getComputedStyle(e).textTransform,"
                " getComputedStyle(e).fontSize])",
            )
            assert len(styles) == 4 and len({tuple(s) for s in styles}) == 1, styles
            # The time of the cached numbers stands in the first chart's heading.
            assert page.locator("#crm-sms-daily-module h2 #crm-sms-as-of").is_visible()
            # The provider chart is not scaled down: its 12 px text stays 12 px or nearly.
            scale = page.eval_on_selector(
                "#crm-sms-providers",
                "svg => svg.getBoundingClientRect().width / svg.viewBox.baseVal.width",
            )
            assert scale >= 0.95, scale
            # The daily chart is centred in its module (no empty right third at 1920).
            chart = page.locator("#crm-sms-daily").bounding_box()
            module = page.locator("#crm-sms-daily-module").bounding_box()
            left = chart["x"] - module["x"]
            right = module["x"] + module["width"] - chart["x"] - chart["width"]
            assert abs(left - right) <= 2, (width, left, right)
            # No "0 sent" in the progress of the campaigns in progress.
            label = page.locator("#crm-sms-in-progress .crm-sms-progress-label").first
            assert not label.inner_text().startswith("0 ") and " 0 " not in label.inner_text()
    finally:
        browser.close()


def test_contact_page_logs_look_like_the_other_inlines(browser_page, admin_user):
    from crm_sms import consent
    from crm_sms.models import Contact

    base, open_page = browser_page
    make_data(admin_user)
    contact = Contact.objects.get()
    consent.give_consent(Contact.objects.filter(pk=contact.pk), source=consent.SOURCE_WEB_FORM)
    consent.opt_out([contact.pk], source=consent.SOURCE_SMS_REPLY, reason="STOP")
    browser, page = open_page("ru")
    try:
        page.goto(f"{base}/admin/crm_sms/contact/{contact.pk}/change/")
        page.screenshot(path=str(SHOTS / "contact-ru-1366.png"), full_page=True)
        # "История SMS" in the style of the inline heading above it.
        style = "e => [getComputedStyle(e).textTransform, getComputedStyle(e).fontSize]"
        assert page.eval_on_selector("#sms-history > h2", style) == page.eval_on_selector(
            ".inline-group h2", style
        )
        rows = page.locator("fieldset.crm-sms-log tbody tr.has_original")
        assert rows.count() >= 2  # consent given, opted out (and its withdrawal)
        labels = page.locator("fieldset.crm-sms-log td.original p")
        assert all(not labels.nth(i).is_visible() for i in range(labels.count()))
        assert "веб-форма" in rows.nth(0).inner_text()
    finally:
        browser.close()
