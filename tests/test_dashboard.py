"""The SMS dashboard (crm_sms/admin/dashboard.py): linked from the admin index, shown to staff
who may view messages (403 otherwise, the login page for the anonymous), the right numbers for
known messages in a bounded number of queries; and a campaign's charts and their poll."""

from __future__ import annotations

import random
import xml.etree.ElementTree as ET
from datetime import timedelta
from pathlib import Path

import pytest
from django.contrib.auth.models import Permission, User
from django.core.cache import cache
from django.template import Context, Template
from django.test import Client, RequestFactory
from django.urls import reverse
from django.utils import timezone

from crm_sms import stats
from crm_sms.campaign_counts import recount
from crm_sms.models import Campaign, Message

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/crm_sms/dashboard/"
NS = {"svg": "http://www.w3.org/2000/svg"}


@pytest.fixture(autouse=True)
def _no_cache():
    cache.clear()
    yield
    cache.clear()


def message(status: str, days_ago: int = 0, provider: str = "default", **fields) -> Message:
    created = timezone.now() - timedelta(days=days_ago)
    return Message.objects.create(
        phone="+79000000001", text="Hi", provider=provider, status=status, created_at=created,
        **fields,
    )  # fmt: skip


@pytest.fixture
def known(sms_providers):
    """Today: 3 delivered, 1 sent, 2 undelivered (code 1288), 1 failed (code 3) at "default",
    and the running campaign's one queued message; 2 days ago: 1 delivered, 1 queued at
    "backup"; 40 days ago: 5 delivered (out of the period). 10 in the period, 4 delivered."""
    for _ in range(3):
        message("delivered")
    message("sent")
    message("undelivered", error_code="1288", error_message="Абонент недоступен")
    message("undelivered", error_code="1288", error_message="Абонент недоступен")
    message("failed", error_code="3", error_message="Bad number")
    message("delivered", days_ago=2, provider="backup")
    message("queued", days_ago=2, provider="backup")
    for _ in range(5):
        message("delivered", days_ago=40)
    running = Campaign.objects.create(name="Big sale", text="Hi", status="running")
    Campaign.objects.create(name="Done", text="Hi", status="completed")
    message("queued", campaign=running)
    return running


def staff(username: str, *codenames: str) -> Client:
    user = User.objects.create_user(username, password="pw", is_staff=True)
    user.user_permissions.set(
        Permission.objects.filter(content_type__app_label="crm_sms", codename__in=codenames)
    )
    client = Client(headers={"accept-language": "en"})
    client.force_login(user)
    return client


def svg_of(html: str, ident: str) -> ET.Element:
    start = html.index(
        f'<svg xmlns="http://www.w3.org/2000/svg" class="crm-sms-chart" id="{ident}"'
    )
    return ET.fromstring(html[start : html.index("</svg>", start) + len("</svg>")])


def test_the_admin_index_links_to_the_dashboard(admin_en):
    html = admin_en.get("/admin/").content.decode()
    assert f'href="{DASHBOARD}"' in html and "SMS dashboard" in html
    assert reverse("admin:crm_sms_dashboard_changelist") == DASHBOARD


def test_the_dashboard_shows_the_numbers_of_the_last_30_days(
    admin_en, known, django_assert_max_num_queries
):
    # session, user, per day/provider/status, failure reasons, campaigns, their counts
    with django_assert_max_num_queries(6):
        page = admin_en.get(DASHBOARD)
    assert page.status_code == 200
    html = page.content.decode()
    assert "Last 30 days: 10 messages, 40.0% delivered." in html
    daily = svg_of(html, "crm-sms-daily")
    desc = daily.find("svg:desc", NS).text
    assert "10 in all" in desc and "4 delivered" in desc and "3 failed" in desc
    assert "2 waiting" in desc and "1 sent, no report yet" in desc
    today = timezone.localdate().strftime("%-d")
    tips = [t.text for t in daily.iter(f"{{{NS['svg']}}}title")]
    assert any(tip.startswith(f"{today} ") and tip.endswith("delivered: 3") for tip in tips)
    # Per provider: delivered of those handed to it (queued ones were not).
    providers = svg_of(html, "crm-sms-providers")
    bar_texts = [t.text for t in providers.iter(f"{{{NS['svg']}}}text")]
    assert "42.9% · 3 of 7" in bar_texts and "100.0% · 1 of 1" in bar_texts
    # Failure reasons, most frequent first.
    assert html.index("Абонент недоступен") < html.index("Bad number")
    assert 'data-reason-count="2"' in html and 'data-reason-count="1"' in html
    # Campaigns in progress: the running one, not the completed one.
    assert "Big sale" in html and "Done" not in html.split('id="crm-sms-in-progress"')[1]


def test_the_numbers_are_cached_for_a_minute(admin_en, known, django_assert_max_num_queries):
    admin_en.get(DASHBOARD)
    message("delivered")
    with django_assert_max_num_queries(4):  # session, user, campaigns, their counts
        html = admin_en.get(DASHBOARD).content.decode()
    assert "10 messages" in html
    assert stats.dashboard_period(fresh=True).total == 11


def test_permissions(client, known):
    assert client.get(DASHBOARD).status_code == 302  # anonymous: the login page
    assert staff("nobody", "view_contact").get(DASHBOARD).status_code == 403
    viewer = staff("reader", "view_message")
    page = viewer.get(DASHBOARD)
    assert page.status_code == 200
    html = page.content.decode()
    assert (
        "Big sale" in html and reverse("admin:crm_sms_campaign_change", args=[known.pk]) not in html
    )
    index = staff("other", "view_contact").get("/admin/").content.decode()
    assert DASHBOARD not in index


def test_empty_dashboard(admin_en):
    html = admin_en.get(DASHBOARD).content.decode()
    assert "No messages in these days." in html
    assert "No failed messages in the last 30 days." in html
    assert "No campaign is running, scheduled or paused." in html


def test_the_dashboard_in_russian(admin_user, known):
    client = Client(headers={"accept-language": "ru"})
    client.force_login(admin_user)
    page = client.get(DASHBOARD)
    assert page.status_code == 200
    svg_of(page.content.decode(), "crm-sms-daily")  # still well-formed


# --- a campaign's charts ------------------------------------------------------------------------


@pytest.fixture
def campaign(sms_providers):
    campaign = Campaign.objects.create(
        name="Spring", text="Hi", status="running", recipients_count=4
    )
    now = timezone.now() - timedelta(minutes=5)
    for status in ("delivered", "delivered", "sent", "queued"):
        m = message(status, campaign=campaign)
        Message.objects.filter(pk=m.pk).update(
            created_at=now,
            sent_at=now + timedelta(minutes=1) if status != "queued" else None,
            delivered_at=now + timedelta(minutes=2) if status == "delivered" else None,
        )
    return campaign


def test_campaign_charts_json(admin_en, campaign, django_assert_max_num_queries):
    url = reverse("admin:crm_sms_dashboard_campaign_charts", args=[campaign.pk])
    with django_assert_max_num_queries(5):  # session, user, campaign, its counts, its timeline
        state = admin_en.get(url).json()
    assert state["active"] is True
    html = state["html"]
    timeline = svg_of(html, "crm-sms-timeline")
    assert "At " in timeline.find("svg:desc", NS).text
    assert "2 delivered, 1 sent, no report yet, 1 waiting" in timeline.find("svg:desc", NS).text
    funnel = svg_of(html, "crm-sms-funnel")
    words = [t.text for t in funnel.iter(f"{{{NS['svg']}}}text")]
    assert "4 (100.0%)" in words and "3 (75.0%)" in words and "2 (50.0%)" in words


def test_campaign_charts_need_campaign_permission(campaign):
    url = reverse("admin:crm_sms_dashboard_campaign_charts", args=[campaign.pk])
    assert staff("nobody", "view_message").get(url).status_code == 403
    assert staff("reader", "view_campaign").get(url).status_code == 200


def test_the_campaign_page_shows_its_charts(admin_en, campaign):
    html = admin_en.get(reverse("admin:crm_sms_campaign_change", args=[campaign.pk])).content
    html = html.decode()
    assert 'id="crm-sms-charts"' in html and 'data-active="1"' in html
    svg_of(html, "crm-sms-timeline")
    svg_of(html, "crm-sms-funnel")
    draft = Campaign.objects.create(name="Draft", text="Hi", status="draft")
    html = admin_en.get(reverse("admin:crm_sms_campaign_change", args=[draft.pk])).content
    assert b'id="crm-sms-charts"' not in html


def test_a_big_campaigns_page_leaves_its_timeline_to_the_script(admin_en, campaign, monkeypatch):
    from crm_sms.admin import dashboard

    monkeypatch.setattr(dashboard, "BIG_CAMPAIGN", 3)
    change = reverse("admin:crm_sms_campaign_change", args=[campaign.pk])
    html = admin_en.get(change).content.decode()
    assert 'data-deferred="1"' in html and "Drawing the delivery over time…" in html
    assert 'id="crm-sms-timeline"' not in html
    svg_of(html, "crm-sms-funnel")  # counts only: drawn at once
    url = reverse("admin:crm_sms_dashboard_campaign_charts", args=[campaign.pk])
    svg_of(admin_en.get(url).json()["html"], "crm-sms-timeline")
    html = admin_en.get(change).content.decode()  # now cached: drawn with the page
    assert 'data-deferred="0"' in html and 'id="crm-sms-timeline"' in html


def test_the_template_tag_draws_the_charts_and_polls_while_running(campaign, admin_user):
    request = RequestFactory().get("/")
    request.user = admin_user
    html = Template("{% load crm_sms_charts %}{% campaign_charts c %}").render(
        Context({"c": campaign, "request": request})
    )
    assert 'id="crm-sms-charts"' in html and 'data-active="1"' in html
    assert reverse("admin:crm_sms_dashboard_campaign_charts", args=[campaign.pk]) in html
    assert "crm_sms/campaign_charts.js" in html and "crm_sms/charts.css" in html
    svg_of(html, "crm-sms-timeline")
    svg_of(html, "crm-sms-funnel")
    Campaign.objects.filter(pk=campaign.pk).update(status="completed")
    Message.objects.filter(campaign=campaign, status__in=["sent", "queued"]).update(status="failed")
    recount([campaign.pk])  # statuses set by hand, not through transitions.move_messages
    campaign.refresh_from_db()
    html = Template("{% load crm_sms_charts %}{% campaign_charts c %}").render(
        Context({"c": campaign, "request": request})
    )
    assert 'data-active="0"' in html
    draft = Campaign.objects.create(name="Draft", text="Hi", status="draft")
    html = Template("{% load crm_sms_charts %}{% campaign_charts c %}").render(
        Context({"c": draft, "request": request})
    )
    assert html.strip() == ""  # nothing to draw before it is sent


# --- in a browser -------------------------------------------------------------------------------

CHROMIUM = "/usr/bin/chromium"
ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "test-output" / "charts"


def office_history(days: int = 30) -> Campaign:
    """A month of messages at two providers with a few failure reasons, and a campaign running
    for the last 40 minutes; returns the campaign."""
    rnd = random.Random(7)
    now = timezone.now()
    reasons = [("1288", "Абонент недоступен"), ("3", "Неверный номер"), ("13", "Expired")]
    rows = []
    for day in range(days):
        for _ in range(rnd.randint(20, 120) if day % 7 not in (5, 6) else rnd.randint(0, 20)):
            status = rnd.choices(
                ["delivered", "undelivered", "failed", "sent", "cancelled"], [85, 7, 4, 3, 1]
            )[0]
            code, text = rnd.choice(reasons) if status in ("failed", "undelivered") else ("", "")
            rows.append(
                Message(
                    phone="+79000000001",
                    text="Hi",
                    status=status,
                    error_code=code,
                    error_message=text,
                    provider=rnd.choice(["default", "default", "backup"]),
                    created_at=now - timedelta(days=day, minutes=rnd.randint(0, 600)),
                )  # fmt: skip
            )
    Message.objects.bulk_create(rows)
    campaign = Campaign.objects.create(
        name="Весенняя распродажа", text="Скидка 15%", status="running", recipients_count=600,
        provider="default", started_at=now - timedelta(minutes=40),
    )  # fmt: skip
    start = now - timedelta(minutes=40)
    rows = []
    for i in range(600):
        created = start
        sent = start + timedelta(seconds=4 * i) if 4 * i < 2300 else None
        status = (
            "queued"
            if sent is None
            else rnd.choices(["delivered", "sent", "undelivered"], [90, 6, 4])[0]
        )
        delivered = sent + timedelta(seconds=rnd.randint(5, 120)) if status == "delivered" else None
        if delivered and delivered > now:
            status, delivered = "sent", None
        rows.append(
            Message(
                campaign=campaign,
                phone="+79000000002",
                text="Скидка 15%",
                status=status,
                provider="default",
                created_at=created,
                sent_at=sent,
                delivered_at=delivered,
                error_code="1288" if status == "undelivered" else "",
            )  # fmt: skip
        )
    Message.objects.bulk_create(rows)
    for m in Message.objects.filter(campaign=campaign, status="undelivered"):
        Message.objects.filter(pk=m.pk).update(updated_at=m.sent_at + timedelta(seconds=60))
    recount([campaign.pk])  # bulk_create passes by transitions' counts
    return campaign


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
@pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="needs Debian's chromium")
def test_screenshots_of_the_dashboard_and_a_campaign(
    django_db_setup, live_server, sms_providers, admin_user, monkeypatch
):
    from django.db import connections
    from playwright.sync_api import expect, sync_playwright

    from crm_sms.admin import dashboard

    monkeypatch.setenv("DJANGO_ALLOW_ASYNC_UNSAFE", "true")
    monkeypatch.setattr(dashboard, "REFRESH_SECONDS", 1)
    # The campaign counts as big: its page leaves the timeline to the script, which asks for it.
    monkeypatch.setattr(dashboard, "BIG_CAMPAIGN", 100)
    monkeypatch.setattr(dashboard, "BIG_REFRESH_SECONDS", 1)
    campaign = office_history()
    SHOTS.mkdir(parents=True, exist_ok=True)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(
            executable_path=CHROMIUM,
            args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"],
        )
        try:
            for width, scheme, language in [
                (1366, "light", "en-US"), (1920, "light", "en-US"), (1366, "dark", "ru-RU"),
                (1920, "dark", "en-US"),
            ]:  # fmt: skip
                context = browser.new_context(
                    locale=language, color_scheme=scheme, viewport={"width": width, "height": 900}
                )
                page = context.new_page()
                page.set_default_timeout(15_000)
                page.goto(f"{live_server.url}/admin/login/?next={DASHBOARD}")
                page.fill("#id_username", "admin")
                page.fill("#id_password", "password")
                page.click("input[type=submit]")
                expect(page.locator("#crm-sms-daily")).to_be_visible()
                name = f"{width}-{scheme}-{language[:2]}"
                page.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)
                page.goto(f"{live_server.url}/admin/crm_sms/campaign/{campaign.pk}/change/")
                expect(page.locator("#crm-sms-timeline")).to_be_visible()
                expect(page.locator("#crm-sms-funnel")).to_be_visible()
                page.screenshot(path=str(SHOTS / f"campaign-{name}.png"), full_page=True)
                if width == 1366 and scheme == "light":  # the charts follow the campaign
                    waiting = Message.objects.filter(campaign=campaign, status="queued")
                    waiting.update(status="delivered", delivered_at=timezone.now())
                    recount([campaign.pk])
                    delivered = campaign.messages.filter(status="delivered").count()
                    funnel = page.locator("#crm-sms-funnel")
                    expect(funnel).to_contain_text(f"{delivered} ({delivered / 6:.1f}%)")
                context.close()
        finally:
            browser.close()
            connections.close_all()
