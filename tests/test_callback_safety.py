"""Hostile and careless delivery reports (issue 10, point 6), through the real callback URL.

Values longer than their columns, text PostgreSQL refuses, a report the database refuses, bodies
nested too deeply or too large, and floods of unknown reports: none may give a 500, lose the good
reports of the same batch, or flood the log. Run with DATABASE_URL=postgres://… for the
PostgreSQL pass (the column limits and NUL checks are PostgreSQL's; SQLite stores anything).
"""

from __future__ import annotations

import json
import logging

import pytest
from django.urls import reverse

from crm_sms.models import Message, MessageEvent, MessageStatus
from crm_sms.signals import message_status_changed
from tests.fixtures_smsru import callback_form

S = MessageStatus
TOKEN = "callback-safety-token-0123456789"
SMSRU_API_ID = "SAFETY-API-ID"
RECEIPT = "id:1 sub:001 dlvrd:001 submit date:2311291159 done date:2311291200 stat:DELIVRD err:000"


@pytest.fixture
def providers(settings, tmp_path, db):
    settings.CRM_SMS = {
        "PROVIDERS": {
            "default": {
                "BACKEND": "crm_sms.backends.megafon.MegafonBackend",
                "OPTIONS": {"login": "u", "password": "p"},
            },
            "smsru": {
                "BACKEND": "crm_sms.backends.smsru.SmsRuBackend",
                "OPTIONS": {"api_id": SMSRU_API_ID},
            },
        },
        "CALLBACK_TOKEN": TOKEN,
        "REPORT_SPOOL_DIR": str(tmp_path / "spool"),
    }
    return settings


def url(provider: str = "default") -> str:
    return reverse("crm_sms:callback", kwargs={"provider": provider, "token": TOKEN})


def post_json(client, body, provider: str = "default"):
    if not isinstance(body, str | bytes):
        body = json.dumps(body)
    return client.post(url(provider), body, content_type="application/json")


def sent(n: int = 1, provider: str = "default", **fields) -> list[Message]:
    return [
        Message.objects.create(
            phone=f"+7900123{i:04d}", text="Hi", provider=provider, status=S.SENT, **fields
        )
        for i in range(n)
    ]


def delivered(msg_id: str, **extra) -> dict:
    return {"msg_id": msg_id, "status": "delivered", "short_message": RECEIPT, **extra}


def failed(msg_id: str, stat: str) -> dict:
    return {"msg_id": msg_id, "status": "delivery_failed", "short_message": f"stat:{stat} err:1"}


def refresh(*messages: Message) -> list[Message]:
    for message in messages:
        message.refresh_from_db()
    return list(messages)


# --- values longer than their columns ------------------------------------------------------


def test_long_stat_and_receipt_id_do_not_cost_the_good_report_of_the_batch(providers, client):
    """On PostgreSQL the long ``stat:`` gave DataError: 500, and the good report was lost."""
    good, long_stat, long_id = sent(3)
    response = post_json(
        client,
        [
            delivered(good.msg_id),
            failed(long_stat.msg_id, "X" * 80),
            delivered(long_id.msg_id, receipted_message_id="r" * 300),
        ],
    )
    assert response.status_code == 200
    assert response.content == b"OK"
    good, long_stat, long_id = refresh(good, long_stat, long_id)
    assert good.status == long_id.status == S.DELIVERED
    assert long_stat.status == S.UNDELIVERED
    assert long_stat.error_code == "X" * 50  # cut to the column
    assert long_id.provider_message_id == ""  # no id of ours is that long: not written
    assert MessageEvent.objects.count() == 3
    assert MessageEvent.objects.get(message=long_stat).error_code == "X" * 50


def test_a_long_unknown_status_is_cut_to_the_error_code_column(providers, client):
    (message,) = sent()
    body = {"msg_id": message.msg_id, "status": "delivered-" * 30, "short_message": "stat:"}
    assert post_json(client, body).status_code == 200  # MegaFon: an unknown status, undelivered
    (message,) = refresh(message)
    assert message.status == S.UNDELIVERED
    assert len(message.error_code) == 50


@pytest.mark.parametrize(
    "field, value",
    [
        ("x", "\u0000"),  # jsonb refuses \u0000
        ("x", "\ud800"),  # a lone surrogate
        ("x", float("nan")),  # json.loads takes NaN, jsonb does not
        ("short_message", "stat:DELIVRD\u0000 err:0"),
        ("receipted_message_id", "abc\u0000def"),  # a text column refuses NUL
    ],
)
def test_text_postgresql_cannot_store_is_cleaned(providers, client, field, value):
    (message,) = sent()
    response = post_json(client, json.dumps(delivered(message.msg_id, **{field: value})))
    assert response.status_code == 200
    (message,) = refresh(message)
    assert message.status == S.DELIVERED
    assert message.events.count() == 1


def test_nul_in_the_message_id_is_an_unknown_message_not_a_500(providers, client):
    (message,) = sent()
    response = post_json(client, [delivered(message.msg_id + "\u0000"), delivered("\u0000")])
    assert response.status_code == 200
    (message,) = refresh(message)
    assert message.status == S.DELIVERED  # the NUL is dropped: the id is ours


def test_smsru_form_with_nul_and_overlong_ids(providers, client):
    (message,) = sent(provider="smsru", provider_message_id="000123-1")
    entries = [
        "sms_status\n000123-1\n103\n1700000000",
        "sms_status\n" + "9" * 500 + "\n103\n1700000000",
        "sms_status\n000\u0000123-2\n103\n1700000000",
    ]
    response = client.post(url("smsru"), dict_of(callback_form(SMSRU_API_ID, entries)))
    assert response.status_code == 200
    assert response.content == b"100"
    (message,) = refresh(message)
    assert message.status == S.DELIVERED


def dict_of(fields: list[tuple[str, str]]) -> dict[str, list[str]]:
    form: dict[str, list[str]] = {}
    for key, value in fields:
        form.setdefault(key, []).append(value)
    return form


def test_clean_report_cuts_to_the_model_columns():
    from crm_sms.backends.base import DeliveryReport
    from crm_sms.reports import clean_report

    report = clean_report(
        DeliveryReport(
            "undelivered",
            msg_id="m" * 17,
            provider_message_id="p" * 100,
            error_code="e" * 51,
            error_message="t\u0000" * 5000,
            delivered_at="yesterday",  # type: ignore[arg-type]
            raw={"k\u0000": json.loads("[" * 25 + "]" * 25), 1: b"\xff"},
        )
    )
    assert (report.msg_id, report.provider_message_id) == ("", "p" * 100)
    assert report.error_code == "e" * 50
    assert report.error_message == "t" * 1000
    assert report.delivered_at is None
    assert set(report.raw) == {"k", "1"} and report.raw["1"] == "\ufffd"
    assert "nested deeper" in json.dumps(report.raw)


# --- one report the database refuses -------------------------------------------------------


@pytest.fixture
def refusing_receiver():
    """A ``message_status_changed`` receiver whose write the database refuses (a duplicate
    msg_id: IntegrityError on every database) for the messages in ``refuse``."""
    refuse: set[str] = set()

    def receiver(sender, message, **kwargs):
        if message.msg_id in refuse:
            Message.objects.create(phone="+79000000000", text="x", msg_id=message.msg_id)

    message_status_changed.connect(receiver, sender=Message, dispatch_uid="refusing")
    yield refuse
    message_status_changed.disconnect(sender=Message, dispatch_uid="refusing")


def test_a_report_the_database_refuses_costs_only_itself(
    providers, client, refusing_receiver, caplog
):
    """The batch used to roll back as a whole (500; the provider repeats it forever)."""
    a, bad, c = sent(3)
    refusing_receiver.add(bad.msg_id)
    with caplog.at_level(logging.WARNING, logger="crm_sms"):
        response = post_json(client, [delivered(m.msg_id) for m in (a, bad, c)])
    assert response.status_code == 200
    a, bad, c = refresh(a, bad, c)
    assert (a.status, bad.status, c.status) == (S.DELIVERED, S.SENT, S.DELIVERED)
    assert MessageEvent.objects.count() == 2
    [line] = [r.getMessage() for r in caplog.records if "refused by the database" in r.message]
    assert line.startswith("1 delivery report(s) from default") and bad.msg_id in line


def test_a_clean_batch_stays_one_transaction(providers, client, django_assert_max_num_queries):
    messages = sent(50)
    body = [delivered(m.msg_id) for m in messages]
    # savepoint/transaction + select + bulk update + bulk insert of events (+ session noise)
    with django_assert_max_num_queries(8):
        assert post_json(client, body).status_code == 200
    assert Message.objects.filter(status=S.DELIVERED).count() == 50


# --- bodies that cannot be parsed ----------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "[" * 990 + "]" * 990,  # 500 with a 2,900-line traceback before
        '{"msg_id": "m", "status": "delivered", "x": ' + "[" * 5000 + "]" * 5000 + "}",
        "[" * 200_000,
        '{"msg_id": 1' + "1" * 5000 + "}",  # an integer over Python's 4,300 digits
        b"\xff\xfe{",  # not UTF-8
        "{not json",
        "[]",
    ],
    ids=["nested-990", "nested-field", "open-200k", "long-int", "not-utf8", "not-json", "empty"],
)
def test_unparsable_body_is_a_short_400_without_a_traceback(providers, db, client, caplog, body):
    with caplog.at_level(logging.DEBUG):
        response = post_json(client, body)
    assert response.status_code == 400
    assert response.content.startswith(b"Malformed report")
    assert len(response.content) < 300
    assert all(record.exc_info is None for record in caplog.records)
    assert sum(len(r.getMessage().splitlines()) for r in caplog.records) <= 2


def test_nesting_a_parser_accepts_is_stored_cut(providers, client):
    (message,) = sent()
    body = json.dumps(delivered(message.msg_id, extra=json.loads("[" * 200 + "]" * 200)))
    assert post_json(client, body).status_code == 200
    event = refresh(message)[0].events.get()
    assert "nested deeper than 20 levels" in json.dumps(event.payload)


# --- body size -----------------------------------------------------------------------------


def test_body_over_the_limit_is_413(providers, db, client, caplog):
    providers.CRM_SMS = {**providers.CRM_SMS, "CALLBACK_MAX_BYTES": 1000}
    response = post_json(client, [delivered("m" * 16)] * 20)
    assert response.status_code == 413
    assert b"1000 bytes" in response.content
    assert "over 1000 bytes refused" in caplog.text


def test_body_up_to_the_limit_is_read_whatever_djangos_form_limit(providers, client, settings):
    """The endpoint's own limit (5 MB by default) replaces DATA_UPLOAD_MAX_MEMORY_SIZE."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    (message,) = sent()
    body = json.dumps([delivered(message.msg_id)] + [delivered(f"u{i:015d}") for i in range(500)])
    assert 1000 < len(body) < 5 * 1024 * 1024
    assert post_json(client, body).status_code == 200
    assert refresh(message)[0].status == S.DELIVERED


# --- floods of unknown reports -------------------------------------------------------------


def test_unknown_reports_are_summarised_in_one_log_line(providers, client, caplog):
    """55,000 unknown reports in one body logged 55,000 lines."""
    (message,) = sent()
    body = [delivered(f"unknown{i:09d}") for i in range(20_000)] + [delivered(message.msg_id)]
    with caplog.at_level(logging.INFO, logger="crm_sms"):
        response = post_json(client, body)
    assert response.status_code == 200
    assert refresh(message)[0].status == S.DELIVERED
    lines = [r.getMessage() for r in caplog.records if r.name == "crm_sms.reports"]
    assert len(lines) == 1
    assert lines[0].startswith("20000 delivery report(s) from default for unknown messages")
    assert "unknown000000000" in lines[0] and "unknown000019999" not in lines[0]


def test_stale_and_invalid_reports_are_summarised_too(providers, client, caplog):
    messages = sent(30)
    post_json(client, [delivered(m.msg_id) for m in messages])
    with caplog.at_level(logging.INFO, logger="crm_sms"):
        post_json(client, [failed(m.msg_id, "UNDELIV") for m in messages])
    lines = [r.getMessage() for r in caplog.records if r.name == "crm_sms.reports"]
    assert len(lines) == 1 and lines[0].startswith("30 delivery report(s) from default ignored")
