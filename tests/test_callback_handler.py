"""The lean path of ``crm_sms.handler.CallbackHandler`` (the demo site's WSGI application):
callbacks skip the browser middleware, keep the security and host checks, and answer as the
full path does; every other request takes the full middleware.

Requests go through the WSGI interface gunicorn calls (``handler(environ, start_response)``),
in the test's thread so they see its transaction (the connection-closing signal receivers are
off meanwhile, as in Django's test client).
"""

from __future__ import annotations

import json
from contextlib import contextmanager

import pytest
from django.core.signals import request_finished, request_started
from django.db import close_old_connections
from django.test import RequestFactory

from crm_sms.handler import CallbackHandler, callback_prefix
from crm_sms.models import Message, MessageStatus, QueuedReport
from tests.test_webhooks import TOKEN, report_body

S = MessageStatus
CALLBACK = f"/sms/callback/default/{TOKEN}/"


class SpyMiddleware:
    """A site middleware with a view hook: the lean path cannot run it, so it is off."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Spy"] = "full path"
        return response

    def process_view(self, request, view, args, kwargs):
        return None


class HeaderMiddleware:
    """A plain site middleware: kept on the lean path."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        response["X-Site"] = "kept"
        return response


@contextmanager
def connections_kept():
    request_started.disconnect(close_old_connections)
    request_finished.disconnect(close_old_connections)
    try:
        yield
    finally:
        request_started.connect(close_old_connections)
        request_finished.connect(close_old_connections)


def call(handler, method, path, body=b"", **extra):
    """(status code, headers, body) of ``handler`` for one request."""
    request = getattr(RequestFactory(), method)(
        path, body, content_type="application/json", **extra
    )
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer["status"], answer["headers"] = int(status.split()[0]), dict(headers)

    with connections_kept():
        response = handler(request.environ, start_response)
        try:
            content = b"".join(response)
        finally:
            response.close()
    return answer["status"], answer["headers"], content


@pytest.fixture
def handler(providers):
    return CallbackHandler()


@pytest.fixture
def providers(settings):
    from tests.test_webhooks import JSONReportBackend  # noqa: F401  (imported by path)

    settings.CRM_SMS = {
        "PROVIDERS": {"default": {"BACKEND": "tests.test_webhooks.JSONReportBackend"}},
        "CALLBACK_TOKEN": TOKEN,
    }
    return settings


@pytest.fixture
def sent(db):
    return Message.objects.create(
        phone="+79001234212", text="Hi", provider="default", status=S.SENT
    )


def post(handler, message, status="delivered", path=CALLBACK, **extra):
    body = json.dumps(report_body((message.msg_id, status)))
    return call(handler, "post", path, body, **extra)


def test_the_callback_prefix_is_found_from_the_urlconf(db):
    assert callback_prefix() == "/sms/callback/"


def test_a_report_takes_the_lean_path_and_is_applied(handler, sent):
    code, headers, content = post(handler, sent)
    assert (code, content) == (200, b"ACK")
    sent.refresh_from_db()
    assert sent.status == S.DELIVERED and sent.events.count() == 1
    # No locale, session or clickjacking middleware ran; SecurityMiddleware did.
    assert "Content-Language" not in headers and "X-Frame-Options" not in headers
    assert "Cookie" not in headers.get("Vary", "")
    assert headers["X-Content-Type-Options"] == "nosniff"


def test_a_page_takes_the_full_middleware(handler, db):
    code, headers, _ = call(handler, "get", "/admin/login/")
    assert code == 200
    assert "Content-Language" in headers and headers["X-Frame-Options"] == "DENY"


def test_repeats_wrong_token_and_other_methods_answer_as_the_full_path(handler, sent):
    assert post(handler, sent)[0] == 200
    assert post(handler, sent)[0] == 200  # a repeat: 200, nothing changes
    assert post(handler, sent, status="undelivered")[0] == 200  # out of order: ignored
    assert sent.events.count() == 1
    code, _, content = post(handler, sent, path="/sms/callback/default/guess/")
    assert code == 404 and b"ACK" not in content
    assert call(handler, "get", CALLBACK)[0] == 405
    assert post(handler, sent, path="/sms/callback/nosuch/" + TOKEN + "/")[0] == 404
    assert call(handler, "post", CALLBACK, b"{not json")[0] == 400


def test_the_https_redirect_and_the_host_check_still_apply(handler, sent, settings):
    assert post(handler, sent, HTTP_HOST="evil.example")[0] == 400
    settings.SECURE_SSL_REDIRECT = True
    handler = CallbackHandler()  # SecurityMiddleware reads the setting when it is built
    assert post(handler, sent)[0] == 301
    sent.refresh_from_db()
    assert sent.status == S.SENT
    assert post(handler, sent, secure=True)[0] == 200


def test_a_site_middleware_is_kept(providers, sent, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_callback_handler.HeaderMiddleware"]
    code, headers, _ = post(CallbackHandler(), sent)
    assert code == 200 and headers["X-Site"] == "kept"
    assert "Content-Language" not in headers


def test_a_middleware_with_view_hooks_turns_the_lean_path_off(providers, sent, settings):
    settings.MIDDLEWARE = [*settings.MIDDLEWARE, "tests.test_callback_handler.SpyMiddleware"]
    code, headers, _ = post(CallbackHandler(), sent)
    assert code == 200 and headers["X-Spy"] == "full path"
    assert "Content-Language" in headers  # the locale middleware ran
    sent.refresh_from_db()
    assert sent.status == S.DELIVERED


def test_queued_mode_stores_the_report_before_answering(handler, sent, settings):
    settings.CRM_SMS = {**settings.CRM_SMS, "REPORTS": "queued"}
    assert post(handler, sent)[0] == 200
    row = QueuedReport.objects.get()
    assert json.loads(row.reports)[0]["msg_id"] == sent.msg_id
    sent.refresh_from_db()
    assert sent.status == S.SENT  # applied later, by manage.py sms_reports


def test_the_inbound_url_takes_the_lean_path_too(handler, db):
    code, headers, _ = call(handler, "post", CALLBACK + "inbound/", b"{}")
    assert code == 404  # this provider takes no incoming messages: the view's answer
    assert "Content-Language" not in headers
