"""Fixtures for consent and quiet hours (``crm_sms.consent``, ``crm_sms.quiet_hours``).

The shipped default send window (``SEND_WINDOW`` "09:00-21:00") would make every campaign
test depend on the hour it runs at: tests get no window unless they ask for one (the
``window=`` argument, or ``CRM_SMS["SEND_WINDOW"]``), and quiet-hours tests set the time with
``clock`` (never the wall clock).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest


@pytest.fixture(autouse=True)
def _no_send_window_by_default(monkeypatch):
    from crm_sms import conf

    monkeypatch.setitem(conf.DEFAULTS, "SEND_WINDOW", "")


class Clock:
    """``django.utils.timezone.now`` under a test's control."""

    def __init__(self, now: datetime):
        self.now = now

    def __call__(self) -> datetime:
        return self.now

    def set(self, now: datetime) -> datetime:
        self.now = now
        return now

    def advance(self, **delta: float) -> datetime:
        self.now += timedelta(**delta)
        return self.now


@pytest.fixture
def clock(monkeypatch):
    """A clock set to 2026-03-02 12:00 UTC (a Monday); ``clock.set(...)``/``advance(...)``."""
    from django.utils import timezone

    fake = Clock(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
    monkeypatch.setattr(timezone, "now", fake)
    return fake
