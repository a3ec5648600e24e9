"""Charts drawn on the server as inline SVG: a stacked area over time, stacked bars per day, a
funnel and horizontal bars. No JavaScript and nothing fetched from the internet.

Every chart is a complete ``<svg>`` element (well-formed XML, built with ElementTree) with a
``<title>`` and a ``<desc>`` that say in words what it shows (``role="img"``,
``aria-labelledby``), a legend, and axis labels. Texts are passed in already translated; numbers
are formatted for the active language. Colours come from CSS classes (``crm-sms-s-<series>``,
``static/crm_sms/charts.css``, with the admin's light and dark variables); text and axes use
``currentColor``, so the charts follow the admin's theme. The presentation attributes are the
light theme's colours, for an SVG looked at without the stylesheet.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass

from django.utils.formats import number_format
from django.utils.safestring import SafeString, mark_safe

#: Light-theme colours of the series (charts.css overrides them per theme).
COLOURS = {
    "queued": "#d99a1e",
    "sent": "#4f8fb8",
    "delivered": "#3c9a5f",
    "failed": "#ba2121",
    "cancelled": "#999999",
    "uncertain": "#9067b8",
    "recipients": "#6c7a89",
}
FONT_SIZE = 12
LEGEND_ROW = 16


@dataclass(frozen=True)
class Series:
    """One coloured series: ``key`` picks its colour (``COLOURS``, CSS ``crm-sms-s-<key>``)."""

    key: str
    label: str
    values: Sequence[float]


@dataclass(frozen=True)
class Box:
    """The plot area inside the SVG."""

    left: float
    top: float
    right: float
    bottom: float

    @property
    def width(self) -> float:
        return self.right - self.left

    @property
    def height(self) -> float:
        return self.bottom - self.top


@dataclass(frozen=True)
class Frame:
    """The SVG's size in its own units, which are CSS pixels at its largest (charts.css lets
    it shrink, never grow: its text stays the admin's size), and whether the title is drawn
    (it is always the SVG's ``<title>``; a page whose heading says it can leave it out)."""

    width: int = 720
    height: int = 300
    show_title: bool = True

    @property
    def head(self) -> float:
        """The legend's baseline, under the title if there is one."""
        return 36 if self.show_title else 14

    def plot(self, left: float = 64, right: float = 16, bottom: float = 48) -> Box:
        return Box(left, self.head + 16, self.width - right, self.height - bottom)


@dataclass(frozen=True)
class Bar:
    """One row of a horizontal bar chart: ``share`` (0..1) is the bar's length."""

    label: str
    share: float
    text: str
    key: str = "delivered"


def fmt(value: float, decimals: int = 0) -> str:
    """``value`` as the active language writes numbers (grouped thousands)."""
    return number_format(round(value, decimals), decimals, force_grouping=True)


def percent(part: float, whole: float, decimals: int = 1) -> str:
    return f"{fmt(100.0 * part / whole if whole else 0.0, decimals)}%"


def nice_ticks(maximum: float, count: int = 5) -> list[float]:
    """Round tick values from 0 to at least ``maximum`` (0, 1, 2, 5 × 10ⁿ steps)."""
    if maximum <= 0:
        return [0, 1]
    raw = maximum / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    if step < 1:
        step = 1
    top = math.ceil(maximum / step) * step
    return [i * step for i in range(int(round(top / step)) + 1)]


# --- building blocks ----------------------------------------------------------------------------


def _el(parent: ET.Element, tag: str, text: str | None = None, **attrs: object) -> ET.Element:
    """A child element; attribute names use ``_`` for ``-`` (``text_anchor``)."""
    element = ET.SubElement(
        parent, tag, {k.rstrip("_").replace("_", "-"): str(v) for k, v in attrs.items()}
    )
    if text is not None:
        element.text = text
    return element


def _num(value: float) -> str:
    return f"{value:.1f}".rstrip("0").rstrip(".")


def _svg(ident: str, title: str, desc: str, frame: Frame) -> ET.Element:
    svg = ET.Element(
        "svg",
        {
            "xmlns": "http://www.w3.org/2000/svg",
            "class": "crm-sms-chart",
            "id": ident,
            "viewBox": f"0 0 {frame.width} {frame.height}",
            "style": f"max-width: {frame.width}px",
            "role": "img",
            "aria-labelledby": f"{ident}-title {ident}-desc",
            "font-size": str(FONT_SIZE),
            "fill": "currentColor",
        },
    )
    _el(svg, "title", title, id=f"{ident}-title")
    _el(svg, "desc", desc, id=f"{ident}-desc")
    if frame.show_title:
        _el(svg, "text", title, x=8, y=16, class_="crm-sms-chart-title", font_weight="bold")
    return svg


def _points(pairs: Sequence[tuple[float, float]]) -> str:
    return " ".join(f"{_num(a)},{_num(b)}" for a, b in pairs)


def _legend(svg: ET.Element, series: Sequence[Series], y: float, width: float) -> float:
    """Swatches and labels in rows under the title (a new row where the next would not fit);
    returns the height added by the rows after the first."""
    group = _el(svg, "g", class_="crm-sms-legend")
    x, top = 8.0, y
    for s in series:
        item = 14 + text_width(s.label)
        if x > 8 and x + item > width - 8:
            x, y = 8.0, y + LEGEND_ROW
        _el(group, "rect", x=_num(x), y=_num(y - 9), width=10, height=10, rx=2, **_paint(s.key))
        _el(group, "text", s.label, x=_num(x + 14), y=_num(y))
        x += item + 16
    return y - top


def _below_legend(box: Box, extra: float) -> Box:
    return Box(box.left, box.top + extra, box.right, box.bottom)


# Character widths at FONT_SIZE, for laying out a legend without measuring it: one width for
# every letter left a wide gap after a label full of "t", "r", spaces and commas and let a
# Cyrillic label run into the next. Sized on DejaVu Sans (Linux's sans-serif, the widest of
# the admin's fonts): with Segoe UI or Roboto the gaps grow a little, they never overlap.
_NARROW = set("iljI.,:;!|'\"()[] ")
_THIN = set("ftr-1")
_WIDE = set("mwMWжшщыюмЖШЩЫЮМ%")


def text_width(text: str) -> float:
    """About how wide ``text`` is at FONT_SIZE, in the SVG's units (CSS pixels)."""
    width = 0.0
    for ch in text:
        if ch in _NARROW:
            width += 3.8
        elif ch in _THIN:
            width += 4.8
        elif ch in _WIDE:
            width += 10.6
        elif ch.isupper():
            width += 8.4
        elif "\u0400" <= ch <= "\u04ff":
            width += 7.6
        else:
            width += 7.2
    return width * FONT_SIZE / 12


def _paint(key: str) -> dict[str, str]:
    return {"class_": f"crm-sms-s-{key}", "fill": COLOURS.get(key, "#888888")}


def _y_axis(svg: ET.Element, box: Box, ticks: list[float], label: str) -> None:
    group = _el(svg, "g", class_="crm-sms-axis")
    top = ticks[-1]
    for value in ticks:
        y = box.bottom - box.height * value / top
        _el(
            group,
            "line",
            x1=box.left,
            x2=box.right,
            y1=_num(y),
            y2=_num(y),
            class_="crm-sms-grid",
            stroke="#e8e8e8",
        )
        _el(group, "text", fmt(value), x=box.left - 6, y=_num(y + 4), text_anchor="end")
    _el(
        group,
        "text",
        label,
        class_="crm-sms-axis-label",
        text_anchor="middle",
        transform=f"translate(14 {_num(box.top + box.height / 2)}) rotate(-90)",
    )


def _x_axis(svg: ET.Element, box: Box, ticks: Sequence[tuple[float, str]], label: str) -> None:
    """``ticks``: (x in the plot, 0..1, label)."""
    group = _el(svg, "g", class_="crm-sms-axis")
    _el(
        group,
        "line",
        x1=box.left,
        x2=box.right,
        y1=box.bottom,
        y2=box.bottom,
        stroke="currentColor",
        stroke_opacity="0.5",
    )
    for share, text in ticks:
        x = box.left + box.width * share
        _el(
            group,
            "line",
            x1=_num(x),
            x2=_num(x),
            y1=box.bottom,
            y2=box.bottom + 4,
            stroke="currentColor",
        )
        _el(group, "text", text, x=_num(x), y=box.bottom + 17, text_anchor="middle")
    _el(
        group,
        "text",
        label,
        class_="crm-sms-axis-label",
        text_anchor="middle",
        x=_num(box.left + box.width / 2),
        y=_num(box.bottom + 38),
    )


def render(svg: ET.Element) -> SafeString:
    """The SVG as markup for a template (ElementTree escapes every text and attribute)."""
    return mark_safe(ET.tostring(svg, encoding="unicode"))


def _empty(svg: ET.Element, box: Box, text: str) -> SafeString:
    _el(
        svg,
        "text",
        text,
        x=_num(box.left + box.width / 2),
        y=_num(box.top + box.height / 2),
        text_anchor="middle",
        class_="crm-sms-chart-empty",
    )
    return render(svg)


# --- the charts ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Axes:
    """What a chart with axes says: its title, description and the axes' labels."""

    title: str
    desc: str
    x_label: str
    y_label: str
    empty: str = "—"


def stacked_area(
    ident: str,
    axes: Axes,
    x: Sequence[float],
    x_ticks: Sequence[tuple[float, str]],
    series: Sequence[Series],
    frame: Frame = Frame(),
) -> SafeString:
    """Series stacked over ``x`` (numbers in any unit, increasing); ``x_ticks`` are (x, label)
    in the same unit. The first series is drawn at the bottom. One point is drawn as a column."""
    svg, box = _svg(ident, axes.title, axes.desc, frame), frame.plot()
    box = _below_legend(box, _legend(svg, series, frame.head, frame.width))
    totals = [sum(s.values[i] for s in series) for i in range(len(x))]
    if not x or max(totals, default=0) <= 0:
        return _empty(svg, box, axes.empty)
    ticks = nice_ticks(max(totals))
    _y_axis(svg, box, ticks, axes.y_label)
    lo, hi = x[0], x[-1]
    span = (hi - lo) or 1.0

    def px(value: float) -> float:
        return box.left + box.width * ((value - lo) / span if hi > lo else 0.5)

    def py(value: float) -> float:
        return box.bottom - box.height * value / ticks[-1]

    xs = [px(v) for v in x] if len(x) > 1 else [box.left, box.right]
    base = [0.0] * len(x)
    group = _el(svg, "g", class_="crm-sms-areas")
    for s in series:
        top = [b + v for b, v in zip(base, s.values, strict=True)]
        lower, upper = (base, top) if len(x) > 1 else (base * 2, top * 2)
        points = [(a, py(v)) for a, v in zip(xs, upper, strict=True)]
        points += [(a, py(v)) for a, v in reversed(list(zip(xs, lower, strict=True)))]
        path = _el(group, "polygon", points=_points(points), fill_opacity="0.85", **_paint(s.key))
        _el(path, "title", f"{s.label}: {fmt(s.values[-1])}")
        base = top
    scale = [(lo + span * 0.5, text) for _, text in x_ticks] if hi <= lo else x_ticks
    _x_axis(svg, box, [((v - lo) / span, text) for v, text in scale], axes.x_label)
    return render(svg)


def stacked_bars(
    ident: str,
    axes: Axes,
    categories: Sequence[str],
    series: Sequence[Series],
    label_every: int = 1,
    frame: Frame = Frame(),
) -> SafeString:
    """One column per category, its series stacked (the first at the bottom); every
    ``label_every``-th category is labelled on the x axis. Each segment has a tooltip."""
    svg, box = _svg(ident, axes.title, axes.desc, frame), frame.plot()
    box = _below_legend(box, _legend(svg, series, frame.head, frame.width))
    totals = [sum(s.values[i] for s in series) for i in range(len(categories))]
    if not categories or max(totals, default=0) <= 0:
        return _empty(svg, box, axes.empty)
    ticks = nice_ticks(max(totals))
    _y_axis(svg, box, ticks, axes.y_label)
    slot = box.width / len(categories)
    width = max(1.0, slot * 0.72)
    group = _el(svg, "g", class_="crm-sms-bars")
    for i, name in enumerate(categories):
        y = box.bottom
        column = _el(group, "g")
        _el(column, "title", f"{name}: {fmt(totals[i])}")
        for s in series:
            height = box.height * s.values[i] / ticks[-1]
            if height <= 0:
                continue
            y -= height
            rect = _el(
                column,
                "rect",
                x=_num(box.left + slot * i + (slot - width) / 2),
                y=_num(y),
                width=_num(width),
                height=_num(height),
                **_paint(s.key),
            )
            _el(rect, "title", f"{name}, {s.label}: {fmt(s.values[i])}")
    labelled = [
        ((i + 0.5) / len(categories), name)
        for i, name in enumerate(categories)
        if (len(categories) - 1 - i) % label_every == 0  # the newest is always labelled
    ]
    _x_axis(svg, box, labelled, axes.x_label)
    return render(svg)


def funnel(
    ident: str,
    title: str,
    desc: str,
    steps: Sequence[tuple[str, str, int]],
    frame: Frame = Frame(width=480),
) -> SafeString:
    """Steps (key, label, count) as centred bars, each as wide as its share of the first
    (the frame's height is the steps'), with the count and the share beside it."""
    frame = Frame(frame.width, int(frame.head) + 8 + 52 * len(steps), frame.show_title)
    svg = _svg(ident, title, desc, frame)
    first = steps[0][2] if steps else 0
    left, right = 8, frame.width - 8
    widest = frame.width - 230  # the labels on the left, the counts on the right
    middle = left + 90 + widest / 2
    previous = None
    for i, (key, label, count) in enumerate(steps):
        width = max(2.0, widest * (count / first if first else 0.0))
        y = frame.head - 8 + 52 * i
        if previous is not None:  # the narrowing between this step and the one above
            up, down = previous / 2, width / 2
            neck = [
                (middle - up, y - 12),
                (middle + up, y - 12),
                (middle + down, y),
                (middle - down, y),
            ]
            _el(
                svg,
                "polygon",
                points=_points(neck),
                class_="crm-sms-funnel-neck",
                fill="#888888",
                fill_opacity="0.2",
            )
        rect = _el(
            svg,
            "rect",
            x=_num(middle - width / 2),
            y=_num(y),
            width=_num(width),
            height=32,
            rx=3,
            **_paint(key),
        )
        text = f"{fmt(count)} ({percent(count, first)})"
        _el(rect, "title", f"{label}: {text}")
        _el(svg, "text", label, x=left, y=_num(y + 21), class_="crm-sms-funnel-label")
        _el(svg, "text", text, x=right, y=_num(y + 21), text_anchor="end", font_weight="bold")
        previous = width
    return render(svg)


def hbars(
    ident: str,
    title: str,
    desc: str,
    bars: Sequence[Bar],
    empty: str = "—",
    frame: Frame = Frame(width=560),
) -> SafeString:
    """A bar per row, its length its ``share`` (0..1) of the track; the label on the left,
    the text on the right (the frame's height is the rows')."""
    frame = Frame(frame.width, int(frame.head) + 8 + 32 * max(1, len(bars)), frame.show_title)
    svg = _svg(ident, title, desc, frame)
    box = Box(170, frame.head - 6, frame.width - 170, frame.height)
    if not bars:
        return _empty(svg, box, empty)
    for i, bar in enumerate(bars):
        y = box.top + 32 * i
        _el(svg, "text", _clip(bar.label, 24), x=box.left - 8, y=_num(y + 17), text_anchor="end")
        _el(
            svg,
            "rect",
            x=box.left,
            y=_num(y + 4),
            width=_num(box.width),
            height=18,
            rx=3,
            class_="crm-sms-track",
            fill="#888888",
            fill_opacity="0.15",
        )
        share = min(1.0, max(0.0, bar.share))
        rect = _el(
            svg,
            "rect",
            x=box.left,
            y=_num(y + 4),
            width=_num(box.width * share),
            height=18,
            rx=3,
            **_paint(bar.key),
        )
        _el(rect, "title", f"{bar.label}: {bar.text}")
        _el(svg, "text", bar.text, x=box.right + 8, y=_num(y + 17))
    return render(svg)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
