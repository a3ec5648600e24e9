"""The numbers behind the charts: the last 30 days of messages (per day, status and provider),
the top failure reasons, and a campaign's delivery over time.

All of them are aggregates the database computes over indexed columns, at a million messages
too (``bench/dashboard.py``):

- per day, provider and status: one grouped query, an index-only scan of the
  (created_at, provider, status) index (``crm_sms_msg_daily``);
- failure reasons: one grouped query over the failed and undelivered messages of the period,
  found through their own partial index (``crm_sms_msg_failures``);
- a campaign over time: one grouped query over the campaign's rows (its (campaign, …)
  indexes): the minutes each was queued (``created_at``), sent (``sent_at``) and settled
  (``delivered_at``, else the ``updated_at`` of its final move). The status of every message
  at any minute follows from those times, so the chart needs no event log.

Days and minutes are the current time zone's. The dashboard's numbers are cached for
``CACHE_SECONDS``; a campaign's timeline is cached until its counts per status change.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from django.core.cache import cache
from django.db.models import Case, Count, F, When
from django.db.models.functions import Coalesce, TruncDate, TruncMinute
from django.utils import timezone
from django.utils.translation import gettext_lazy, pgettext_lazy

from .models import Message, MessageStatus

DAYS = 30
CACHE_SECONDS = 60
FAILURE_REASONS = 10
#: At most this many points on a timeline: longer campaigns get coarser steps.
MAX_POINTS = 120
#: Steps a timeline may use, in minutes (then whole days).
STEPS = (1, 2, 5, 10, 15, 30, 60, 120, 180, 360, 720, 1440)

S = MessageStatus
#: The charts' series, bottom to top, and the statuses each one counts.
SERIES = {
    "delivered": (S.DELIVERED,),
    "sent": (S.SENT,),
    "queued": (S.QUEUED, S.SENDING),
    "failed": (S.FAILED, S.UNDELIVERED),
    "cancelled": (S.CANCELLED,),
    "uncertain": (S.UNCERTAIN,),
}
SERIES_LABELS = {
    "delivered": pgettext_lazy("chart series", "delivered"),
    "sent": pgettext_lazy("chart series", "sent, no report yet"),
    "queued": pgettext_lazy("chart series", "waiting"),
    "failed": pgettext_lazy("chart series", "failed"),
    "cancelled": pgettext_lazy("chart series", "cancelled"),
    "uncertain": pgettext_lazy("chart series", "uncertain"),
}
#: Series drawn only when they have something.
OPTIONAL_SERIES = ("cancelled", "uncertain")
SERIES_OF = {status: key for key, statuses in SERIES.items() for status in statuses}
#: Handed to the provider (delivery rate's denominator).
ATTEMPTED = (S.SENT, S.DELIVERED, S.UNDELIVERED, S.FAILED, S.UNCERTAIN)
FAILED = (S.FAILED, S.UNDELIVERED)
#: Final statuses a message settles in, with the time it did.
SETTLED = (S.DELIVERED, S.UNDELIVERED, S.FAILED, S.CANCELLED, S.UNCERTAIN)

NO_ERROR_CODE = gettext_lazy("(no code)")


# --- the last 30 days ---------------------------------------------------------------------------


@dataclass
class ProviderRow:
    """A provider's messages of the period: all, delivered, failed, handed to it."""

    alias: str
    total: int = 0
    delivered: int = 0
    failed: int = 0
    attempted: int = 0

    @property
    def rate(self) -> float:
        """Delivered of those handed to the provider (0..1)."""
        return self.delivered / self.attempted if self.attempted else 0.0


@dataclass
class Period:
    """Messages created on each day of the period, per series; per provider; failure reasons."""

    days: list[date]
    series: dict[str, list[int]]
    providers: list[ProviderRow]
    reasons: list[tuple[str, str, int]] = field(default_factory=list)
    computed_at: datetime | None = None

    @property
    def total(self) -> int:
        return sum(sum(values) for values in self.series.values())

    def sum(self, key: str) -> int:
        return sum(self.series[key])


def period_start(days: int = DAYS, now: datetime | None = None) -> datetime:
    """Midnight, in the current time zone, of the first of the last ``days`` days (today too)."""
    today = timezone.localdate(now or timezone.now())
    first = today - timedelta(days=days - 1)
    return timezone.make_aware(datetime.combine(first, datetime.min.time()))


def last_days(days: int = DAYS, now: datetime | None = None) -> Period:
    """Counts per day and series, and per provider, of the messages created in the last
    ``days`` days: one grouped query (index-only on ``crm_sms_msg_daily``)."""
    since = period_start(days, now)
    tz = timezone.get_current_timezone()
    rows = (
        Message.objects.filter(created_at__gte=since)
        .order_by()
        .values_list(TruncDate("created_at", tzinfo=tz), "provider", "status")
        .annotate(n=Count("*"))
    )
    first = since.date()
    day_list = [first + timedelta(days=i) for i in range(days)]
    series = {key: [0] * days for key in SERIES}
    providers: dict[str, ProviderRow] = {}
    for day, provider, status, n in rows:
        index = (day - first).days
        if 0 <= index < days and status in SERIES_OF:
            series[SERIES_OF[status]][index] += n
        row = providers.setdefault(provider, ProviderRow(provider))
        row.total += n
        row.delivered += n if status == S.DELIVERED else 0
        row.failed += n if status in FAILED else 0
        row.attempted += n if status in ATTEMPTED else 0
    ordered = sorted(providers.values(), key=lambda r: (-r.total, r.alias))
    return Period(day_list, series, ordered)


def failure_reasons(since: datetime, limit: int = FAILURE_REASONS) -> list[tuple[str, str, int]]:
    """The most frequent (error code, error message, count) of the messages created since
    ``since`` that failed or were not delivered (the partial index ``crm_sms_msg_failures``)."""
    rows = (
        Message.objects.filter(status__in=FAILED, created_at__gte=since)
        .order_by()
        .values_list("error_code", "error_message")
        .annotate(n=Count("*"))
        .order_by("-n", "error_code", "error_message")[:limit]
    )
    return [(code, message, n) for code, message, n in rows]


def dashboard_period(days: int = DAYS, *, fresh: bool = False) -> Period:
    """``last_days`` with its failure reasons, cached for ``CACHE_SECONDS`` (per time zone and
    day count; ``fresh`` computes it anew)."""
    key = f"crm_sms:dashboard:{days}:{timezone.get_current_timezone_name()}"
    period = None if fresh else cache.get(key)
    if period is None:
        now = timezone.now()
        period = last_days(days, now)
        period.reasons = failure_reasons(period_start(days, now))
        period.computed_at = now
        cache.set(key, period, CACHE_SECONDS)
    return period


# --- a campaign over time -----------------------------------------------------------------------


@dataclass
class Timeline:
    """How many of a campaign's messages were in each series at each of ``times``."""

    times: list[datetime]
    step: timedelta
    series: dict[str, list[int]]

    def at_end(self) -> dict[str, int]:
        return {key: values[-1] if values else 0 for key, values in self.series.items()}


def _flows(campaign_id: int) -> list[tuple[datetime, str, int]]:
    """(minute, what happened, count) for the campaign: ``queued`` when created, ``sent`` when
    accepted, and ``<series>`` or ``<series>+sent`` (settled after being sent) when settled.
    One grouped query (one consistent snapshot of a running campaign): per status, the
    minutes of creation, acceptance and settling; a few rows per minute of the campaign."""
    tz = timezone.get_current_timezone()
    settled_at = Case(
        When(status=S.DELIVERED, then=Coalesce("delivered_at", "updated_at")),
        When(status__in=SETTLED, then=F("updated_at")),
        default=None,
    )
    rows = (
        Message.objects.filter(campaign_id=campaign_id)
        .order_by()
        .values_list(
            "status",
            TruncMinute("created_at", tzinfo=tz),
            TruncMinute("sent_at", tzinfo=tz),
            TruncMinute(settled_at, tzinfo=tz),
        )
        .annotate(n=Count("*"))
    )
    flows = []
    for status, created, sent, settled, n in rows:
        flows.append((created, "queued", n))
        # A message queued again after being sent starts over: it counts as waiting.
        was_sent = sent is not None and (status == S.SENT or status in SETTLED)
        if was_sent:
            flows.append((sent, "sent", n))
        if status in SETTLED and settled is not None:
            key = SERIES_OF[status]
            flows.append((settled, f"{key}+sent" if was_sent else key, n))
    return [f for f in flows if f[0] is not None]


def choose_step(span: timedelta, max_points: int = MAX_POINTS) -> timedelta:
    """The smallest step of ``STEPS`` (or a whole number of days) giving at most
    ``max_points`` steps over ``span``."""
    minutes = span.total_seconds() / 60
    for step in STEPS:
        if minutes / step <= max_points:
            return timedelta(minutes=step)
    days = -(-minutes // (1440 * max_points))
    return timedelta(days=days)


def timeline_from_flows(
    flows: Iterable[tuple[datetime, str, int]], end: datetime | None = None
) -> Timeline:
    """The state of every series at the end of each step, from the first flow's minute to
    ``end`` (default: the end of the last flow's minute). A message counts as waiting from
    its minute of creation, as sent from its minute of acceptance, and in its final series
    from the minute it settled."""
    flows = sorted(flows, key=lambda f: f[0])
    series: dict[str, list[int]] = {key: [] for key in SERIES}
    if not flows:
        return Timeline([], timedelta(minutes=1), series)
    start = flows[0][0]
    last = max(flows[-1][0] + timedelta(minutes=1), end or start)
    step = choose_step(last - start)
    points = max(1, -(-(last - start) // step))
    times = [start + step * i for i in range(1, points + 1)]  # the end of each step
    change = [defaultdict(int) for _ in times]  # what changed during each step
    for minute, what, n in flows:
        index = min(points - 1, int((minute - start) // step))
        key, _, source = what.partition("+")
        change[index][key] += n
        if key != "queued":  # it left the state it was in: waiting, or sent
            change[index][source or "queued"] -= n
    state = dict.fromkeys(SERIES, 0)
    for i in range(len(times)):
        for key, delta in change[i].items():
            state[key] += delta
        for key in SERIES:
            series[key].append(max(0, state[key]))
    return Timeline(times, step, series)


def campaign_timeline(
    campaign_id: int,
    counts: Mapping[str, int],
    active: bool,
    now: datetime | None = None,
    *,
    compute: bool = True,
) -> Timeline | None:
    """The campaign's timeline (to now while it is ``active``), cached until its ``counts``
    per status change (or for an hour); None when it is not cached and not to ``compute``."""
    signature = ",".join(f"{k}={v}" for k, v in sorted(counts.items()) if v)
    key = f"crm_sms:timeline:{campaign_id}:{timezone.get_current_timezone_name()}:{signature}"
    cached = cache.get(key)
    if cached is not None or not compute:
        return cached
    timeline = timeline_from_flows(_flows(campaign_id), (now or timezone.now()) if active else None)
    cache.set(key, timeline, 10 if active else 3600)
    return timeline
