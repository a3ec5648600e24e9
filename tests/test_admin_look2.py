"""Issue 14's screenshots, second round, through the test client: one empty value ("—") on the
campaign and message pages; no row labels above a page's event and consent rows; "may have
been sent" only on a message in doubt; consent sources in the reader's language; the progress
line without zero counts; the campaign and message lists' combined columns (and their sorting);
the dashboard's cache time in its first heading; the charts' legend laid out by text width.
(The widths at 1366 px are checked in a browser: tests/test_browser_look2.py.)"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from django.test import Client
from django.urls import reverse
from django.utils import translation

from crm_sms import charts, consent
from crm_sms.admin.campaigns import progress_label
from crm_sms.models import (
    Campaign,
    CampaignStatus,
    Contact,
    ContactEvent,
    Message,
    MessageEvent,
)

pytestmark = pytest.mark.django_db

CAMPAIGNS = reverse("admin:crm_sms_campaign_changelist")
MESSAGES = reverse("admin:crm_sms_message_changelist")
WHEN = datetime(2026, 3, 9, 10, 15, 42, tzinfo=UTC)

# A read-only field or a cell that shows Django's default empty value, "-".
DJANGO_EMPTY = re.compile(r'<div class="readonly">-</div>|<td class="[^"]*">-</td>|<p>-</p>')


@pytest.fixture
def admin_ru(db, admin_user) -> Client:
    client = Client(headers={"accept-language": "ru"})
    client.force_login(admin_user)
    return client


@pytest.fixture
def campaign(admin_user) -> Campaign:
    return Campaign.objects.create(
        name="Весна",
        text="Привет!",
        status=CampaignStatus.RUNNING,
        created_by=admin_user,
        recipients_count=10,
        started_at=WHEN,
    )


def make_message(campaign: Campaign | None = None, **fields) -> Message:
    values = {
        "phone": "+79001234567",
        "text": "Привет!",
        "provider": "default",
        "msg_id": f"l2-{Message.objects.count()}",
        "status": "delivered",
        "sent_at": WHEN,
        "delivered_at": WHEN + timedelta(seconds=3),
        **fields,
    }
    return Message.objects.create(campaign=campaign, **values)


def page_of(client: Client, name: str, pk: int) -> str:
    response = client.get(reverse(f"admin:crm_sms_{name}_change", args=[pk]))
    assert response.status_code == 200
    return response.content.decode()


# --- one empty value ------------------------------------------------------------------------


@pytest.mark.parametrize("language", ["en", "ru"])
def test_campaign_and_message_pages_show_one_empty_value(
    admin_en, admin_ru, sms_providers, campaign, language
):
    client = admin_en if language == "en" else admin_ru
    message = make_message(campaign, sent_at=None, delivered_at=None, status="queued")
    MessageEvent.objects.create(message=message, old_status="", new_status="queued", source="send")
    for html in (page_of(client, "campaign", campaign.pk), page_of(client, "message", message.pk)):
        assert not DJANGO_EMPTY.search(html), DJANGO_EMPTY.search(html).group(0)
        assert '<div class="readonly">—</div>' in html


# --- the inline row labels -------------------------------------------------------------------


def test_event_and_consent_rows_carry_the_class_that_hides_their_labels(
    admin_en, sms_providers, campaign
):
    """Django writes "1: queued → sending" (the event's raw __str__) above each row;
    admin.css hides it for fieldsets of class crm-sms-log, and both pages load admin.css."""
    message = make_message(campaign)
    MessageEvent.objects.create(
        message=message, old_status="sent", new_status="delivered", source="callback"
    )
    contact = Contact.objects.create(last_name="Иванова", phone="+79001234568")
    consent.give_consent(Contact.objects.filter(pk=contact.pk), source=consent.SOURCE_WEB_FORM)
    css = (
        Path(__file__).resolve().parent.parent / "crm_sms" / "static" / "crm_sms" / "admin.css"
    ).read_text()
    assert "fieldset.crm-sms-log td.original p { display: none; }" in css
    for html in (
        page_of(admin_en, "message", message.pk),
        page_of(admin_en, "contact", contact.pk),
    ):
        assert re.search(r'<fieldset class="module [^"]*crm-sms-log', html)
        assert "crm_sms/admin.css" in html
        assert 'class="original"' in html  # the row is there, with its (hidden) label


# --- "may have been sent" only in doubt ------------------------------------------------------


def test_maybe_sent_only_on_a_message_in_doubt(admin_en, sms_providers, campaign):
    delivered = make_message(campaign)
    uncertain = make_message(campaign, status="uncertain", maybe_sent=True, delivered_at=None)
    failed_maybe = make_message(campaign, status="failed", maybe_sent=True, delivered_at=None)
    html = page_of(admin_en, "message", delivered.pk)
    assert "field-maybe_sent" not in html
    assert "field-status_explained" not in html  # nothing to explain on a delivered one
    for message in (uncertain, failed_maybe):
        html = page_of(admin_en, "message", message.pk)
        assert "field-maybe_sent" in html
        assert "field-status_explained" in html
    assert "the provider may have this message" in page_of(admin_en, "message", failed_maybe.pk)


# --- consent sources translated --------------------------------------------------------------


def test_consent_sources_are_shown_in_the_readers_language(admin_en, admin_ru, sms_providers):
    contact = Contact.objects.create(last_name="Иванова", phone="+79001234568")
    other = Contact.objects.create(last_name="Петров", phone="+79001234569")
    consent.give_consent(Contact.objects.filter(pk=contact.pk), source=consent.SOURCE_WEB_FORM)
    consent.opt_out([contact.pk], source=consent.SOURCE_SMS_REPLY, reason="STOP")
    consent.give_consent(Contact.objects.filter(pk=other.pk), source="market stall")
    ru = page_of(admin_ru, "contact", contact.pk)
    # The field and the history's first row (web form: in the shipped catalog).
    assert ru.count("веб-форма") == 2 and "web form" not in ru
    en = page_of(admin_en, "contact", contact.pk)
    assert "SMS reply" in en and "sms reply" not in en
    # Stored as it came.
    contact.refresh_from_db()
    assert contact.consent_source == consent.SOURCE_WEB_FORM
    # Free text stays as typed; the field keeps its help text.
    html = page_of(admin_ru, "contact", other.pk)
    assert html.count("market stall") == 2
    assert "field-source_display" in html
    with translation.override("en"):
        help_texts = [
            str(Contact._meta.get_field("consent_source").help_text),
            str(ContactEvent._meta.get_field("source").help_text),  # the history's header
        ]
    html = page_of(admin_en, "contact", other.pk)
    assert all(text in html for text in help_texts)


# --- the progress line -----------------------------------------------------------------------


def test_the_progress_line_leaves_out_zero_counts():
    assert progress_label(5, 0, 3, 0, 10) == "5 delivered · 3 failed of 10"
    assert progress_label(4, 2, 1, 0, 10) == "4 delivered · 2 sent · 1 failed of 10"
    assert progress_label(0, 0, 0, 2, 10) == "2 cancelled of 10"
    assert progress_label(0, 0, 0, 0, 10) == "10 waiting"
    assert progress_label(0, 0, 0, 0, 0) == "no messages"


# --- the lists' combined columns -------------------------------------------------------------


def test_campaign_list_combines_its_columns_and_sorts_by_them(
    admin_en, sms_providers, campaign, settings
):
    settings.TIME_ZONE = "UTC"
    later = Campaign.objects.create(
        name="Осень",
        text="x",
        status=CampaignStatus.COMPLETED,
        started_at=WHEN + timedelta(hours=1),
        finished_at=WHEN + timedelta(hours=2),
    )
    response = admin_en.get(CAMPAIGNS)
    cl = response.context["cl"]
    assert list(cl.list_display)[1:] == [
        "name",
        "status_column",
        "progress",
        "recipients_count",
        "created_column",
        "period_column",
    ]
    html = response.content.decode()
    row = re.search(r"<tr>(?:(?!</tr>).)*Весна.*?</tr>", html, re.S).group(0)
    assert "running" in row and campaign.get_kind_display() in row  # the kind under it
    assert "admin</div>" in row  # the author under the creation time
    assert "03/09/2026 10:15" in row and "– …</span>" in row  # started, still running
    assert "– 03/09/2026</span> 12:15" in html  # the other one's end
    index = list(cl.list_display).index("period_column")
    for order, expected in ((f"{index}", [campaign, later]), (f"-{index}", [later, campaign])):
        ordered = admin_en.get(CAMPAIGNS, {"o": order}).context["cl"].result_list
        assert [c.pk for c in ordered] == [c.pk for c in expected]


def test_message_list_combines_its_columns_and_sorts_by_them(
    admin_en, sms_providers, campaign, settings
):
    settings.TIME_ZONE = "UTC"
    failed = make_message(campaign, status="failed", error_code="1288", delivered_at=None)
    moved = make_message(
        campaign, provider="backup", moved_from="default", sent_at=WHEN + timedelta(seconds=1)
    )
    response = admin_en.get(MESSAGES)
    cl = response.context["cl"]
    assert list(cl.list_display)[1:] == [
        "phone_column",
        "status_column",
        "campaign",
        "short_text",
        "created_at_column",
        "sent_at_column",
    ]
    html = response.content.decode()
    assert '<div class="crm-sms-quiet">1288</div>' in html  # the code under the status
    assert "← default" in html  # the provider under the phone
    assert "03/09/2026 10:15:42" in html and "03/09/2026 10:15:45" in html  # sent, delivered
    index = list(cl.list_display).index("sent_at_column")
    ordered = admin_en.get(MESSAGES, {"o": f"-{index}"}).context["cl"].result_list
    assert [m.pk for m in ordered] == [moved.pk, failed.pk]
    assert 'style="color' not in html  # the status colours come from admin.css
    assert 'class="crm-sms-status crm-sms-status-failed"' in html


# --- the dashboard ---------------------------------------------------------------------------


def test_dashboard_puts_the_cache_time_in_the_first_heading(admin_en, sms_providers, campaign):
    make_message(campaign)
    html = admin_en.get(reverse("admin:crm_sms_dashboard_changelist")).content.decode()
    heading = re.search(r'id="crm-sms-daily-module">\s*<h2>(.*?)</h2>', html, re.S)
    assert heading and 'id="crm-sms-as-of"' in heading.group(1) and "As of" in heading.group(1)
    assert 'viewBox="0 0 440' in html  # the provider chart at its size in a half-width module


# --- the charts' legend ----------------------------------------------------------------------


def test_text_width_follows_the_letters():
    assert charts.text_width("illi") < charts.text_width("aaaa") < charts.text_width("mmmm")
    assert charts.text_width("отправлено") > charts.text_width("delivered")


def test_a_long_legend_wraps_and_pushes_the_plot_down():
    series = [
        charts.Series(key, label, [1, 2])
        for key, label in (
            ("delivered", "доставлено"),
            ("sent", "отправлено, отчёта ещё нет"),
            ("queued", "ждут отправки"),
            ("failed", "не доставлено"),
            ("cancelled", "отменено"),
            ("uncertain", "неизвестно, отправлено ли"),
        )
    ]
    axes = charts.Axes(title="t", desc="d", x_label="x", y_label="y", empty="-")
    frame = charts.Frame(560, show_title=False)
    svg = str(charts.stacked_area("c", axes, [0, 1], [(0, "a"), (1, "b")], series, frame))
    legend = re.search(r'<g class="crm-sms-legend">(.*?)</g>', svg, re.S).group(1)
    texts = re.findall(r'<text x="([\d.]+)" y="([\d.]+)">([^<]*)</text>', legend)
    assert [t[2] for t in texts] == [s.label for s in series]
    rows = sorted({float(y) for _, y, _ in texts})
    assert len(rows) == 2 and rows[1] - rows[0] == charts.LEGEND_ROW
    # Every label ends inside the frame, each before the next swatch of its row.
    for (x, y, label), following in zip(texts, [*texts[1:], None], strict=True):
        end = float(x) + charts.text_width(label)
        assert end <= frame.width - 8
        if following and following[1] == y:
            assert end + 16 <= float(following[0]) - 14
    # The plot starts below the second row.
    top = min(float(y) for y in re.findall(r'<line [^>]*y1="([\d.]+)"', svg))
    assert top > rows[1]
