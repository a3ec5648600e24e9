"""Quiet hours (issue 13.2): a campaign's send window applied in each recipient's time zone,
at queue time, in the claim, for retries and for messages whose window closed unsent. The
time is always the injected ``clock``, never the wall clock."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

import pytest
from django.core.exceptions import ValidationError

from crm_sms import outbox
from crm_sms.backends.base import SendResult, SendStatus
from crm_sms.backends.locmem import LocmemBackend
from crm_sms.models import Contact, Message, MessageStatus
from crm_sms.quiet_hours import (
    SendWindow,
    fill_time_zones,
    guess_time_zone,
    next_slot,
    parse_window,
    reschedule_closed,
    zone_for_region,
)

MSK = ZoneInfo("Europe/Moscow")

KALININGRAD = "+74012123456"  # UTC+2
MOSCOW = "+74951234567"  # UTC+3
NOVOSIBIRSK = "+73832123456"  # UTC+7
KAMCHATKA = "+74152123456"  # UTC+12
MOBILE = "+79001234212"  # anywhere in Russia: no zone


def msk(day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    """A Moscow time in March 2026, as the UTC instant the clock is set to."""
    return datetime(2026, 3, day, hour, minute, second, tzinfo=MSK).astimezone(UTC)


@pytest.fixture
def site(settings, locmem_provider, db):
    settings.TIME_ZONE = "Europe/Moscow"
    return locmem_provider


@pytest.fixture
def russia(db):
    """One contact in each of four of Russia's eleven zones, zones filled on save."""
    return {
        name: Contact.objects.create(first_name=name, phone=phone)
        for name, phone in (
            ("Kaliningrad", KALININGRAD),
            ("Moscow", MOSCOW),
            ("Novosibirsk", NOVOSIBIRSK),
            ("Kamchatka", KAMCHATKA),
        )
    }


def sent_phones(locmem) -> set[str]:
    return {sms.to for sms in locmem}


# --- the window and the zones ------------------------------------------------------------------


def test_windows_are_read_from_text_times_or_nothing():
    assert parse_window("09:00-21:00") == SendWindow(time(9), time(21))
    assert parse_window(" 9.30 – 20:45 ") == SendWindow(time(9, 30), time(20, 45))
    assert parse_window("22:00-06:00").overnight
    assert parse_window((time(8), time(20))) == SendWindow(time(8), time(20))
    assert str(parse_window("8:00-24:00")) == "08:00-00:00"
    for empty in ("", None, "off", "none", (None, None)):
        assert parse_window(empty) is None
    for bad in ("9-21", "25:00-26:00", "09:00-09:10", "nine to five", (time(9), None)):
        with pytest.raises(ValidationError):
            parse_window(bad)


def test_a_fixed_line_gives_its_zone_a_mobile_number_none():
    assert guess_time_zone(KALININGRAD) == "Europe/Kaliningrad"  # phonenumbers says Bucharest
    assert guess_time_zone(MOSCOW) == "Europe/Moscow"
    assert guess_time_zone(NOVOSIBIRSK) == "Asia/Novosibirsk"
    assert guess_time_zone(KAMCHATKA) == "Asia/Kamchatka"
    assert guess_time_zone("8 (383) 212-34-56") == "Asia/Novosibirsk"
    assert guess_time_zone("+12125551234") == "America/New_York"
    assert guess_time_zone(MOBILE) == ""
    assert guess_time_zone("not a phone") == guess_time_zone("") == ""


def test_regions_cities_and_offsets_people_write():
    assert zone_for_region("Asia/Novosibirsk") == "Asia/Novosibirsk"
    assert zone_for_region("asia/novosibirsk") == "Asia/Novosibirsk"
    assert zone_for_region("Novosibirsk") == "Asia/Novosibirsk"
    assert zone_for_region("г. Новосибирск") == "Asia/Novosibirsk"
    assert zone_for_region("Калининградская область") == "Europe/Kaliningrad"
    assert zone_for_region("Петропавловск-Камчатский") == "Asia/Kamchatka"
    assert zone_for_region("МСК+9") == "Asia/Kamchatka"
    assert zone_for_region("MSK-1") == "Europe/Kaliningrad"
    assert zone_for_region("MSK") == "Europe/Moscow"
    assert zone_for_region("UTC+7") == "Etc/GMT-7"
    assert zone_for_region("Atlantis") == zone_for_region("") == zone_for_region("МСК+15") == ""


def test_contacts_get_their_zone_on_save_and_keep_one_set_by_hand(db):
    fixed = Contact.objects.create(phone=NOVOSIBIRSK)
    mobile = Contact.objects.create(phone=MOBILE)
    chosen = Contact.objects.create(phone="+79001234213", time_zone="Asia/Kamchatka")
    assert (fixed.time_zone, mobile.time_zone, chosen.time_zone) == (
        "Asia/Novosibirsk",
        "",
        "Asia/Kamchatka",
    )
    Contact.objects.filter(pk=fixed.pk).update(time_zone="")  # a bulk write left it empty
    assert fill_time_zones() == 1
    fixed.refresh_from_db()
    assert fixed.time_zone == "Asia/Novosibirsk"


def test_next_slot_in_local_time_across_midnight_and_summer_time():
    day = SendWindow(time(9), time(21))
    at = msk(2, 7, 30)
    assert next_slot(day, "Europe/Moscow", at) == (msk(2, 9), msk(2, 21))
    assert next_slot(day, "Asia/Kamchatka", at) == (at, msk(2, 12))  # 16:30 there
    assert next_slot(day, "Asia/Kamchatka", msk(2, 12, 30)) == (msk(3, 0), msk(3, 12))
    night = SendWindow(time(22), time(6))
    assert next_slot(night, "Europe/Moscow", msk(2, 23)) == (msk(2, 23), msk(3, 6))
    assert next_slot(night, "Europe/Moscow", msk(3, 5)) == (msk(3, 5), msk(3, 6))
    assert next_slot(night, "Europe/Moscow", msk(3, 7)) == (msk(3, 22), msk(4, 6))
    berlin = ZoneInfo("Europe/Berlin")  # clocks go forward on 29 March 2026
    opening, closing = next_slot(day, "Europe/Berlin", datetime(2026, 3, 29, 6, tzinfo=UTC))
    assert opening.astimezone(berlin).hour == 9 and opening.astimezone(berlin).utcoffset() == (
        timedelta(hours=2)
    )
    assert closing.astimezone(berlin).hour == 21


# --- one campaign across Russia -----------------------------------------------------------------


def test_russia_one_campaign_each_recipient_in_their_own_morning(site, russia, clock):
    locmem = site
    clock.set(msk(2, 7, 30))  # 06:30 Kaliningrad, 11:30 Novosibirsk, 16:30 Kamchatka
    everyone = Contact.objects.all()
    preview = outbox.preview_campaign(everyone, "Скидка 15%", window="09:00-21:00")
    templated = outbox.preview_campaign(everyone, "{{ first_name }}: -15%", window="09:00-21:00")
    for p in (preview, templated):
        assert (p.recipients, p.waiting, p.window) == (4, 2, "09:00-21:00")
        assert p.first_opening == msk(2, 9) and p.first_opening.tzinfo.key == "Europe/Moscow"
        assert p.last_opening == msk(2, 10)  # 09:00 in Kaliningrad

    campaign = outbox.send_campaign(everyone, "Скидка 15%", window="09:00-21:00")
    assert (campaign.window_start, campaign.window_end) == (time(9), time(21))
    due = dict(campaign.messages.values_list("phone", "next_attempt_at"))
    assert due == {
        NOVOSIBIRSK: msk(2, 7, 30),
        KAMCHATKA: msk(2, 7, 30),
        MOSCOW: msk(2, 9),
        KALININGRAD: msk(2, 10),
    }
    closes = dict(campaign.messages.values_list("time_zone", "window_end_at"))
    assert closes["Asia/Kamchatka"] == msk(2, 12) and closes["Europe/Kaliningrad"] == msk(2, 22)

    outbox.dispatch_due(concurrency=2)
    assert sent_phones(locmem) == {NOVOSIBIRSK, KAMCHATKA}
    clock.set(msk(2, 8, 59))
    outbox.dispatch_due(concurrency=2)
    assert len(locmem) == 2
    clock.set(msk(2, 9))
    outbox.dispatch_due(concurrency=2)
    assert sent_phones(locmem) == {NOVOSIBIRSK, KAMCHATKA, MOSCOW}
    clock.set(msk(2, 10))
    outbox.dispatch_due(concurrency=2)
    assert len(locmem) == 4 and sent_phones(locmem) == {m.phone for m in russia.values()}
    campaign.refresh_from_db()
    assert campaign.status == "completed"


def test_a_retry_scheduled_into_the_night_waits_until_morning(
    site, russia, clock, monkeypatch, settings
):
    settings.CRM_SMS = {**settings.CRM_SMS, "RETRY_BACKOFF": 1800, "RETRY_BACKOFF_MAX": 1800}
    clock.set(msk(2, 11, 50))  # 20:50 in Kamchatka: ten minutes of its window left
    calls = []
    original = LocmemBackend.send

    def busy_once(self, sms):
        calls.append(sms.to)
        if len(calls) == 1:
            return SendResult(SendStatus.RETRY, error_code="busy")
        return original(self, sms)

    monkeypatch.setattr(LocmemBackend, "send", busy_once)
    outbox.send_campaign(
        Contact.objects.filter(pk=russia["Kamchatka"].pk), "Hi", window="09:00-21:00"
    )
    outbox.dispatch_due(concurrency=1)
    message = Message.objects.get()
    # The backoff (24-30 minutes) ends after 21:00 there: 09:00 local next day instead.
    assert message.status == MessageStatus.QUEUED and message.attempts == 1
    assert message.next_attempt_at == msk(3, 0)  # 09:00 Kamchatka = midnight in Moscow
    assert message.window_end_at == msk(3, 12)
    clock.set(msk(2, 12, 30))
    outbox.dispatch_due(concurrency=1)
    assert len(calls) == 1
    clock.set(msk(3, 0, 0))
    outbox.dispatch_due(concurrency=1)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT and len(calls) == 2 and len(site) == 1


def test_a_message_whose_window_closed_unsent_goes_next_morning(site, russia, clock):
    clock.set(msk(2, 20, 30))
    campaign = outbox.send_campaign(
        Contact.objects.filter(pk=russia["Moscow"].pk), "Hi", window="09:00-21:00"
    )
    clock.set(msk(2, 21, 10))  # no worker ran in time
    assert outbox.dispatch_due()["sent"] == 0
    message = campaign.messages.get()
    assert (message.next_attempt_at, message.window_end_at) == (msk(3, 9), msk(3, 21))
    clock.set(msk(3, 8, 59))
    assert outbox.dispatch_due()["sent"] == 0
    clock.set(msk(3, 9))
    assert outbox.dispatch_due()["sent"] == 1


def test_nothing_is_claimed_in_the_last_minute_of_a_window(site, russia, clock):
    clock.set(msk(2, 20, 58))
    outbox.send_campaign(Contact.objects.filter(pk=russia["Moscow"].pk), "Hi", window="09:00-21:00")
    clock.set(msk(2, 20, 59, 30))
    assert outbox.dispatch_due()["sent"] == 0
    assert Message.objects.get().next_attempt_at == msk(3, 9)


def test_a_paused_campaign_resumed_next_day_waits_for_the_window(site, russia, clock):
    clock.set(msk(2, 20))
    campaign = outbox.send_campaign(
        Contact.objects.filter(pk=russia["Moscow"].pk), "Hi", window="09:00-21:00"
    )
    outbox.pause_campaign(campaign)
    clock.set(msk(3, 7))
    outbox.resume_campaign(campaign)
    assert outbox.dispatch_due()["sent"] == 0
    assert Message.objects.get().next_attempt_at == msk(3, 9)
    clock.set(msk(3, 9, 0, 1))
    assert outbox.dispatch_due()["sent"] == 1


def test_a_scheduled_campaign_waits_for_the_window_after_its_start(site, russia, clock):
    clock.set(msk(2, 12))
    everyone = Contact.objects.all()
    at_night = msk(3, 3)
    preview = outbox.preview_campaign(everyone, "Hi", window="09:00-21:00", scheduled_at=at_night)
    assert preview.waiting == 3  # Kamchatka: 12:00 there
    assert (preview.first_opening, preview.last_opening) == (msk(3, 5), msk(3, 10))
    campaign = outbox.send_campaign(everyone, "Hi", window="09:00-21:00", scheduled_at=at_night)
    due = dict(campaign.messages.values_list("phone", "next_attempt_at"))
    assert due[KAMCHATKA] == at_night and due[NOVOSIBIRSK] == msk(3, 5)


def test_the_default_window_comes_from_the_settings(site, russia, clock, settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "SEND_WINDOW": "10:00-20:00"}
    clock.set(msk(2, 9))
    campaign = outbox.send_campaign(Contact.objects.filter(pk=russia["Moscow"].pk), "Hi")
    assert (campaign.window_start, campaign.window_end) == (time(10), time(20))
    assert campaign.messages.get().next_attempt_at == msk(2, 10)
    anytime = outbox.send_campaign(
        Contact.objects.filter(pk=russia["Moscow"].pk), "Hi", window=None
    )
    assert anytime.window_start is None
    assert anytime.messages.get().window_end_at is None
    assert outbox.dispatch_due()["sent"] == 1  # the one without a window, at 09:00


def test_a_contact_without_a_zone_is_timed_in_the_sites(site, clock, settings):
    settings.TIME_ZONE = "Asia/Vladivostok"  # UTC+10
    Contact.objects.create(phone=MOBILE)
    clock.set(msk(2, 1))  # 08:00 in Vladivostok
    preview = outbox.preview_campaign(Contact.objects.all(), "Hi", window="09:00-21:00")
    assert preview.waiting == 1 and preview.first_opening == msk(2, 2)
    assert preview.first_opening.tzinfo.key == "Asia/Vladivostok"
    message = outbox.send_campaign(Contact.objects.all(), "Hi", window="09:00-21:00").messages.get()
    assert message.time_zone == "Asia/Vladivostok" and message.next_attempt_at == msk(2, 2)


def test_rows_of_another_model_are_timed_by_their_phones(site, clock):
    clock.set(msk(2, 7, 30))
    for phone in (MOSCOW, KAMCHATKA, MOBILE):
        Message.objects.create(phone=phone, text="x", provider="other", status="sent")
    rows = Message.objects.all()
    preview = outbox.preview_campaign(rows, "Hi", window="09:00-21:00")
    assert (preview.recipients, preview.waiting) == (3, 2)  # Moscow, and the mobile (site's)


def test_send_sms_is_not_held_for_quiet_hours(site, russia, clock, settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "SEND_WINDOW": "09:00-21:00"}
    clock.set(msk(2, 3))
    message = outbox.send_sms(MOSCOW, "Your code is 1234", now=True)
    assert message.status == MessageStatus.SENT


def test_the_window_setting_is_read_from_the_environment():
    from crm_sms.conf import settings_from_env

    assert settings_from_env({"SMS_SEND_WINDOW": "08:00-22:00"})["SEND_WINDOW"] == "08:00-22:00"


def test_reschedule_closed_leaves_open_and_windowless_messages_alone(site, russia, clock):
    clock.set(msk(2, 11))  # 20:00 in Kamchatka
    outbox.send_campaign(Contact.objects.all(), "Hi", window="09:00-21:00")
    outbox.send_campaign(Contact.objects.all(), "Hi", window=None)
    assert reschedule_closed() == 0
    clock.set(msk(2, 12, 30))  # Kamchatka's window closed at 12:00 Moscow time
    assert reschedule_closed() == 1
    assert reschedule_closed() == 0
