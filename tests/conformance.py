"""The conformance suite: what every HTTP provider backend must do, run against its sandbox.

Like django-anymail's shared webhook test cases, one base class holds the tests and a provider
subclass fills in a few hooks::

    class TestSmscConformance(ConformanceSuite):
        emulator = "smsc"            # its name in crm_sms.sandbox.EMULATORS
        refused_code = 7             # a per-message code the emulator answers for ``codes``
        report_modes = ("callback", "poll")

A provider is "done" when its subclass passes. The tests run over real HTTP on loopback against
``SandboxServer(provider=emulator)``, with the backend configured by its ``SMS_URL`` exactly as
a site configures it, and apply delivery reports to real ``Message`` rows through
``crm_sms.reports.apply_delivery_reports``. What they check:

- accepted: ``ACCEPTED`` with the provider's id;
- refused: a per-message code -> ``REJECTED`` with that code and a text for people;
- throttled -> ``RETRY``; a provider-wide failure (wrong credentials) -> ``PROVIDER_ERROR``;
- ambiguous failures (the connection dropped after the request was read, HTTP 503, a read
  timeout) -> ``RETRY`` with ``SendResult.ambiguous``; a refused connection is not ambiguous;
  and the backend's ``retry_safety`` (read on the instance: a configuration may change it,
  as SMSC's ``batch_size`` does) holds: ``DEDUPLICATED`` -> a resend after a timeout leaves
  one message at the provider; ``LOOKUP`` -> ``lookup_sent`` finds the message that arrived and
  not the one that did not;
- a batch with mixed results (``max_batch_size > 1``): results in the batch's order;
- delivery reports to each final state (delivered, undelivered), by callback (posted to the
  callback endpoint with Django's test client) and/or by polling (``query_status``);
  a forged callback is refused (for signed callbacks);
- credentials never in ``SendResult.raw``/``error_message``, the logs or ``repr(backend)``.

Hooks (class attributes and methods a subclass may override; the defaults fit an emulator that
uses the shared ``SandboxServer`` knobs):

====================================  ========================================================
``emulator``                          the ``EMULATORS`` name (required)
``login``, ``password``               the sandbox's credentials (distinctive, so a leak shows)
``sender``                            the ``?sender=`` of the URL
``refused_code``                      a per-message refusal code (required); ``force_refused``
                                      makes the emulator answer it for one number
``throttled_code``                    the ``error_code`` expected when throttled ("" = any)
``provider_error_code``               the ``error_code`` of wrong credentials ("" = any)
``report_modes``                      ``("callback",)``, ``("poll",)`` or both
``start_sandbox()``                   a started ``SandboxServer`` (callbacks off: the suite
                                      posts reports itself through the test client)
``sms_url(sandbox)``                  the ``SMS_URL`` of the backend under test
``secrets(sandbox)``                  the strings that must never show
``force_refused(sandbox, phone)``     the emulator refuses ``phone`` with ``refused_code``
``force_throttled(sandbox)``          every message is throttled
``force_provider_error(sandbox)``     every request fails provider-wide (default: the sandbox
                                      takes other credentials than the backend's)
``force_ambiguous(sandbox, backend,   ``kind`` is "drop" (closed after reading the request),
kind)``                               "503" or "timeout" (answered after the read timeout; the
                                      message is accepted then)
``sent_count(sandbox)``               how many SMS the provider sent (default
                                      ``len(sandbox.accepted)``; SMSC adds its ``duplicates``)
``accepted_message(sandbox, sms,      the emulator's record of an accepted message (default:
result)``                             ``sandbox.accepted`` by provider id, then by msg_id)
``callback_request(sandbox, message,  (body bytes, headers) of the provider's report; default:
delivered)``                          the emulator's ``delivery_report`` + ``encode_report``
``forge(body, headers)``              the same report with a wrong signature, or None (the
                                      provider does not sign: the forged-callback test skips)
``set_final_status(sandbox, message,  for polling: make the emulator's status endpoint answer
delivered)``                          the final state (default: the emulator's ``finish``)
====================================  ========================================================
"""

from __future__ import annotations

import logging
import time
from typing import Any, ClassVar

import pytest
from django.urls import reverse
from django.utils import timezone

from crm_sms.backends import get_backend
from crm_sms.backends.base import (
    BaseBackend,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from crm_sms.conf import parse_sms_url
from crm_sms.models import EventSource, Message, MessageStatus
from crm_sms.reports import apply_delivery_reports
from crm_sms.sandbox import SandboxServer

S = SendStatus


def wait_until(condition, timeout: float = 5.0) -> bool:
    """Poll ``condition()`` every 20 ms until it is true or ``timeout`` seconds passed."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.02)
    return bool(condition())


class ConformanceSuite:
    """The tests every provider backend passes; subclass as ``Test<Provider>Conformance``."""

    emulator: ClassVar[str] = ""
    alias: ClassVar[str] = "conformance"
    callback_token: ClassVar[str] = "conformance-token-5c1d"
    public_url: ClassVar[str] = "http://testserver"
    login: ClassVar[str] = "conf-login-8Kq2"
    password: ClassVar[str] = "conf-pass-Zr7w!4"
    sender: ClassVar[str] = "Shop"
    refused_code: ClassVar[Any] = None
    throttled_code: ClassVar[str] = ""
    provider_error_code: ClassVar[str] = ""
    report_modes: ClassVar[tuple[str, ...]] = ("callback",)
    #: The sandbox answers a timed-out request this much later (the backend waits 0.3 s).
    timeout_s: ClassVar[float] = 1.0
    read_timeout: ClassVar[float] = 0.3

    # --- hooks -----------------------------------------------------------------------------
    def start_sandbox(self) -> SandboxServer:
        return SandboxServer(
            provider=self.emulator,
            login=self.login,
            password=self.password,
            callbacks=False,
            timeout_s=self.timeout_s,
        ).start()

    def sms_url(self, sandbox: SandboxServer) -> str:
        return sandbox.sms_url(self.sender)

    def secrets(self, sandbox: SandboxServer) -> list[str]:
        return [self.login, self.password]

    def force_refused(self, sandbox: SandboxServer, phone: str) -> None:
        sandbox.configure(codes={**sandbox.codes, phone: self.refused_code})

    def force_throttled(self, sandbox: SandboxServer) -> None:
        sandbox.configure(throttle_rate=1.0)

    def force_provider_error(self, sandbox: SandboxServer) -> None:
        sandbox.configure(login="someone-else", password="not-the-password")

    def force_ambiguous(self, sandbox: SandboxServer, backend: BaseBackend, kind: str) -> None:
        if kind == "drop":
            sandbox.configure(drop_rate=1.0)
        elif kind == "503":
            sandbox.configure(fail_rate=1.0)
        elif kind == "timeout":
            sandbox.configure(timeout_rate=1.0)
            backend.read_timeout = self.read_timeout
        else:
            raise ValueError(kind)

    def sent_count(self, sandbox: SandboxServer) -> int:
        return len(sandbox.accepted)

    def accepted_message(
        self, sandbox: SandboxServer, sms: OutgoingSMS, result: SendResult
    ) -> dict[str, Any]:
        with sandbox._lock:
            message = sandbox.accepted.get(result.provider_message_id)
            message = message or sandbox.accepted.get(sms.msg_id)
        assert message is not None, f"the sandbox holds no message for {sms.msg_id}"
        return message

    def callback_request(
        self, sandbox: SandboxServer, message: dict[str, Any], delivered: bool
    ) -> tuple[bytes, dict[str, str]]:
        report = sandbox.delivery_report(message, delivered)
        return sandbox.provider.encode_report(message, report)

    def forge(self, body: bytes, headers: dict[str, str]) -> tuple[bytes, dict[str, str]] | None:
        return None

    def set_final_status(
        self, sandbox: SandboxServer, message: dict[str, Any], delivered: bool
    ) -> None:
        sandbox.provider.finish(message, delivered)

    # --- fixtures --------------------------------------------------------------------------
    @pytest.fixture
    def sandbox(self):
        server = self.start_sandbox()
        try:
            yield server
        finally:
            server.stop()

    @pytest.fixture
    def backend(self, sandbox, settings) -> BaseBackend:
        settings.CRM_SMS = {
            "PROVIDERS": {self.alias: parse_sms_url(self.sms_url(sandbox))},
            "DEFAULT_PROVIDER": self.alias,
            "CALLBACK_TOKEN": self.callback_token,
            "PUBLIC_URL": self.public_url,
        }
        return get_backend(self.alias)

    # --- helpers ---------------------------------------------------------------------------
    def outgoing(self, backend: BaseBackend, n: int, text: str = "Conformance test") -> OutgoingSMS:
        return OutgoingSMS(
            to=f"+7900555{n:04d}",
            text=text,
            sender="",
            msg_id=f"conf{n:04d}x{int(time.time() * 1000) % 10**6:06d}",
            callback_url=backend.callback_url(),
        )

    def send_row(self, backend: BaseBackend, n: int) -> tuple[Message, OutgoingSMS, SendResult]:
        """A Message row sent through the backend, written back as the outbox would."""
        row = Message.objects.create(
            phone=f"+7900555{n:04d}", text="Conformance", provider=self.alias, status="sending"
        )
        sms = OutgoingSMS(row.phone, row.text, "", row.msg_id, backend.callback_url())
        result = backend.send(sms)
        assert result.status is S.ACCEPTED, result
        Message.objects.filter(pk=row.pk).update(
            status=MessageStatus.SENT,
            provider_message_id=result.provider_message_id,
            sent_at=timezone.now(),
        )
        row.refresh_from_db()
        return row, sms, result

    def callback_path(self) -> str:
        return reverse(
            "crm_sms:callback", kwargs={"provider": self.alias, "token": self.callback_token}
        )

    def post_callback(self, client, body: bytes, headers: dict[str, str]):
        headers = dict(headers)
        content_type = headers.pop("Content-Type", "application/octet-stream")
        return client.post(
            self.callback_path(), data=body, content_type=content_type, headers=headers
        )

    # --- send side -------------------------------------------------------------------------
    def test_declares_itself(self, backend):
        assert self.emulator and self.refused_code is not None, "fill in the suite's hooks"
        assert isinstance(backend.retry_safety, RetrySafety)
        if backend.retry_safety is RetrySafety.LOOKUP:
            assert type(backend).lookup_sent is not BaseBackend.lookup_sent
        assert backend.display_name and backend.display_name != "SMS"
        assert backend.max_batch_size >= 1
        assert set(self.report_modes) <= {"callback", "poll"} and self.report_modes
        if "callback" in self.report_modes:
            assert backend.supports_callbacks
        if "poll" in self.report_modes:
            assert callable(backend.query_status)

    def test_accepted(self, backend, sandbox):
        sms = self.outgoing(backend, 1)
        result = backend.send(sms)
        assert result.status is S.ACCEPTED, result
        assert result.provider_message_id
        assert not result.ambiguous
        assert self.sent_count(sandbox) == 1
        assert self.accepted_message(sandbox, sms, result)

    def test_refused_message(self, backend, sandbox):
        sms = self.outgoing(backend, 2)
        self.force_refused(sandbox, sms.to)
        result = backend.send(sms)
        assert result.status is S.REJECTED, result
        assert result.error_code == str(self.refused_code)
        assert result.error_message
        assert not result.ambiguous
        assert self.sent_count(sandbox) == 0

    def test_throttled_is_retried(self, backend, sandbox):
        self.force_throttled(sandbox)
        result = backend.send(self.outgoing(backend, 3))
        assert result.status is S.RETRY, result
        if self.throttled_code:
            assert result.error_code == self.throttled_code
        assert result.error_message
        assert self.sent_count(sandbox) == 0

    def test_provider_wide_failure_pauses(self, backend, sandbox):
        self.force_provider_error(sandbox)
        results = backend.send_many([self.outgoing(backend, 4), self.outgoing(backend, 5)])
        assert [r.status for r in results] == [S.PROVIDER_ERROR] * 2, results
        if self.provider_error_code:
            assert results[0].error_code == self.provider_error_code
        assert results[0].error_message
        assert self.sent_count(sandbox) == 0

    @pytest.mark.parametrize("kind", ["drop", "503", "timeout"])
    def test_ambiguous_failure(self, backend, sandbox, kind):
        sms = self.outgoing(backend, 6)
        self.force_ambiguous(sandbox, backend, kind)
        result = backend.send(sms)
        assert result.status is S.RETRY, result
        assert result.ambiguous, result
        sandbox.configure(drop_rate=0.0, fail_rate=0.0, timeout_rate=0.0)
        safety = backend.retry_safety
        if kind == "timeout":  # the sandbox takes the message after the client gave up
            assert wait_until(lambda: self.sent_count(sandbox) == 1)
        if safety is RetrySafety.LOOKUP:
            found = backend.lookup_sent(sms)
            if kind == "timeout":
                assert found is not None and found.status is S.ACCEPTED, found
                assert found.provider_message_id
            else:
                assert found is None
        elif safety is RetrySafety.DEDUPLICATED:
            again = backend.send(sms)  # the same msg_id: never a second SMS
            assert again.status is S.ACCEPTED, again
            assert self.sent_count(sandbox) == 1

    def test_refused_connection_is_not_ambiguous(self, backend, sandbox):
        sandbox.stop()  # nothing listens on the port any more
        result = backend.send(self.outgoing(backend, 7))
        assert result.status is S.RETRY, result
        assert not result.ambiguous

    def test_lookup_finds_an_accepted_message(self, backend, sandbox):
        if backend.retry_safety is not RetrySafety.LOOKUP:
            pytest.skip("the backend does not look up sent messages")
        sent, missing = self.outgoing(backend, 8), self.outgoing(backend, 9)
        result = backend.send(sent)
        assert result.status is S.ACCEPTED, result
        found = backend.lookup_sent(sent)
        assert found is not None and found.status is S.ACCEPTED, found
        assert found.provider_message_id == result.provider_message_id
        assert backend.lookup_sent(missing) is None

    def test_batch_with_mixed_results(self, backend, sandbox):
        if backend.max_batch_size < 2:
            pytest.skip("one recipient per request")
        batch = [self.outgoing(backend, n) for n in (10, 11, 12, 13)]
        self.force_refused(sandbox, batch[1].to)
        sandbox.requests.clear()
        results = backend.send_many(batch)
        assert [r.status for r in results] == [S.ACCEPTED, S.REJECTED, S.ACCEPTED, S.ACCEPTED]
        assert results[1].error_code == str(self.refused_code)
        ids = [r.provider_message_id for i, r in enumerate(results) if i != 1]
        assert len(set(ids)) == 3 and all(ids)
        assert len(sandbox.requests) < len(batch), "a batch goes in fewer requests"
        for sms, result in zip(batch, results, strict=True):
            if result.status is S.ACCEPTED:  # each id is that message's, in order
                message = self.accepted_message(sandbox, sms, result)
                assert sms.to.lstrip("+") in str(message)

    # --- report side -----------------------------------------------------------------------
    @pytest.mark.django_db
    @pytest.mark.parametrize("delivered", [True, False], ids=["delivered", "undelivered"])
    def test_callback_to_final_state(self, backend, sandbox, client, delivered):
        if "callback" not in self.report_modes:
            pytest.skip("the provider's reports are polled")
        row, sms, result = self.send_row(backend, 20)
        message = self.accepted_message(sandbox, sms, result)
        body, headers = self.callback_request(sandbox, message, delivered)
        response = self.post_callback(client, body, headers)
        assert response.status_code == 200, response.content
        self.assert_final(row, delivered, EventSource.CALLBACK)
        again = self.post_callback(client, body, headers)  # a repeated report changes nothing
        assert again.status_code == 200
        assert row.events.filter(source=EventSource.CALLBACK).count() == 1

    @pytest.mark.django_db
    def test_forged_callback_is_refused(self, backend, sandbox, client):
        if "callback" not in self.report_modes:
            pytest.skip("the provider's reports are polled")
        row, sms, result = self.send_row(backend, 21)
        message = self.accepted_message(sandbox, sms, result)
        forged = self.forge(*self.callback_request(sandbox, message, True))
        if forged is None:
            pytest.skip("the provider does not sign its reports (the URL token protects them)")
        response = self.post_callback(client, *forged)
        assert response.status_code == 403
        row.refresh_from_db()
        assert row.status == MessageStatus.SENT

    @pytest.mark.django_db
    @pytest.mark.parametrize("delivered", [True, False], ids=["delivered", "undelivered"])
    def test_poll_to_final_state(self, backend, sandbox, delivered):
        if "poll" not in self.report_modes:
            pytest.skip("the provider's reports are posted")
        row, sms, result = self.send_row(backend, 22)
        pending = backend.query_status([row])
        counts = apply_delivery_reports(pending, provider=self.alias, source=EventSource.POLL)
        assert counts["applied"] == 0  # on its way: nothing final yet
        self.set_final_status(sandbox, self.accepted_message(sandbox, sms, result), delivered)
        reports = backend.query_status([row])
        assert len(reports) == 1, reports
        apply_delivery_reports(reports, provider=self.alias, source=EventSource.POLL)
        self.assert_final(row, delivered, EventSource.POLL)

    def assert_final(self, row: Message, delivered: bool, source: str) -> None:
        row.refresh_from_db()
        if delivered:
            assert row.status == MessageStatus.DELIVERED
            assert row.delivered_at is not None
            assert row.error_code == ""
        else:
            assert row.status == MessageStatus.UNDELIVERED
            assert row.error_code and row.error_message
            assert row.delivered_at is None
        assert row.events.filter(source=source, new_status=row.status).count() == 1

    # --- credentials -----------------------------------------------------------------------
    def test_credentials_never_shown(self, backend, sandbox, caplog):
        secrets = [s for s in self.secrets(sandbox) if s]
        assert secrets
        caplog.set_level(logging.DEBUG)
        results = [backend.send(self.outgoing(backend, 30))]
        self.force_refused(sandbox, "+79005550031")
        results.append(backend.send(self.outgoing(backend, 31)))
        sandbox.configure(fail_rate=1.0)
        results.append(backend.send(self.outgoing(backend, 32)))
        sandbox.configure(fail_rate=0.0)
        self.force_provider_error(sandbox)
        results.append(backend.send(self.outgoing(backend, 33)))
        assert [r.status for r in results] == [S.ACCEPTED, S.REJECTED, S.RETRY, S.PROVIDER_ERROR]
        shown = [repr(backend), str(backend), caplog.text]
        shown += [f"{r.raw!r} {r.error_message} {r.error_code} {r!r}" for r in results]
        for secret in secrets:
            for text in shown:
                assert secret not in text
