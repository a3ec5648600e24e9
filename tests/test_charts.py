"""Server-side SVG charts (crm_sms/charts.py) and the numbers behind them (crm_sms/stats.py):
well-formed SVG with a title, a description and a legend; the right numbers in each series for
known data; a campaign's state per minute from its messages' times."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import pytest
from django.utils import translation

from crm_sms import charts, stats
from crm_sms.models import Campaign, Message

NS = {"svg": "http://www.w3.org/2000/svg"}
T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
AXES = charts.Axes("Title <&>", "Described", "Day", "Messages")


def parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)  # well-formed XML, or this raises
    assert root.tag == "{http://www.w3.org/2000/svg}svg"
    assert root.get("role") == "img"
    ident = root.get("id")
    assert root.get("aria-labelledby") == f"{ident}-title {ident}-desc"
    assert root.find("svg:title", NS).get("id") == f"{ident}-title"
    assert root.find("svg:desc", NS).get("id") == f"{ident}-desc"
    return root


def by_class(root: ET.Element, tag: str, cls: str) -> list[ET.Element]:
    return [e for e in root.iter(f"{{{NS['svg']}}}{tag}") if e.get("class") == cls]


def texts(root: ET.Element) -> list[str]:
    return [e.text or "" for e in root.iter(f"{{{NS['svg']}}}text")]


@pytest.fixture(autouse=True)
def _no_cache():
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


def test_nice_ticks():
    assert charts.nice_ticks(0) == [0, 1]
    assert charts.nice_ticks(7) == [0, 2, 4, 6, 8]
    assert charts.nice_ticks(100) == [0, 20, 40, 60, 80, 100]
    assert charts.nice_ticks(1234)[-1] >= 1234
    assert len(charts.nice_ticks(987_654)) <= 7


def test_stacked_bars_draw_each_value_in_proportion():
    series = [
        charts.Series("delivered", "delivered", [10, 0, 30]),
        charts.Series("failed", "failed", [5, 0, 10]),
    ]
    root = parse(charts.stacked_bars("t-bars", AXES, ["1 Mar", "2 Mar", "3 Mar"], series))
    assert root.find("svg:title", NS).text == "Title <&>"
    assert root.find("svg:desc", NS).text == "Described"
    delivered = by_class(root, "rect", "crm-sms-s-delivered")
    failed = by_class(root, "rect", "crm-sms-s-failed")
    # The legend's swatch and one bar per non-zero value.
    assert len(delivered) == 1 + 2 and len(failed) == 1 + 2
    tips = [r.find("svg:title", NS).text for r in delivered[1:] + failed[1:]]
    assert tips == ["1 Mar, delivered: 10", "3 Mar, delivered: 30", "1 Mar, failed: 5",
                    "3 Mar, failed: 10"]  # fmt: skip
    heights = [float(r.get("height")) for r in delivered[1:] + failed[1:]]
    unit = heights[0] / 10
    assert heights == pytest.approx([10 * unit, 30 * unit, 5 * unit, 10 * unit], rel=0.01)
    # Axis labels, legend, tick labels.
    labels = texts(root)
    assert {"Day", "Messages", "delivered", "failed", "3 Mar"} <= set(labels)
    assert "40" in labels and "50" not in labels  # the y axis: 0 to 40 (the top column)


def test_stacked_area_stacks_series_and_ends_at_the_totals():
    x = [0, 1, 2, 3]
    series = [
        charts.Series("delivered", "delivered", [0, 2, 5, 8]),
        charts.Series("queued", "waiting", [10, 8, 5, 2]),
    ]
    ticks = [(0, "09:00"), (3, "09:03")]
    root = parse(charts.stacked_area("t-area", AXES, x, ticks, series))
    polygons = {p.get("class"): p for p in root.iter(f"{{{NS['svg']}}}polygon")}
    assert set(polygons) == {"crm-sms-s-delivered", "crm-sms-s-queued"}
    assert polygons["crm-sms-s-queued"].find("svg:title", NS).text == "waiting: 2"
    # The queued band's top edge is the total (10 everywhere): one height.
    points = [
        tuple(map(float, p.split(","))) for p in polygons["crm-sms-s-queued"].get("points").split()
    ]
    top = points[:4]
    assert len({y for _, y in top}) == 1
    xs = [px for px, _ in top]
    assert xs == sorted(xs) and xs[0] < xs[-1]
    assert {"09:00", "09:03", "Day", "Messages"} <= set(texts(root))


def test_one_point_is_a_column_and_no_data_says_so():
    one = charts.stacked_area(
        "t-one", AXES, [0], [(0, "10:00")], [charts.Series("sent", "sent", [3])]
    )
    parse(one)
    empty = charts.stacked_area(
        "t-empty",
        charts.Axes("T", "D", "x", "y", empty="No messages yet."),
        [],
        [],
        [charts.Series("sent", "sent", [])],
    )
    assert "No messages yet." in texts(parse(empty))


def test_funnel_and_bars_write_counts_and_shares():
    steps = [
        ("recipients", "Recipients", 200),
        ("sent", "Sent", 150),
        ("delivered", "Delivered", 120),
    ]
    root = parse(charts.funnel("t-funnel", "Funnel", "Desc", steps))
    words = texts(root)
    assert "150 (75.0%)" in words and "120 (60.0%)" in words and "200 (100.0%)" in words
    widths = [float(r.get("width")) for r in root.iter(f"{{{NS['svg']}}}rect")]
    assert widths[1] / widths[0] == pytest.approx(0.75, rel=0.01)
    bars = [charts.Bar("MegaFon", 0.5, "50.0% · 1 of 2"), charts.Bar("<b>", 1.0, "100%")]
    root = parse(charts.hbars("t-bars", "Rate", "Desc", bars))
    filled = by_class(root, "rect", "crm-sms-s-delivered")
    assert float(filled[0].get("width")) * 2 == pytest.approx(float(filled[1].get("width")))
    assert "<b>" in texts(root)  # escaped in the markup, a plain string once parsed


def test_russian_numbers_stay_well_formed():
    with translation.override("ru"):
        svg = charts.funnel("t-ru", "Воронка", "Описание", [("sent", "Отправлено", 1234567)])
    assert re.search(r"1\s234\s567", " ".join(texts(parse(svg))))


# --- stats --------------------------------------------------------------------------------------


def flows_at(minute: int, what: str, n: int) -> tuple[datetime, str, int]:
    return (T0 + timedelta(minutes=minute), what, n)


def test_timeline_from_flows_follows_each_message():
    flows = [
        flows_at(0, "queued", 10),  # ten created at 09:00
        flows_at(1, "sent", 6),  # six accepted at 09:01…
        flows_at(2, "delivered+sent", 4),  # …four of them delivered at 09:02
        flows_at(2, "failed", 1),  # one failed without being sent
        flows_at(3, "failed+sent", 1),  # one undelivered after being sent
    ]
    timeline = stats.timeline_from_flows(flows)
    assert timeline.step == timedelta(minutes=1)
    # At the end of each minute, from the first (09:00-09:01) to the last one with a change.
    assert timeline.times == [T0 + timedelta(minutes=m) for m in range(1, 5)]
    assert timeline.series["queued"] == [10, 4, 3, 3]
    assert timeline.series["sent"] == [0, 6, 2, 1]
    assert timeline.series["delivered"] == [0, 0, 4, 4]
    assert timeline.series["failed"] == [0, 0, 1, 2]
    assert timeline.at_end() == {
        "delivered": 4, "sent": 1, "queued": 3, "failed": 2, "cancelled": 0, "uncertain": 0,
    }  # fmt: skip


def test_long_campaigns_get_coarser_steps():
    assert stats.choose_step(timedelta(minutes=90)) == timedelta(minutes=1)
    assert stats.choose_step(timedelta(hours=5)) == timedelta(minutes=5)
    assert stats.choose_step(timedelta(days=3)) == timedelta(hours=1)
    assert stats.choose_step(timedelta(days=400)) == timedelta(days=4)
    flows = [flows_at(0, "queued", 5), flows_at(600, "sent", 5)]
    timeline = stats.timeline_from_flows(flows)
    assert timeline.step == timedelta(minutes=10)
    assert timeline.series["sent"][-1] == 5 and timeline.series["queued"][-1] == 0
    assert len(timeline.times) <= stats.MAX_POINTS + 1


def make_message(campaign, status, created, *, sent=None, delivered=None, settled=None, **kw):
    message = Message.objects.create(
        campaign=campaign, phone="+79000000001", text="Hi", provider=kw.pop("provider", "default"),
        status=status, created_at=created, sent_at=sent, delivered_at=delivered, **kw,
    )  # fmt: skip
    Message.objects.filter(pk=message.pk).update(updated_at=settled or created)
    return message


@pytest.mark.django_db
def test_campaign_timeline_from_the_messages_times():
    campaign = Campaign.objects.create(name="Spring", text="Hi", status="completed")
    at = lambda m: T0 + timedelta(minutes=m, seconds=20)  # noqa: E731
    make_message(campaign, "delivered", at(0), sent=at(1), delivered=at(2), settled=at(2))
    make_message(campaign, "delivered", at(0), sent=at(1), delivered=at(3), settled=at(3))
    make_message(campaign, "undelivered", at(0), sent=at(1), settled=at(4))
    make_message(campaign, "failed", at(0), settled=at(2))
    make_message(campaign, "sent", at(0), sent=at(2))
    make_message(campaign, "queued", at(0), sent=at(1))  # queued again: counts as waiting
    counts = {"delivered": 2, "undelivered": 1, "failed": 1, "sent": 1, "queued": 1}
    with translation.override("en"), stats_timezone("UTC"):
        timeline = stats.campaign_timeline(campaign.pk, counts, active=False)
    assert timeline.times == [T0 + timedelta(minutes=m) for m in range(1, 6)]
    assert timeline.series["queued"] == [6, 3, 1, 1, 1]
    assert timeline.series["sent"] == [0, 3, 3, 2, 1]
    assert timeline.series["delivered"] == [0, 0, 1, 2, 2]
    assert timeline.series["failed"] == [0, 0, 1, 1, 2]
    assert timeline.at_end() == {
        "delivered": 2, "sent": 1, "queued": 1, "failed": 2, "cancelled": 0, "uncertain": 0,
    }  # fmt: skip


def stats_timezone(name: str):
    from django.utils import timezone

    return timezone.override(name)
