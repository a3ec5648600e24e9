"""The MegaFon emulator behaves as PROVIDERS.md describes the real API (over real loopback HTTP),
and another provider plugs into the same server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlencode

import pytest
import requests

from crm_sms.conf import parse_sms_url
from crm_sms.sandbox import BOM, SEND_PATH, ProviderEmulator, Reply, SandboxServer

ROOT = Path(__file__).resolve().parent.parent


def post(sandbox, payload=None, *, body=None, auth=("test", "test"), timeout=5, session=None):
    if body is None:
        body = json.dumps(payload, ensure_ascii=False).encode("utf-8")
    return (session or requests).post(
        sandbox.base_url + SEND_PATH,
        data=body,
        auth=auth,
        headers={"Content-Type": "application/json; charset=utf-8"},
        timeout=timeout,
    )


def message(msg_id="m1", **fields):
    return {"from": "Test", "to": 79001234212, "message": "Привет", "msg_id": msg_id, **fields}


def code_of(response) -> int:
    return response.json()["result"]["status"]["code"]


def bad_fields(response) -> list[str]:
    return [p["description"] for p in response.json()["result"]["status"]["payload"]]


class Receiver:
    """A loopback HTTP server recording the delivery reports posted to it."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[dict] = []
        self.fail_first = fail_first
        self.event = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.posts.append(
                    {"path": self.path, "headers": dict(self.headers), "body": body}
                )
                failing = len(receiver.posts) <= receiver.fail_first
                self.send_response(500 if failing else 200)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"OK")
                receiver.event.set()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        ).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/sms/callback/default/tok/"

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.close()


def test_accepts_a_valid_message_and_records_it(megafon_sandbox):
    response = post(megafon_sandbox, message("abc"))
    assert response.status_code == 200
    assert response.json()["result"] == {
        "msg_id": "abc",
        "status": {"code": 0, "description": "ok"},
    }
    assert megafon_sandbox.accepted["abc"]["to"] == 79001234212
    assert megafon_sandbox.accepted["abc"]["message"] == "Привет"
    record = megafon_sandbox.requests[0]
    assert record.body == json.dumps(message("abc"), ensure_ascii=False).encode()
    assert record["method"] == "POST" and record.path == SEND_PATH
    assert record.header("content-type") == "application/json; charset=utf-8"
    assert megafon_sandbox.attempts["abc"] == 1


@pytest.mark.parametrize(
    "auth", [None, ("test", "wrong"), ("other", "test")], ids=["none", "password", "login"]
)
def test_refuses_missing_or_wrong_credentials_with_401(megafon_sandbox, auth):
    response = post(megafon_sandbox, message(), auth=auth)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith("Basic")
    assert megafon_sandbox.accepted == {}


@pytest.mark.parametrize(
    "fields, bad",
    [
        ({"to": "79001234212"}, ["to"]),  # a string, not a JSON number
        ({"to": 9001234212}, ["to"]),  # 10 digits: no country code
        ({"to": True}, ["to"]),
        ({"from": "Johnny_Viper"}, ["from"]),  # 12 characters
        ({"from": " Lead"}, ["from"]),
        ({"from": "Кириллица"}, ["from"]),
        ({"from": ""}, ["from"]),
        ({"message": ""}, ["message"]),
        ({"message": "x" * 1001}, ["message"]),
        ({"msg_id": "x" * 17}, ["msg_id"]),
        ({"msg_id": "bad id"}, ["msg_id"]),
        ({"to": "1", "message": ""}, ["to", "message"]),
    ],
)
def test_names_the_bad_field_in_20101_payload(megafon_sandbox, fields, bad):
    response = post(megafon_sandbox, message(**fields))
    assert response.status_code == 200
    assert code_of(response) == 20101
    assert bad_fields(response) == bad
    assert megafon_sandbox.accepted == {}


def test_missing_fields_are_20101(megafon_sandbox):
    response = post(megafon_sandbox, {"msg_id": "m1"})
    assert code_of(response) == 20101
    assert bad_fields(response) == ["from", "to", "message"]


def test_accepts_the_longest_message_and_sender(megafon_sandbox):
    response = post(megafon_sandbox, message(message="я" * 1000, **{"from": "A2345678901"}))
    assert code_of(response) == 0


def test_refuses_a_body_with_a_byte_order_mark(megafon_sandbox):
    body = BOM + json.dumps(message()).encode("utf-8")
    response = post(megafon_sandbox, body=body)
    assert code_of(response) == 20101
    assert response.json()["result"]["status"]["payload"] == [
        {"code": "bom_not_allowed", "description": "body"}
    ]
    assert megafon_sandbox.accepted == {}
    # The same JSON without the BOM is fine.
    assert code_of(post(megafon_sandbox, body=body[3:])) == 0


def test_not_json_is_20101(megafon_sandbox):
    response = post(megafon_sandbox, body=b"from=Test&to=79001234212")
    assert code_of(response) == 20101
    assert bad_fields(response) == ["body"]


def test_second_message_with_the_same_msg_id_is_20102(megafon_sandbox):
    assert code_of(post(megafon_sandbox, message("dup"))) == 0
    second = post(megafon_sandbox, message("dup", message="other text"))
    assert code_of(second) == 20102
    assert second.json()["result"]["msg_id"] == "dup"
    assert megafon_sandbox.accepted["dup"]["message"] == "Привет"  # the first one stays
    assert megafon_sandbox.attempts["dup"] == 2
    assert len(megafon_sandbox.accepted) == 1


def test_concurrent_duplicates_are_accepted_once(megafon_sandbox):
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda _: code_of(post(megafon_sandbox, message("race"))), range(8)))
    assert sorted(codes) == [0] + [20102] * 7


def test_missing_msg_id_gets_one_made_up(megafon_sandbox):
    payload = message()
    del payload["msg_id"]
    response = post(megafon_sandbox, payload)
    made_up = response.json()["result"]["msg_id"]
    assert code_of(response) == 0 and made_up in megafon_sandbox.accepted


def test_over_the_rate_answers_88(megafon_sandbox):
    megafon_sandbox.configure(rate=5)
    session = requests.Session()
    codes = [code_of(post(megafon_sandbox, message(f"r{i}"), session=session)) for i in range(20)]
    assert codes.count(88) >= 10
    assert 1 <= codes.count(0) <= 7  # one second of burst at 5/s, plus refill during the loop
    assert len(megafon_sandbox.accepted) == codes.count(0)
    time.sleep(0.3)  # refilled: 1.5 tokens
    assert code_of(post(megafon_sandbox, message("later"), session=session)) == 0


def test_failure_injection(megafon_sandbox):
    megafon_sandbox.configure(fail_rate=1.0)
    assert post(megafon_sandbox, message("f1")).status_code == 503
    megafon_sandbox.configure(fail_rate=0.0, throttle_rate=1.0)
    assert code_of(post(megafon_sandbox, message("f2"))) == 88
    megafon_sandbox.configure(throttle_rate=0.0, drop_rate=1.0)
    with pytest.raises(requests.ConnectionError):
        post(megafon_sandbox, message("f3"))
    megafon_sandbox.configure(drop_rate=0.0)
    assert megafon_sandbox.accepted == {}
    assert megafon_sandbox.attempts["f1"] == megafon_sandbox.attempts["f2"] == 1


def test_slow_answer_times_out_the_client_but_the_message_is_accepted(megafon_sandbox):
    megafon_sandbox.configure(timeout_rate=1.0, timeout_s=0.5)
    with pytest.raises(requests.ReadTimeout):
        post(megafon_sandbox, message("slow"), timeout=0.1)
    megafon_sandbox.configure(timeout_rate=0.0)
    deadline = time.monotonic() + 3
    while "slow" not in megafon_sandbox.accepted and time.monotonic() < deadline:
        time.sleep(0.02)
    # The retry with the same msg_id learns that the first attempt went through.
    assert code_of(post(megafon_sandbox, message("slow"))) == 20102


def test_latency_is_added_per_request_in_parallel(megafon_sandbox):
    megafon_sandbox.configure(latency_ms=1000)
    started = time.monotonic()
    with ThreadPoolExecutor(8) as pool:
        codes = list(pool.map(lambda i: code_of(post(megafon_sandbox, message(f"l{i}"))), range(8)))
    elapsed = time.monotonic() - started
    assert codes == [0] * 8
    # Slept in each request's own thread: one after another would take at least 8 s.
    assert 1.0 <= elapsed < 4.0


def test_forced_codes_per_recipient(megafon_sandbox):
    megafon_sandbox.configure(codes={"+79001112233": 1282, 79001112244: 1281})
    assert code_of(post(megafon_sandbox, message("a", to=79001112233))) == 1282
    assert code_of(post(megafon_sandbox, message("b", to=79001112244))) == 1281
    assert code_of(post(megafon_sandbox, message("c"))) == 0


def test_configure_rejects_unknown_options(megafon_sandbox):
    with pytest.raises(TypeError, match="latency"):
        megafon_sandbox.configure(latency=5)


def test_reset_forgets_everything(megafon_sandbox):
    post(megafon_sandbox, message("x"))
    megafon_sandbox.reset()
    assert megafon_sandbox.accepted == {} and megafon_sandbox.requests == []
    assert not megafon_sandbox.attempts
    assert code_of(post(megafon_sandbox, message("x"))) == 0


def test_sms_url_round_trips_through_parse_sms_url():
    sandbox = SandboxServer(login="user@corp", password="p:a@ss/%?#").start()
    try:
        config = parse_sms_url(sandbox.sms_url("Shop"))
        assert config["OPTIONS"] == {
            "login": "user@corp",
            "password": "p:a@ss/%?#",
            "base_url": sandbox.base_url,
            "sender": "Shop",
        }
        assert config["BACKEND"] == "crm_sms.backends.megafon.MegafonBackend"
        assert sandbox.base_url == f"http://127.0.0.1:{sandbox.port}"
        response = post(sandbox, message(), auth=("user@corp", "p:a@ss/%?#"))
        assert code_of(response) == 0
    finally:
        sandbox.stop()


def test_keep_alive_and_stop_closes_idle_connections():
    before = threading.active_count()
    sandbox = SandboxServer().start()
    session = requests.Session()
    for i in range(5):
        assert code_of(post(sandbox, message(f"k{i}"), session=session)) == 0
    assert sandbox.connections_opened == 1  # HTTP/1.1 keep-alive: one connection for five
    url = sandbox.base_url + SEND_PATH
    sandbox.stop()
    deadline = time.monotonic() + 3
    while threading.active_count() > before and time.monotonic() < deadline:
        time.sleep(0.02)
    assert threading.active_count() <= before
    with pytest.raises(requests.ConnectionError):
        requests.post(url, data=b"{}", timeout=2)


def test_posts_delivery_reports_to_the_callback_url(megafon_sandbox, receiver):
    post(megafon_sandbox, message("d1", callback_url=receiver.url))
    assert megafon_sandbox.wait_for_callbacks(1)
    [posted] = receiver.posts
    assert posted["path"] == "/sms/callback/default/tok/"
    assert "Authorization" not in posted["headers"]  # reports carry no credentials
    assert posted["headers"]["Content-Type"].startswith("application/json")
    report = json.loads(posted["body"])
    accepted = megafon_sandbox.accepted["d1"]
    assert report["msg_id"] == "d1"
    assert report["status"] == "delivered"
    assert report["receipted_message_id"] == accepted["receipted_message_id"]
    assert "stat:DELIVRD err:000" in report["short_message"]
    assert f"id:{accepted['receipted_message_id']} " in report["short_message"]
    assert megafon_sandbox.callbacks_sent[0]["status"] == 200
    assert accepted["status"] == "delivered"


def test_failed_deliveries_are_reported_after_the_delay(megafon_sandbox, receiver):
    megafon_sandbox.configure(deliver_rate=0.0, callback_delay=0.4)
    started = time.monotonic()
    post(megafon_sandbox, message("d2", callback_url=receiver.url))
    assert receiver.event.wait(3)
    assert time.monotonic() - started >= 0.4
    report = json.loads(receiver.posts[0]["body"])
    assert report["status"] == "delivery_failed"
    assert "stat:UNDELIV" in report["short_message"]


def test_no_callback_without_callback_url_or_when_disabled(megafon_sandbox, receiver):
    post(megafon_sandbox, message("n1"))
    megafon_sandbox.configure(callbacks=False)
    post(megafon_sandbox, message("n2", callback_url=receiver.url))
    assert not megafon_sandbox.wait_for_callbacks(1, timeout=0.3)
    assert receiver.posts == []


def test_callbacks_are_retried_when_the_receiver_fails(megafon_sandbox):
    flaky = Receiver(fail_first=1)
    try:
        post(megafon_sandbox, message("d3", callback_url=flaky.url))
        assert megafon_sandbox.wait_for_callbacks(1, timeout=5)
        assert len(flaky.posts) == 2
        assert megafon_sandbox.callbacks_sent[0]["attempts"] == 2
        assert megafon_sandbox.callbacks_sent[0]["status"] == 200
    finally:
        flaky.close()


def test_serves_quickly_with_many_keep_alive_clients(megafon_sandbox):
    """The benchmark (concurrency 32) must not be limited by the sandbox."""
    session = requests.Session()
    adapter = requests.adapters.HTTPAdapter(pool_maxsize=32)
    session.mount("http://", adapter)
    with ThreadPoolExecutor(32) as pool:
        codes = list(
            pool.map(
                lambda i: code_of(post(megafon_sandbox, message(f"t{i}"), session=session)),
                range(600),
            )
        )
    assert codes == [0] * 600
    # Keep-alive: 600 requests over at most 32 connections (the rate is measured in bench/).
    assert megafon_sandbox.connections_opened <= 32


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_management_command_prints_the_sms_url_and_stops_cleanly(signum):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "manage.py",
            "sms_sandbox",
            "--port",
            "0",
            "--login",
            "demo",
            "--password",
            "p@ss",
            "--latency-ms",
            "1",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        listening = proc.stdout.readline()
        sms_url = proc.stdout.readline().strip()
        assert listening.startswith("MegaFon sandbox listening on http://127.0.0.1:")
        assert sms_url.startswith("SMS_URL=megafon+http://demo:p%40ss@127.0.0.1:")
        options = parse_sms_url(sms_url.removeprefix("SMS_URL="))["OPTIONS"]
        response = requests.post(
            options["base_url"] + SEND_PATH,
            data=json.dumps(message()).encode(),
            auth=(options["login"], options["password"]),
            timeout=5,
        )
        assert code_of(response) == 0
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=60)  # a generous bound: the machine may be busy
        assert proc.returncode == 0, err
        assert "1 messages accepted" in out
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_the_summary_page_names_the_provider(megafon_sandbox):
    post(megafon_sandbox, message("s1"))
    summary = requests.get(megafon_sandbox.base_url + "/", timeout=5).json()
    assert summary["provider"] == "megafon"
    assert summary["send"] == f"POST {SEND_PATH}"
    assert summary["accepted"] == summary["requests"] == 1


def test_an_unknown_provider_is_refused():
    with pytest.raises(ValueError, match="megafon"):
        SandboxServer(provider="nope")


# --- a second provider plugs into the same server ---------------------------------------------


class ToyEmulator(ProviderEmulator):
    """A made-up provider unlike MegaFon: the key in the form or query instead of Basic auth,
    several recipients per request, a status endpoint, form-encoded reports."""

    name = title = scheme = "toy"
    routes = {("POST", "/api/send"): "send", ("GET", "/api/status"): "status"}

    def authenticate(self, request):
        key = request.form().get("key") or request.query.get("key")
        return None if key == [self.sandbox.password] else Reply(403, "bad key", "text/plain")

    def send(self, request):
        form = {name: values[0] for name, values in request.form().items()}
        self.sandbox.count_attempt(form["id"])
        failure = self.sandbox.inject_failure()
        if failure is not None:
            return failure
        reply = Reply(200, {"sent": [], "refused": {}})
        for phone in form["to"].split(","):
            code = self.sandbox.forced_code(phone)
            if code:
                reply.body["refused"][phone] = code
                continue
            msg_id = f"{form['id']}-{phone}"
            sms = {"msg_id": msg_id, "to": phone, "callback_url": form.get("callback")}
            if self.sandbox.accept(msg_id, sms):
                reply.body["sent"].append(msg_id)
                reply.reports.append(sms)
        return reply

    def status(self, request):
        sms = self.sandbox.accepted.get(request.query["id"][0], {})
        return Reply(200, {"status": sms.get("status", "unknown")})

    def delivery_report(self, message, delivered):
        return {"id": message["msg_id"], "state": "ok" if delivered else "fail"}

    def encode_report(self, message, report):
        return urlencode(report).encode(), {"Content-Type": "application/x-www-form-urlencoded"}


def test_a_second_provider_is_one_small_class(receiver):
    with SandboxServer(provider=ToyEmulator, password="k") as sandbox:
        assert sandbox.sms_url("Shop").startswith(f"toy+http://test:k@127.0.0.1:{sandbox.port}/")
        api = sandbox.base_url + "/api/send"
        form = {"key": "k", "id": "b1", "to": "79001234212,79001234213", "callback": receiver.url}
        assert requests.post(api, data={**form, "key": "x"}, timeout=5).status_code == 403
        assert requests.post(sandbox.base_url + "/other", timeout=5).json() == {
            "error": "not found; the API is POST /api/send, GET /api/status"
        }
        sandbox.configure(codes={"79001234213": 7})
        answer = requests.post(api, data=form, timeout=5).json()
        assert answer == {"sent": ["b1-79001234212"], "refused": {"79001234213": 7}}
        assert sandbox.wait_for_callbacks(1)
        assert parse_qs(receiver.posts[0]["body"].decode()) == {
            "id": ["b1-79001234212"],
            "state": ["ok"],
        }
        status = requests.get(sandbox.base_url + "/api/status?key=k&id=b1-79001234212", timeout=5)
        assert status.json() == {"status": "delivered"}
        # The shared failure injection applies to it as to MegaFon.
        sandbox.configure(fail_rate=1.0)
        assert requests.post(api, data=form, timeout=5).status_code == 503
        assert sandbox.attempts["b1"] == 2  # the refused key never reached the endpoint
        assert len(sandbox.requests) == 5
