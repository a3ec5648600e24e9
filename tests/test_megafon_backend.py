"""MegafonBackend over real HTTP on loopback: the bytes it sends and how it reads every answer."""

from __future__ import annotations

import base64
import json
import logging
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import quote

import pytest
from django.core.exceptions import ValidationError

from crm_sms.backends import get_backend
from crm_sms.backends.base import OutgoingSMS, SendStatus
from crm_sms.backends.megafon import (
    CODES,
    DEFAULT_BASE_URL,
    MegafonBackend,
    classify_code,
)
from crm_sms.conf import parse_sms_url
from crm_sms.exceptions import ConfigurationError
from crm_sms.sandbox import SEND_PATH, SandboxServer

LOGIN = "corp@login"
PASSWORD = "p:a@ss/w%rd"  # ':' and '@' and '%' must survive the URL and the Basic header
TOKEN = base64.b64encode(f"{LOGIN}:{PASSWORD}".encode()).decode()


def backend_for(base_url: str, **options) -> MegafonBackend:
    return MegafonBackend(
        "default",
        {"login": LOGIN, "password": PASSWORD, "sender": "Test", "base_url": base_url, **options},
    )


def sms(msg_id="abc123", text="Код: 1234", to="+79001234212", sender="Test", **kw):
    return OutgoingSMS(to=to, text=text, sender=sender, msg_id=msg_id, **kw)


def answer(code, msg_id="srv-id", payload=None):
    status = {"code": code, "description": "x"}
    if payload:
        status["payload"] = payload
    return (200, {"result": {"msg_id": msg_id, "status": status}})


def assert_no_credentials(*things):
    for thing in things:
        text = repr(thing) + str(thing)
        for secret in (PASSWORD, TOKEN, LOGIN, quote(PASSWORD, safe="")):
            assert secret not in text, f"a credential leaked into {text!r}"


# --- the request on the wire -----------------------------------------------------------------


@pytest.fixture
def sandbox_with_odd_credentials():
    sandbox = SandboxServer(login=LOGIN, password=PASSWORD).start()
    yield sandbox
    sandbox.stop()


def test_exact_bytes_on_the_wire(sandbox_with_odd_credentials, settings):
    sandbox = sandbox_with_odd_credentials
    url = sandbox.sms_url("Shop")
    assert "%40" in url and "%3A" in url  # URL-encoded as an SMS_URL must be
    settings.CRM_SMS = {"PROVIDERS": {"default": parse_sms_url(url)}}
    result = get_backend().send(sms(text="Привет, мир! {}", sender=""))  # the URL's sender
    assert result.status is SendStatus.ACCEPTED, result
    [request] = sandbox.requests
    assert (
        request.body
        == (
            '{"from":"Shop","to":79001234212,"message":"Привет, мир! {}","msg_id":"abc123"}'
        ).encode()
    )
    assert not request.body.startswith(b"\xef\xbb\xbf")
    assert isinstance(json.loads(request.body)["to"], int)
    assert request.header("Authorization") == f"Basic {TOKEN}"
    assert request.header("Content-Type") == "application/json; charset=utf-8"
    assert request.path == SEND_PATH
    assert result.provider_message_id == "abc123"
    assert result.raw == {
        "result": {"msg_id": "abc123", "status": {"code": 0, "description": "ok"}}
    }


def test_callback_url_is_sent_when_public_url_is_set(megafon_provider, settings):
    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PUBLIC_URL": "https://crm.example.com/",
        "CALLBACK_TOKEN": "s3cret,old",
    }
    get_backend().send(sms())
    body = megafon_provider.requests[0].json()
    assert body["callback_url"] == "https://crm.example.com/sms/callback/default/s3cret/"


def test_no_callback_url_without_public_url(megafon_provider):
    get_backend().send(sms())
    assert "callback_url" not in megafon_provider.requests[0].json()


def test_explicit_callback_url_wins(megafon_provider):
    get_backend().send(sms(callback_url="https://other.example/cb/"))
    assert megafon_provider.requests[0].json()["callback_url"] == "https://other.example/cb/"


def test_default_sender_is_used_when_the_message_has_none(megafon_provider):
    get_backend().send(sms(sender=""))
    assert megafon_provider.requests[0].json()["from"] == "Test"


def test_keep_alive_pool_is_shared_by_threads(megafon_provider):
    megafon_provider.configure(latency_ms=20)
    backend = get_backend()
    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(lambda i: backend.send(sms(f"id{i}")), range(160)))
    assert all(r.status is SendStatus.ACCEPTED for r in results)
    assert len(megafon_provider.accepted) == 160
    # Connections are reused: at most one per thread, not one per message.
    assert megafon_provider.connections_opened <= 16


# --- options -----------------------------------------------------------------------------------


def test_options_from_url_strings_are_converted():
    config = parse_sms_url(
        "megafon://u:p@a2p-api.megalabs.ru/?sender=X&pool_size=8&connect_timeout=2.5"
        "&read_timeout=30&proxy=http://proxy.local:3128&ca_bundle=/etc/ssl/corp.pem"
    )
    backend = MegafonBackend("default", config["OPTIONS"])
    assert backend.pool_size == 8 and backend.connect_timeout == 2.5
    assert backend.read_timeout == 30.0
    session = backend.session
    assert session.get_adapter("https://a2p-api.megalabs.ru")._pool_maxsize == 8
    assert session.proxies == {
        "https": "http://proxy.local:3128",
        "http": "http://proxy.local:3128",
    }
    assert session.verify == "/etc/ssl/corp.pem"
    assert backend.send_url == "https://a2p-api.megalabs.ru/sms/v1/sms"


def test_defaults(monkeypatch):
    monkeypatch.delenv("REQUESTS_CA_BUNDLE", raising=False)
    monkeypatch.delenv("CURL_CA_BUNDLE", raising=False)
    backend = MegafonBackend("default", {"login": "u", "password": "p"})
    assert backend.base_url == DEFAULT_BASE_URL
    assert (backend.pool_size, backend.connect_timeout, backend.read_timeout) == (32, 10.0, 60.0)
    assert backend.session.verify is True  # TLS is verified
    assert backend.supports_callbacks


@pytest.mark.parametrize(
    "options, words",
    [
        ({"pool_size": "many"}, "pool_size"),
        ({"read_timeout": "0"}, "read_timeout"),
        ({"base_url": "ftp://host"}, "http"),
        ({"receipt_timezone": "Mars/Base"}, "receipt_timezone"),
    ],
)
def test_bad_options_raise_configuration_error(options, words):
    with pytest.raises(ConfigurationError, match=words) as info:
        MegafonBackend("backup", {"login": "u", "password": "p", **options})
    assert "SMS_URL_BACKUP" in str(info.value)


def test_environment_is_read_once_and_options_win(monkeypatch):
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "/etc/ssl/env-bundle.pem")
    monkeypatch.setenv("HTTPS_PROXY", "http://env-proxy:3128")
    monkeypatch.delenv("NO_PROXY", raising=False)
    monkeypatch.delenv("no_proxy", raising=False)
    from_env = MegafonBackend("default", {"login": "u", "password": "p"}).session
    assert from_env.verify == "/etc/ssl/env-bundle.pem"
    assert from_env.proxies["https"] == "http://env-proxy:3128"
    assert from_env.trust_env is False  # no per-request environment lookups
    options = {"login": "u", "password": "p", "ca_bundle": "/opt/ca.pem", "proxy": "http://p:1"}
    explicit = MegafonBackend("default", options).session
    assert explicit.verify == "/opt/ca.pem" and explicit.proxies["https"] == "http://p:1"
    monkeypatch.setenv("NO_PROXY", "a2p-api.megalabs.ru")
    bypassed = MegafonBackend("default", {"login": "u", "password": "p"}).session
    assert "https" not in bypassed.proxies


def test_credentials_in_base_url_are_moved_out_of_it():
    backend = MegafonBackend("default", {"base_url": "https://u:secret@a2p-api.megalabs.ru"})
    assert (backend.login, backend.password) == ("u", "secret")
    assert "secret" not in backend.base_url and "secret" not in repr(backend)


# --- the answer table --------------------------------------------------------------------------

# The spec (PROVIDERS.md), independent of the module's table.
EXPECTED = {
    0: SendStatus.ACCEPTED,
    20102: SendStatus.ACCEPTED,
    20101: SendStatus.REJECTED,
    8: SendStatus.RETRY,
    20: SendStatus.RETRY,
    69: SendStatus.RETRY,
    88: SendStatus.RETRY,
    257: SendStatus.RETRY,
    1281: SendStatus.PROVIDER_ERROR,
    1282: SendStatus.REJECTED,
    1284: SendStatus.REJECTED,
    1288: SendStatus.REJECTED,
    10: SendStatus.REJECTED,
    11: SendStatus.REJECTED,
}


def test_the_table_covers_the_spec():
    assert set(EXPECTED) <= set(CODES)
    for code, status in EXPECTED.items():
        assert CODES[code][0] is status, code


@pytest.mark.parametrize("code", sorted(CODES))
def test_every_row_of_the_code_table(scripted, code):
    server = scripted(answer(code))
    result = backend_for(server.base_url).send(sms())
    status, message = CODES[code]
    assert result.status is status
    assert str(message) and (result.error_message == str(message) or code == 0)
    assert result.raw["result"]["status"]["code"] == code
    if status is SendStatus.ACCEPTED:
        assert result.provider_message_id == "srv-id"
    else:
        assert result.error_code == str(code) and not result.provider_message_id


def test_the_1281_message_explains_ip_or_account():
    status, message = classify_code(1281)
    assert status is SendStatus.PROVIDER_ERROR
    assert "IP address" in message and "not enabled" in message


def test_code_messages_are_lazy_and_translated_to_russian():
    import re

    from django.utils import translation
    from django.utils.functional import Promise

    assert all(isinstance(message, Promise) for _, message in CODES.values())
    with translation.override("ru"):
        russian = {code: str(message) for code, (_, message) in CODES.items()}
    with translation.override("en"):
        english = {code: str(message) for code, (_, message) in CODES.items()}
    if russian == english:
        pytest.skip("the ru catalog (crm_sms/locale) has no MegaFon texts yet")
    untranslated = [code for code, text in russian.items() if not re.search("[а-яА-Я]", text)]
    assert untranslated == []


@pytest.mark.parametrize(
    "code, status, text",
    [
        (5, SendStatus.REJECTED, "SMPP error 5"),
        (255, SendStatus.REJECTED, "SMPP error 255"),
        (99999, SendStatus.REJECTED, "MegaFon error code 99999"),
        (1283, SendStatus.REJECTED, "MegaFon error code 1283"),
    ],
)
def test_unknown_codes_are_rejected_with_the_number(scripted, code, status, text):
    server = scripted(answer(code))
    result = backend_for(server.base_url).send(sms())
    assert result.status is status and text in result.error_message
    assert result.error_code == str(code)


def test_20101_names_the_field_from_the_payload(scripted):
    server = scripted(answer(20101, payload=[{"code": "param_is_not_valid", "description": "to"}]))
    result = backend_for(server.base_url).send(sms())
    assert result.status is SendStatus.REJECTED and result.error_code == "20101"
    assert "recipient number (to)" in result.error_message


def test_20101_from_the_sandbox_for_a_bom_is_readable(megafon_provider):
    backend = get_backend()
    # Our own encoding never has a BOM; a body that had one would be refused like this.
    assert not backend.encode_payload({"a": "я"}).startswith(b"\xef\xbb\xbf")


def test_20102_means_the_earlier_attempt_went_through(megafon_provider):
    backend = get_backend()
    first, second = backend.send(sms("same")), backend.send(sms("same"))
    assert first.status is second.status is SendStatus.ACCEPTED
    assert second.error_code == "20102" and second.provider_message_id == "same"
    assert megafon_provider.attempts["same"] == 2


def test_throttling_from_the_sandbox_is_retry(megafon_provider):
    megafon_provider.configure(throttle_rate=1.0)
    result = get_backend().send(sms())
    assert result.status is SendStatus.RETRY and result.error_code == "88"


@pytest.mark.parametrize(
    "http_status, body, ctype, status, error_code",
    [
        (401, b"", "text/plain", SendStatus.PROVIDER_ERROR, "http_401"),
        (403, b"<h1>Forbidden</h1>", "text/html", SendStatus.PROVIDER_ERROR, "http_403"),
        (500, b"oops", "text/plain", SendStatus.RETRY, "http_500"),
        (502, b"<html>Bad Gateway</html>", "text/html", SendStatus.RETRY, "http_502"),
        (503, b'{"error": "busy"}', "application/json", SendStatus.RETRY, "http_503"),
        (200, b"<html>maintenance</html>", "text/html", SendStatus.RETRY, "bad_response"),
        (200, b'{"unexpected": true}', "application/json", SendStatus.RETRY, "bad_response"),
        (429, b"slow down", "text/plain", SendStatus.RETRY, "http_429"),
        (404, b"not found", "text/plain", SendStatus.PROVIDER_ERROR, "http_404"),
        (400, b"bad request", "text/plain", SendStatus.REJECTED, "http_400"),
    ],
)
def test_http_level_answers(scripted, http_status, body, ctype, status, error_code):
    server = scripted((http_status, body, ctype))
    result = backend_for(server.base_url).send(sms())
    assert (result.status, result.error_code) == (status, error_code)
    assert result.error_message
    if not body.startswith(b"{"):
        assert result.raw == {"http_status": http_status, "body": body.decode()}


def test_401_message_names_the_env_variable(scripted):
    server = scripted((401, b"", "text/plain"))
    result = backend_for(server.base_url).send(sms())
    assert "SMS_URL" in result.error_message


def test_long_non_json_answer_is_cut_in_raw(scripted):
    server = scripted((502, b"x" * 5000, "text/html"))
    result = backend_for(server.base_url).send(sms())
    assert len(result.raw["body"]) == 500


def test_read_timeout_is_retry(scripted):
    server = scripted(lambda body: time.sleep(1.0) or (200, b"{}"))
    backend = backend_for(server.base_url, read_timeout="0.2")  # a string, as from a URL
    result = backend.send(sms())  # the server answers after 1 s: a timeout proves 0.2 s held
    assert result.status is SendStatus.RETRY and result.error_code == "timeout"
    assert "0.2 s" in result.error_message


def test_dropped_connection_is_retry(scripted):
    server = scripted("drop")
    result = backend_for(server.base_url).send(sms())
    assert result.status is SendStatus.RETRY and result.error_code == "connection_error"
    assert len(server.requests) == 1  # the request went out once: no hidden retries


def test_connection_refused_is_retry():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    result = backend_for(f"http://127.0.0.1:{port}").send(sms())
    assert result.status is SendStatus.RETRY and result.error_code == "connection_error"


def test_a_retry_after_a_drop_reuses_the_msg_id(megafon_provider):
    megafon_provider.configure(drop_rate=1.0)
    backend = get_backend()
    assert backend.send(sms("keep")).status is SendStatus.RETRY
    megafon_provider.configure(drop_rate=0.0)
    assert backend.send(sms("keep")).status is SendStatus.ACCEPTED
    assert megafon_provider.attempts["keep"] == 2


# --- credentials never leak --------------------------------------------------------------------


def echo_everything(body):
    # A hostile or buggy server that echoes the request, credentials included.
    return (500, f"{TOKEN} {LOGIN} {PASSWORD} {body.decode()}".encode(), "text/plain")


@pytest.mark.parametrize(
    "script",
    [
        echo_everything,
        lambda body: (401, f"bad {TOKEN}".encode(), "text/plain"),
        lambda body: (
            200,
            {"result": {"msg_id": "x", "status": {"code": 1281, "description": PASSWORD}}},
        ),
        lambda body: (200, f"<html>{PASSWORD}</html>".encode(), "text/html"),
        lambda body: "drop",
        lambda body: time.sleep(0.5) or (200, b"{}"),
    ],
    ids=["echo-500", "401", "json-description", "html-200", "drop", "timeout"],
)
def test_credentials_never_appear_in_results_or_logs(scripted, caplog, script):
    server = scripted(script)
    backend = backend_for(server.base_url, read_timeout="0.2")
    with caplog.at_level(logging.DEBUG):
        result = backend.send(sms())
    assert result.status is not SendStatus.ACCEPTED
    assert_no_credentials(result, result.raw, result.error_message, backend, caplog.text)


def test_credentials_not_in_repr_of_backend_or_session():
    backend = backend_for(DEFAULT_BASE_URL)
    assert_no_credentials(backend, backend.session.auth)


# --- validation --------------------------------------------------------------------------------

GOOD_SENDERS = [
    "Test",
    "A",
    "MyCompany",
    "12345678901",
    "Shop-24",
    "a.b@c",
    "Name With S",
    "!#$%()*+,-.",
    "/:;<=>?@[\\]",
    '^_`{|}~"',
]
BAD_SENDERS = [
    ("", "empty"),
    ("Johnny_Viper", "12 characters"),
    (" Lead", "start or end with a space"),
    ("Trail ", "start or end with a space"),
    ("Кириллица", "does not allow"),
    ("It's", "“'”"),
    ("A&B", "“&”"),
    ("Tab\there", "does not allow"),
]


@pytest.mark.parametrize("sender", GOOD_SENDERS)
def test_senders_megafon_accepts(sender):
    backend_for(DEFAULT_BASE_URL).validate_sender(sender)


@pytest.mark.parametrize("sender, words", BAD_SENDERS)
def test_senders_megafon_refuses(sender, words):
    with pytest.raises(ValidationError) as info:
        backend_for(DEFAULT_BASE_URL).validate_sender(sender)
    assert words in " ".join(info.value.messages)


def test_sandbox_agrees_with_the_sender_rule(megafon_provider):
    """The backend's rule and the emulator's independent one agree on every sample."""
    backend = get_backend()
    for i, sender in enumerate(GOOD_SENDERS):
        assert backend.send(sms(f"g{i}", sender=sender)).status is SendStatus.ACCEPTED, sender
    for sender, _ in BAD_SENDERS:
        payload = {"from": sender, "to": 79001234212, "message": "x", "msg_id": "b"}
        import requests

        response = requests.post(
            megafon_provider.base_url + SEND_PATH,
            data=json.dumps(payload).encode(),
            auth=("test", "test"),
            timeout=5,
        )
        assert response.json()["result"]["status"]["code"] == 20101, sender


@pytest.mark.parametrize(
    "text, ok",
    [("x", True), ("я" * 1000, True), ("x" * 1001, False), ("", False), ("   ", False)],
)
def test_text_length_limits(text, ok):
    backend = backend_for(DEFAULT_BASE_URL)
    if ok:
        backend.validate_text(text)
    else:
        with pytest.raises(ValidationError):
            backend.validate_text(text)


def test_too_long_text_message_says_how_long():
    with pytest.raises(ValidationError) as info:
        backend_for(DEFAULT_BASE_URL).validate_text("x" * 1001)
    assert "1001" in info.value.messages[0] and "1000" in info.value.messages[0]


@pytest.mark.parametrize(
    "kwargs, code",
    [
        ({"text": "x" * 1001}, "text_too_long"),
        ({"sender": "Johnny_Viper"}, "sender_too_long"),
        ({"to": "+7900123421"}, "invalid_phone"),  # 10 digits: MegaFon would say 20101
        ({"to": "89001234212x"}, "invalid_phone"),
        ({"msg_id": "has space"}, "invalid_msg_id"),
    ],
)
def test_invalid_messages_are_rejected_without_a_request(megafon_provider, kwargs, code):
    result = get_backend().send(sms(**kwargs))
    assert result.status is SendStatus.REJECTED and result.error_code == code
    assert result.error_message
    assert megafon_provider.requests == []


# --- check() -----------------------------------------------------------------------------------


def ids(problems):
    return sorted(p.id for p in problems)


def test_check_passes_for_a_good_configuration():
    config = parse_sms_url("megafon://u:p@a2p-api.megalabs.ru/?sender=MyCompany")
    assert MegafonBackend("default", config["OPTIONS"]).check() == []


@pytest.mark.parametrize(
    "url, alias, expected, env",
    [
        ("megafon://a2p-api.megalabs.ru/?sender=X", "default", ["crm_sms.E010"], "SMS_URL="),
        (
            "megafon://u@a2p-api.megalabs.ru/?sender=X",
            "backup",
            ["crm_sms.E010"],
            "SMS_URL_BACKUP=",
        ),
        ("megafon://u:p@a2p-api.megalabs.ru/", "default", ["crm_sms.W010"], "SMS_URL"),
        (
            "megafon://u:p@a2p-api.megalabs.ru/?sender=Johnny_Viper",
            "default",
            ["crm_sms.E004"],
            "SMS_URL",
        ),
        ("megafon+http://u:p@a2p.example.com/?sender=X", "default", ["crm_sms.W011"], "SMS_URL"),
        ("megafon+http://u:p@127.0.0.1:8999/?sender=X", "default", [], ""),
    ],
)
def test_check_problems(url, alias, expected, env):
    backend = MegafonBackend(alias, parse_sms_url(url)["OPTIONS"])
    problems = backend.check()
    assert ids(problems) == expected
    for problem in problems:
        assert env in problem.hint
        assert_no_credentials(problem.msg, problem.hint)


def test_check_e010_says_which_credential_is_missing():
    [problem] = MegafonBackend("default", {"login": "u", "sender": "X"}).check()
    assert problem.id == "crm_sms.E010" and "password is missing" in problem.msg


def test_system_checks_run_the_backend_check(settings):
    from crm_sms.checks import check_providers

    settings.CRM_SMS = {"PROVIDERS": {"default": parse_sms_url("megafon://a2p-api.megalabs.ru/")}}
    assert {"crm_sms.E010", "crm_sms.W010"} <= {p.id for p in check_providers()}


# --- TLS and proxy -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def self_signed(tmp_path_factory):
    """A certificate for 127.0.0.1 that no system CA signed (made with the openssl tool)."""
    import shutil
    import subprocess

    if not shutil.which("openssl"):
        pytest.skip("the openssl tool is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-days",
            "2",
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
            "-keyout",
            str(key),
            "-out",
            str(cert),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.fixture
def tls_server(scripted, self_signed):
    import ssl

    server = scripted(answer(0, msg_id="tls-ok"))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(*self_signed)
    server.server.socket = context.wrap_socket(server.server.socket, server_side=True)
    server.base_url = server.base_url.replace("http://", "https://")
    return server


def test_tls_is_verified(tls_server):
    result = backend_for(tls_server.base_url).send(sms())
    assert result.status is SendStatus.PROVIDER_ERROR and result.error_code == "tls_error"
    assert "ca_bundle" in result.error_message
    assert tls_server.requests == []  # nothing was sent over the unverified connection


def test_ca_bundle_trusts_a_corporate_certificate(tls_server, self_signed):
    result = backend_for(tls_server.base_url, ca_bundle=str(self_signed[0])).send(sms())
    assert result.status is SendStatus.ACCEPTED and result.provider_message_id == "tls-ok"


def test_requests_go_through_the_proxy(scripted):
    proxy = scripted(answer(0, msg_id="via-proxy"))
    backend = backend_for("http://megafon.invalid", proxy=proxy.base_url)
    result = backend.send(sms())
    assert result.status is SendStatus.ACCEPTED and result.provider_message_id == "via-proxy"
    [request] = proxy.requests
    assert request["headers"]["Host"] == "megafon.invalid"
    assert request["headers"]["Authorization"] == f"Basic {TOKEN}"


def test_a_dead_proxy_is_retry():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = backend_for("http://megafon.invalid", proxy=f"http://user:pw-secret@127.0.0.1:{port}")
    result = backend.send(sms())
    assert result.status is SendStatus.RETRY and result.error_code == "proxy_error"
    assert "pw-secret" not in repr(result)


# --- the full round trip -----------------------------------------------------------------------


def test_send_sms_now_through_the_sandbox_and_back_by_callback(
    megafon_provider, live_server, settings
):
    """send_sms(now=True) -> the sandbox accepts -> it posts the delivery report to our
    endpoint -> the Message is delivered, with its events."""
    from crm_sms import send_sms
    from crm_sms.models import Message, MessageStatus

    settings.CRM_SMS = {
        **settings.CRM_SMS,
        "PUBLIC_URL": live_server.url,
        "CALLBACK_TOKEN": "round-trip-token",
    }
    message = send_sms("8 (900) 123-42-12", "Ваш код: 1234", now=True)
    assert message.status == MessageStatus.SENT, message.error_message
    sent = megafon_provider.accepted[message.msg_id]
    assert sent["to"] == 79001234212 and sent["from"] == "Test"
    assert sent["callback_url"] == (f"{live_server.url}/sms/callback/default/round-trip-token/")
    assert megafon_provider.wait_for_callbacks(1, timeout=10)
    assert megafon_provider.callbacks_sent[0]["status"] == 200
    message = Message.objects.get(pk=message.pk)
    assert message.status == MessageStatus.DELIVERED
    assert message.delivered_at is not None
    assert message.provider_message_id == message.msg_id
