"""SmsRuBackend against a loopback fake of SMS.RU: batching, answer classification, polling."""

from __future__ import annotations

import socket
import types
from urllib.parse import parse_qsl

import pytest

from crm_sms.backends import get_backend
from crm_sms.backends.base import OutgoingSMS, SendStatus
from crm_sms.backends.smsru import (
    SEND_ERRORS,
    STATUS_CODES,
    SmsRuBackend,
    classify_send_error,
    status_report,
)
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ConfigurationError, ProviderError
from crm_sms.models import MessageStatus
from tests.fixtures_smsru import API_ID


def sms(i: int, text: str = "Hello", sender: str = "") -> OutgoingSMS:
    return OutgoingSMS(to=f"+7900{i:07d}", text=text, sender=sender, msg_id=f"m{i:015d}")


def test_url_configures_api_id_sender_and_plain_http():
    config = parse_sms_url("smsru+http://KEY-1@127.0.0.1:8080/?sender=Shop")
    assert config["BACKEND"] == "crm_sms.backends.smsru.SmsRuBackend"
    backend = SmsRuBackend("x", config["OPTIONS"])
    assert (backend.api_id, backend.default_sender) == ("KEY-1", "Shop")
    assert backend.base_url == "http://127.0.0.1:8080"
    assert SmsRuBackend("x", parse_sms_url("smsru://KEY@sms.ru/")["OPTIONS"]).base_url == (
        "https://sms.ru"
    )


def test_missing_api_id_is_a_configuration_error_and_a_check():
    backend = SmsRuBackend("promo", {})
    with pytest.raises(ConfigurationError, match="SMS_URL_PROMO"):
        backend.send(sms(1))
    assert [p.id for p in backend.check()] == ["crm_sms.E010"]


def test_send_many_accepts_a_batch_in_one_request(smsru_provider):
    backend = get_backend()
    assert backend.max_batch_size == 100
    batch = [sms(i) for i in range(100)]
    results = backend.send_many(batch)
    assert len(smsru_provider.requests) == 1
    path, fields = smsru_provider.requests[0]
    form = dict(fields)
    assert path == "/sms/send"
    assert (form["api_id"], form["json"], form["from"], form["msg"]) == (
        API_ID,
        "1",
        "Test",
        "Hello",
    )
    assert form["to"].split(",") == [s.to.lstrip("+") for s in batch]
    assert all(r.status is SendStatus.ACCEPTED for r in results)
    ids = [r.provider_message_id for r in results]
    assert len(set(ids)) == 100
    # Results are in the batch's order: each id belongs to that message's number.
    assert [smsru_provider.messages[i]["phone"] for i in ids] == [s.to[1:] for s in batch]


def test_more_than_100_are_split_and_different_texts_use_multi(smsru_provider):
    batch = [sms(i, text=f"Hi {i}") for i in range(150)]
    results = get_backend().send_many(batch)
    assert [len(dict(f).get("to", "").split(",")) for _, f in smsru_provider.requests] == [1, 1]
    sizes = [sum(k.startswith("multi[") for k, _ in f) for _, f in smsru_provider.requests]
    assert sizes == [100, 50]
    assert all(r.status is SendStatus.ACCEPTED for r in results)
    assert smsru_provider.messages[results[120].provider_message_id]["text"] == "Hi 120"


def test_same_number_twice_and_two_senders_go_in_separate_requests(smsru_provider):
    batch = [sms(1), sms(1), sms(2, sender="Other")]
    results = get_backend().send_many(batch)
    assert len(smsru_provider.requests) == 3
    assert [dict(f).get("from") for _, f in smsru_provider.requests] == ["Test", "Test", "Other"]
    assert len({r.provider_message_id for r in results}) == 3


def test_per_number_errors_are_mapped_per_message(smsru_provider):
    smsru_provider.number_errors = {"79000000001": 207, "79000000002": 209, "79000000003": 231}
    results = get_backend().send_many([sms(0), sms(1), sms(2), sms(3)])
    assert [r.status for r in results] == [
        SendStatus.ACCEPTED,
        SendStatus.REJECTED,
        SendStatus.REJECTED,
        SendStatus.RETRY,
    ]
    assert (results[1].error_code, results[2].error_code) == ("207", "209")


@pytest.mark.parametrize(
    "code,status",
    [
        (200, SendStatus.PROVIDER_ERROR),
        (201, SendStatus.PROVIDER_ERROR),
        (220, SendStatus.RETRY),
        (301, SendStatus.PROVIDER_ERROR),
    ],
)
def test_request_wide_errors_apply_to_every_message(smsru_provider, code, status):
    smsru_provider.request_error = code
    results = get_backend().send_many([sms(1), sms(2)])
    assert [(r.status, r.error_code) for r in results] == [(status, str(code))] * 2
    assert results[0].error_message


def test_wrong_api_id_pauses_not_fails(settings, smsru_fake):
    settings.CRM_SMS = {
        "PROVIDERS": {"default": parse_sms_url(smsru_fake.sms_url().replace(API_ID, "WRONG"))}
    }
    result = get_backend().send(sms(1))
    assert result.status is SendStatus.PROVIDER_ERROR and result.error_code == "200"
    assert "WRONG" not in str(result.raw) and "WRONG" not in result.error_message


def test_http_5xx_is_retry_and_4xx_is_provider_error(smsru_provider):
    smsru_provider.http_status = 503
    assert get_backend().send(sms(1)).status is SendStatus.RETRY
    smsru_provider.http_status = 403
    result = get_backend().send(sms(1))
    assert (result.status, result.error_code) == (SendStatus.PROVIDER_ERROR, "http_403")


def test_connection_refused_is_retry(settings):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed once the block ends: nobody listens
    settings.CRM_SMS = {
        "PROVIDERS": {"default": parse_sms_url(f"smsru+http://K@127.0.0.1:{port}/")}
    }
    results = get_backend().send_many([sms(1), sms(2)])
    assert [(r.status, r.error_code) for r in results] == [(SendStatus.RETRY, "network")] * 2


def test_timeout_is_retry(settings):
    # A listening socket that never answers.
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    try:
        url = f"smsru+http://K@127.0.0.1:{listener.getsockname()[1]}/?timeout=0.3"
        settings.CRM_SMS = {"PROVIDERS": {"default": parse_sms_url(url)}}
        assert get_backend().send(sms(1)).status is SendStatus.RETRY
    finally:
        listener.close()


@pytest.mark.parametrize("code", sorted(SEND_ERRORS))
def test_error_table_row(code):
    status, message = classify_send_error(code)
    assert status is SEND_ERRORS[code][0]
    assert message == SEND_ERRORS[code][1]


def test_unknown_error_code_is_permanent_not_retried_forever():
    assert classify_send_error(999, "odd")[0] is SendStatus.REJECTED


@pytest.mark.parametrize("code", sorted(STATUS_CODES))
def test_status_table_row(code):
    status, error_code, _ = status_report(code)
    assert status == STATUS_CODES[code][0]
    assert (error_code == "") == (status != MessageStatus.UNDELIVERED)


def test_status_not_found_is_no_report():
    assert status_report(-1) is None


def test_query_status_maps_codes_and_skips_unknown(smsru_provider):
    backend = get_backend()
    results = backend.send_many([sms(i) for i in range(3)])
    ids = [r.provider_message_id for r in results]
    smsru_provider.set_status(ids[0], 103)
    smsru_provider.set_status(ids[1], 104)
    rows = [
        types.SimpleNamespace(msg_id=f"m{i}", provider_message_id=pid) for i, pid in enumerate(ids)
    ] + [types.SimpleNamespace(msg_id="gone", provider_message_id="999999-1")]
    reports = {r.msg_id: r for r in backend.query_status(rows)}
    assert set(reports) == {"m0", "m1", "m2"}  # "gone" is -1: not found, no report
    assert reports["m0"].status == MessageStatus.DELIVERED
    assert (reports["m1"].status, reports["m1"].error_code) == (MessageStatus.UNDELIVERED, "104")
    assert reports["m2"].status == MessageStatus.SENT
    assert reports["m0"].provider_message_id == ids[0]


def test_query_status_asks_100_ids_per_request(smsru_provider):
    rows = [types.SimpleNamespace(msg_id=f"m{i}", provider_message_id=f"x-{i}") for i in range(250)]
    assert get_backend().query_status(rows) == []
    status_requests = [f for p, f in smsru_provider.requests if p == "/sms/status"]
    assert [len(dict(f)["sms_id"].split(",")) for f in status_requests] == [100, 100, 50]


def test_query_status_refused_raises(smsru_provider):
    smsru_provider.request_error = 200
    with pytest.raises(ProviderError, match="200"):
        get_backend().query_status([types.SimpleNamespace(msg_id="a", provider_message_id="1")])


def test_sender_validation():
    from django.core.exceptions import ValidationError

    backend = SmsRuBackend("x", {"api_id": "k"})
    backend.validate_sender("MyShop")
    with pytest.raises(ValidationError):
        backend.validate_sender("Магазин")
    with pytest.raises(ValidationError):
        backend.validate_sender("TwelveChars!")


def test_request_body_is_form_encoded_utf8(smsru_provider):
    get_backend().send(sms(1, text="Привет"))
    assert dict(smsru_provider.requests[0][1])["msg"] == "Привет"
    assert parse_qsl("msg=%D0%9F")[0][1] == "П"
