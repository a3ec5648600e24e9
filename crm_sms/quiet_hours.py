"""Quiet hours: a campaign's send window (e.g. 09:00-21:00) applied in each recipient's own
time zone, so nobody is woken at night (docs/compliance.md, "Quiet hours").

Each queued message carries its window as local times (``window_start``, ``window_end``), its
recipient's zone (``time_zone``) and two instants: ``next_attempt_at``, when it may go (the
window's next opening if it is closed), and ``window_end_at``, when that window closes. The
claim takes only messages with ``next_attempt_at <= now < window_end_at - CLAIM_MARGIN``
(``outbox.claiming``); a message whose window closed before it was sent is moved to the next
opening (``reschedule_closed``), and a retry that would fall into the night waits until the
morning (``clamp_retry``). Both instants are computed here (``next_slot``), never by the
database, so the claim stays one indexed query on every database.

A recipient's zone: ``Contact.time_zone`` (an IANA name), filled on save from a phone number
that ``phonenumbers`` places in one zone (fixed lines: +7 4012 Kaliningrad, +7 383
Novosibirsk, +7 4152 Kamchatka; a mobile number could be anywhere in its country, so it gives
none), or set from a region, city or "MSK+4" (``zone_for_region``); empty: the site's
``TIME_ZONE``.
"""

from __future__ import annotations

import re
import zoneinfo
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any

import phonenumbers
from django.core.exceptions import ValidationError
from django.utils import timezone
from django.utils.translation import gettext as _
from phonenumbers import timezone as phone_zones

from . import conf

#: A message is not claimed in its window's last minute (the worker sends a claimed batch
#: within seconds, never after the window closed): it waits for the next opening.
CLAIM_MARGIN = timedelta(seconds=60)

#: The shortest window accepted.
MIN_WINDOW = timedelta(minutes=15)

#: Rows per query when filling zones or rescheduling.
BATCH = 2000

# phonenumbers names one zone per UTC offset; where that zone is another country's, the
# country's own: Kaliningrad has no summer time, Bucharest has.
_ZONE_FIXES = {
    "RU": {"Europe/Bucharest": "Europe/Kaliningrad"},
    "BY": {"Europe/Moscow": "Europe/Minsk"},
}

_WINDOW = re.compile(r"^\s*(\d{1,2})[:.](\d{2})\s*[-–—]\s*(\d{1,2})[:.](\d{2})\s*$")


@dataclass(frozen=True)
class SendWindow:
    """Local times between which messages may be sent; ``end <= start`` spans midnight."""

    start: time
    end: time

    def __str__(self) -> str:
        return f"{self.start:%H:%M}-{self.end:%H:%M}"

    @property
    def overnight(self) -> bool:
        return self.end <= self.start

    def length(self) -> timedelta:
        minutes = (self.end.hour - self.start.hour) * 60 + self.end.minute - self.start.minute
        return timedelta(minutes=minutes % (24 * 60))


def parse_window(value: Any) -> SendWindow | None:
    """``"09:00-21:00"`` (or a SendWindow, or a (start, end) pair of times) as a SendWindow;
    None for an empty value (no quiet hours). ValidationError when it cannot be read."""
    if isinstance(value, str) and value.strip().lower() in ("", "off", "none", "-"):
        return None
    if value is None or isinstance(value, SendWindow):
        return value
    if isinstance(value, tuple | list):
        start, end = value
        if start is None and end is None:
            return None
        if start is None or end is None:
            raise _window_error(value)
        window = SendWindow(
            start.replace(second=0, microsecond=0), end.replace(second=0, microsecond=0)
        )
    else:
        match = _WINDOW.match(str(value))
        if not match:
            raise _window_error(value)
        h1, m1, h2, m2 = (int(g) for g in match.groups())
        if h1 > 23 or h2 > 24 or m1 > 59 or m2 > 59 or (h2 == 24 and m2):
            raise _window_error(value)
        window = SendWindow(time(h1, m1), time(h2 % 24, m2))
    if window.length() < MIN_WINDOW:
        raise ValidationError(
            _("The send window %(window)s is shorter than 15 minutes.") % {"window": window},
            code="window",
        )
    return window


def _window_error(value: Any) -> ValidationError:
    return ValidationError(
        _("“%(value)s” is not a send window: write it as 09:00-21:00.") % {"value": value},
        code="window",
    )


def default_window() -> SendWindow | None:
    """``CRM_SMS["SEND_WINDOW"]`` (env ``SMS_SEND_WINDOW``): the window new campaigns get."""
    return parse_window(conf.get_setting("SEND_WINDOW"))


# --- time zones -----------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _zone_names() -> dict[str, str]:
    """lower-case IANA name -> the name, and lower-case city -> the name."""
    names: dict[str, str] = {}
    for name in sorted(zoneinfo.available_timezones()):
        names[name.lower()] = name
        if "/" in name and not name.startswith(("Etc/", "SystemV/")):
            city = name.rsplit("/", 1)[1].replace("_", " ").lower()
            names.setdefault(city, name)
    return names


@lru_cache(maxsize=1)
def _valid_zones() -> frozenset[str]:
    return frozenset(_zone_names().values())


def site_zone_name() -> str:
    return timezone.get_default_timezone_name()


@lru_cache(maxsize=512)
def zone_info(name: str) -> zoneinfo.ZoneInfo:
    """The zone called ``name``, or the site's (``TIME_ZONE``) for "" or an unknown name."""
    if name and name in _valid_zones():
        return zoneinfo.ZoneInfo(name)
    return zoneinfo.ZoneInfo(site_zone_name())


def effective_zone(name: str | None) -> str:
    """The zone a message to a recipient with zone ``name`` is timed in: it, or the site's."""
    return name if name and name in _valid_zones() else site_zone_name()


def guess_time_zone(phone: Any) -> str:
    """The IANA zone of ``phone`` when ``phonenumbers`` places it in exactly one (fixed lines:
    "+74012…" Kaliningrad, "+7383…" Novosibirsk, "+74152…" Kamchatka); "" otherwise (a mobile
    number could be anywhere in its country, an invalid one anywhere)."""
    text = str(phone or "").strip()
    if not text:
        return ""
    try:
        number = phonenumbers.parse(
            text, None if text.startswith("+") else conf.get_setting("DEFAULT_REGION")
        )
    except phonenumbers.NumberParseException:
        return ""
    zones = [
        z for z in phone_zones.time_zones_for_number(number) if z != phone_zones.UNKNOWN_TIMEZONE
    ]
    if len(zones) != 1:
        return ""
    region = phonenumbers.region_code_for_number(number) or ""
    zone = _ZONE_FIXES.get(region, {}).get(zones[0], zones[0])
    return zone if zone in _valid_zones() else ""


#: MSK±N, the way Russian time zones are usually given, -> a zone with that offset.
MSK_ZONES = {
    -1: "Europe/Kaliningrad",
    0: "Europe/Moscow",
    1: "Europe/Samara",
    2: "Asia/Yekaterinburg",
    3: "Asia/Omsk",
    4: "Asia/Novosibirsk",
    5: "Asia/Irkutsk",
    6: "Asia/Yakutsk",
    7: "Asia/Vladivostok",
    8: "Asia/Magadan",
    9: "Asia/Kamchatka",
}

#: Russian names of the cities and regions the IANA zones of Russia are named after.
RUSSIAN_PLACES = {
    "калининград": "Europe/Kaliningrad",
    "калининградская область": "Europe/Kaliningrad",
    "москва": "Europe/Moscow",
    "московская область": "Europe/Moscow",
    "санкт-петербург": "Europe/Moscow",
    "петербург": "Europe/Moscow",
    "киров": "Europe/Kirov",
    "волгоград": "Europe/Volgograd",
    "самара": "Europe/Samara",
    "ульяновск": "Europe/Ulyanovsk",
    "саратов": "Europe/Saratov",
    "астрахань": "Europe/Astrakhan",
    "екатеринбург": "Asia/Yekaterinburg",
    "омск": "Asia/Omsk",
    "новосибирск": "Asia/Novosibirsk",
    "новосибирская область": "Asia/Novosibirsk",
    "барнаул": "Asia/Barnaul",
    "томск": "Asia/Tomsk",
    "новокузнецк": "Asia/Novokuznetsk",
    "красноярск": "Asia/Krasnoyarsk",
    "иркутск": "Asia/Irkutsk",
    "чита": "Asia/Chita",
    "якутск": "Asia/Yakutsk",
    "владивосток": "Asia/Vladivostok",
    "магадан": "Asia/Magadan",
    "южно-сахалинск": "Asia/Sakhalin",
    "сахалин": "Asia/Sakhalin",
    "петропавловск-камчатский": "Asia/Kamchatka",
    "камчатка": "Asia/Kamchatka",
    "камчатский край": "Asia/Kamchatka",
    "анадырь": "Asia/Anadyr",
    "чукотка": "Asia/Anadyr",
}

_OFFSET = re.compile(r"^(msk|мск|utc|gmt)\s*(?:([+-−])\s*(\d{1,2})(?::?00)?)?$")


def zone_for_region(value: Any) -> str:
    """The IANA zone a person wrote as ``value``: an IANA name ("Asia/Novosibirsk"), "MSK+4"
    or "МСК+4", "UTC+7", a city an IANA zone is named after ("Novosibirsk", "Новосибирск"),
    or a region of Russia whose zone is named after its capital; "" when unknown."""
    text = " ".join(str(value or "").split()).lower().replace("ё", "е")
    if not text:
        return ""
    names = _zone_names()
    if text in names:
        return names[text]
    text = re.sub(r"^(г\.|город)\s*", "", text)
    if text in RUSSIAN_PLACES:
        return RUSSIAN_PLACES[text]
    match = _OFFSET.match(text)
    if not match:
        return ""
    base, sign, hours = match.groups()
    offset = int(hours or 0) * (-1 if sign in ("-", "−") else 1)
    if base in ("msk", "мск"):
        return MSK_ZONES.get(offset, "")
    # Etc/GMT zones count the other way: UTC+7 is Etc/GMT-7.
    return "Etc/UTC" if offset == 0 else names.get(f"etc/gmt{-offset:+d}", "")


def fill_time_zones(contacts: Any = None) -> int:
    """Set ``time_zone`` from the phone on the Contacts (of ``contacts``, a queryset; all by
    default) that have none, where the phone gives one (``guess_time_zone``): for rows written
    in bulk (the import). Returns how many were filled."""
    from .models import Contact

    rows = Contact.objects.all() if contacts is None else contacts
    filled, last = 0, 0
    while True:
        batch = list(
            rows.filter(time_zone="", pk__gt=last).order_by("pk").values_list("pk", "phone")[:BATCH]
        )
        if not batch:
            return filled
        last = batch[-1][0]
        by_zone: dict[str, list[int]] = {}
        for pk, phone in batch:
            zone = guess_time_zone(phone)
            if zone:
                by_zone.setdefault(zone, []).append(pk)
        for zone, pks in by_zone.items():
            filled += Contact.objects.filter(pk__in=pks, time_zone="").update(time_zone=zone)


# --- the window's instants ------------------------------------------------------------------


def _instant(day: date, at: time, zone: zoneinfo.ZoneInfo) -> datetime:
    return datetime.combine(day, at, tzinfo=zone).astimezone(UTC)


def next_slot(
    window: SendWindow, zone: str, at: datetime, margin: timedelta = CLAIM_MARGIN
) -> tuple[datetime, datetime]:
    """(when a message may go, when that window closes), both in UTC: ``at`` itself when the
    window is open in ``zone`` then for longer than ``margin``, else the next opening."""
    tz = zone_info(zone)
    at = at.astimezone(UTC)
    today = at.astimezone(tz).date()
    for offset in (-1, 0, 1, 2):
        day = today + timedelta(days=offset)
        opening = _instant(day, window.start, tz)
        closing = _instant(day + timedelta(days=window.overnight), window.end, tz)
        start = max(opening, at)
        if closing - start > margin:
            return start, closing
    raise AssertionError(f"no opening of {window} in {zone} after {at}")  # pragma: no cover


def schedule(
    window: SendWindow | None, zone: str, due: datetime
) -> tuple[datetime, datetime | None]:
    """(next_attempt_at, window_end_at) of a message due at ``due``: (due, None) without a
    window."""
    if window is None:
        return due, None
    return next_slot(window, zone, due)


def message_window(message: Any) -> SendWindow | None:
    """The send window a Message carries (None: none)."""
    if message.window_start is None or message.window_end is None:
        return None
    return SendWindow(message.window_start, message.window_end)


def clamp_retry(message: Any, values: dict[str, Any]) -> None:
    """A message going back to ``queued`` (``values`` hold its ``next_attempt_at``): moved
    to its window's next opening when that instant falls outside it, with ``window_end_at``
    (a retry scheduled into the night waits until the morning)."""
    window = message_window(message)
    if window is None or values.get("next_attempt_at") is None:
        return
    at, ends = next_slot(window, message.time_zone, values["next_attempt_at"])
    values["next_attempt_at"], values["window_end_at"] = at, ends


def reschedule_closed(now: datetime | None = None, limit: int = BATCH) -> int:
    """Queued messages (standalone, or of running campaigns) whose window closed, or closes
    within CLAIM_MARGIN, before they were sent (a backlog, a resumed campaign, a message an
    operator queued again) get their window's next opening as ``next_attempt_at`` and its
    closing as ``window_end_at``. The status stays ``queued``; one indexed query finds them
    (``crm_sms_msg_window``). Returns how many were moved."""
    from django.db import connection, transaction
    from django.db.models import Q

    from .bulk import update_rows
    from .models import Campaign, CampaignStatus, Message, MessageStatus

    now = now or timezone.now()
    running = Campaign.objects.filter(status=CampaignStatus.RUNNING).values("pk")
    rows = (
        Message.objects.filter(status=MessageStatus.QUEUED, window_end_at__lte=now + CLAIM_MARGIN)
        .filter(Q(campaign__isnull=True) | Q(campaign_id__in=running))
        .only("pk", "next_attempt_at", "window_end_at", "window_start", "window_end", "time_zone")
        .order_by("window_end_at", "pk")
    )
    with transaction.atomic():
        if connection.features.has_select_for_update_skip_locked:
            rows = rows.select_for_update(skip_locked=True, of=("self",))
        changes = {message.pk: _reopened(message, now) for message in rows[:limit]}
        update_rows(Message, changes)
    return len(changes)


def _reopened(message: Any, now: datetime) -> dict[str, Any]:
    window = message_window(message)
    if window is None:
        return {"window_end_at": None}
    after = max(now, message.next_attempt_at, message.window_end_at)
    at, ends = next_slot(window, message.time_zone, after)
    return {"next_attempt_at": at, "window_end_at": ends}


# --- what the preview says ------------------------------------------------------------------


@dataclass
class WaitForecast:
    """How many of a campaign's recipients wait for their window to open, and when the first
    and the last of them open (UTC; the preview shows them in the site's zone). One window
    and due time per forecast; each zone's opening is computed once."""

    waiting: int = 0
    first_opening: datetime | None = None
    last_opening: datetime | None = None
    openings: dict[str, datetime] = field(default_factory=dict, repr=False)

    def add(self, window: SendWindow | None, zone: str, due: datetime, count: int = 1) -> None:
        if window is None or not count:
            return
        at = self.openings.get(zone)
        if at is None:
            at = self.openings[zone] = next_slot(window, effective_zone(zone), due)[0]
        if at <= due:
            return
        self.waiting += count
        if self.first_opening is None or at < self.first_opening:
            self.first_opening = at
        if self.last_opening is None or at > self.last_opening:
            self.last_opening = at
