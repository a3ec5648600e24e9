"""SMPPBackend: sends over one long-lived SMPP 3.4 connection and turns deliver_sm receipts
into DeliveryReports. See the package docstring for the URL and the options."""

from __future__ import annotations

import itertools
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Mapping
from datetime import UTC
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from django.core import checks
from django.core.exceptions import ValidationError
from django.utils.translation import gettext as _

from ...phones import international_digits
from ..base import (
    BaseBackend,
    ConfigurationError,
    DeliveryReport,
    OutgoingSMS,
    RetrySafety,
    SendResult,
    SendStatus,
)
from ..options import Option, to_int, to_timezone
from . import codes
from .parts import encode_text
from .pending import Failure, Pending
from .receipts import as_text, receipt_report
from .session import SMPPSession

if TYPE_CHECKING:
    from ...conf import SMSURL

logger = logging.getLogger("crm_sms.backends.smpp")

S = SendStatus
DEFAULT_PORT = 2775  # IANA "smpp"
DEFAULT_TLS_PORT = 3550  # IANA "ssmpp"
SENDER_MAX_LENGTH = 11  # an alphanumeric sender (TON 5) is at most 11 characters
#: Session failures that are the provider's or the configuration's: every message would fail.
PROVIDER_FAILURES = frozenset(
    {"connect_failed", "tls_error", "bind_refused", "bind_closed", "bind_timeout"}
)
PART_RETRIES = 3  # resubmits of a throttled later part, so a long text is not left half-sent


def _ascii_at_most(limit: int):
    """A converter for a C-octet-string field of SMPP 3.4 (smpplib would silently cut it)."""

    def convert(value: Any) -> str:
        text = str(value)
        if len(text) > limit or not text.isascii():
            raise ValueError(f"must be at most {limit} ASCII characters (SMPP 3.4)")
        return text

    convert.__name__ = f"ASCII text of at most {limit} characters"
    return convert


def _long_text(value: Any) -> str:
    text = str(value).strip().lower()
    if text not in ("udh", "payload"):
        raise ValueError("must be udh or payload")
    return text


def _ton_npi(value: Any) -> int | None:
    number = to_int(value)
    if not 0 <= number <= 255:
        raise ValueError("must be 0 to 255")
    return number


class SMPPBackend(BaseBackend):
    """An ESME bound as a transceiver: submit_sm out, deliver_sm receipts in."""

    display_name = "SMPP"
    supports_callbacks = False  # receipts come back on the connection itself
    receives_reports = True
    default_tls = False
    # No de-duplication key, and query_sm needs the SMSC's id, which a lost answer never gave:
    # an ambiguous failure cannot be made safe to resend (it is "uncertain").
    retry_safety = RetrySafety.NONE
    declared_options = (
        Option("host", str, "", "the SMSC's host name or address (the URL's host)"),
        Option("port", int, None, "the SMSC's port (2775; 3550 with TLS)", minimum=1),
        Option("system_id", _ascii_at_most(15), "", "the SMPP login (the URL's user)"),
        Option("password", _ascii_at_most(8), "", "its password (the URL's password)", secret=True),
        Option("system_type", _ascii_at_most(12), "", "the bind's system_type, if required"),
        Option("tls", bool, None, "SMPP over TLS (smpps://)"),
        Option("window", int, 10, "submit_sm outstanding at once", minimum=1),
        Option("enquire_link", float, 30.0, "seconds of silence before a keep-alive", 0.05),
        Option("connect_timeout", float, 10.0, "seconds to connect", minimum=0.01),
        Option("response_timeout", float, 30.0, "seconds to wait for an answer", 0.01),
        Option("reconnect_backoff", float, 1.0, "seconds before the first reconnect", 0),
        Option("reconnect_backoff_max", float, 60.0, "the longest wait to reconnect", 0),
        Option("long_text", _long_text, "udh", "long texts: udh parts or one message_payload"),
        Option("registered_delivery", bool, True, "ask for delivery receipts"),
        Option("source_ton", _ton_npi, None, "sender TON (default 5 alphanumeric, 1 number)"),
        Option("source_npi", _ton_npi, None, "sender NPI (default 0 alphanumeric, 1 number)"),
        Option("dest_ton", _ton_npi, 1, "recipient TON"),
        Option("dest_npi", _ton_npi, 1, "recipient NPI"),
        Option("ca_bundle", str, "", "CA file or directory trusted for TLS"),
        Option("receipt_timezone", to_timezone, UTC, "the zone of YYMMDDhhmm receipt dates"),
    )
    url_user_option = "system_id"
    url_password_option = "password"

    def __init__(self, alias: str = "default", options: Mapping[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        opts = self.options
        self.tls: bool = self.default_tls if opts["tls"] is None else opts["tls"]
        self.host: str = opts["host"]
        self.port: int = opts["port"] or (DEFAULT_TLS_PORT if self.tls else DEFAULT_PORT)
        self.system_id: str = opts["system_id"]
        self.password: str = opts["password"]
        self.system_type: str = opts["system_type"]
        self.window: int = opts["window"]
        self.max_batch_size = self.window  # send_many pipelines a batch through the window
        self.enquire_link: float = opts["enquire_link"]
        self.connect_timeout: float = opts["connect_timeout"]
        self.response_timeout: float = opts["response_timeout"]
        self.long_text: str = opts["long_text"]
        self.registered_delivery: bool = opts["registered_delivery"]
        self.receipt_timezone = opts["receipt_timezone"]
        self._session: SMPPSession | None = None
        self._session_lock = threading.Lock()
        self._references = itertools.count(random.randrange(256))

    @classmethod
    def options_from_url(cls, url: SMSURL) -> dict[str, Any]:
        """``smpp://SYSTEM_ID:PASSWORD@host:port/?...``: the host part gives ``host`` and
        ``port`` (an SMSC has no base URL)."""
        options = super().options_from_url(url)
        options.pop("base_url", None)
        if url.host:
            try:
                parts = urlsplit(f"//{url.host}")
                port = parts.port
            except ValueError as exc:
                raise ConfigurationError(f"the port in {url.host!r} is not a number") from exc
            options["host"] = parts.hostname or ""
            if port:
                options["port"] = port
        return options

    # --- the connection ------------------------------------------------------------------
    @property
    def session(self) -> SMPPSession:
        """The connection (created on first use; its thread binds in the background)."""
        session = self._session
        if session is None:
            with self._session_lock:  # the worker's threads arrive together: one session
                if self._session is None:
                    self._session = self._new_session()
                session = self._session
        return session

    def _new_session(self) -> SMPPSession:
        return SMPPSession(
            host=self.host,
            port=self.port,
            system_id=self.system_id,
            password=self.password,
            system_type=self.system_type,
            ssl_context=self.ssl_context() if self.tls else None,
            window=self.window,
            enquire_link=self.enquire_link,
            connect_timeout=self.connect_timeout,
            response_timeout=self.response_timeout,
            backoff=self.options["reconnect_backoff"],
            backoff_max=self.options["reconnect_backoff_max"],
            on_deliver=self.parse_deliver_sm,
            name=self.alias,
        )

    def ssl_context(self) -> ssl.SSLContext:
        """Verifying TLS context; ``ca_bundle`` (a file or a directory) adds trusted CAs."""
        ca_bundle = self.options["ca_bundle"]
        if os.path.isdir(ca_bundle):
            return ssl.create_default_context(capath=ca_bundle)
        return ssl.create_default_context(cafile=ca_bundle or None)

    def open(self, timeout: float | None = None) -> bool:
        """Connect and bind now (waiting up to ``timeout``, default connect + response
        timeouts); True when bound. Sending and ``collect_reports`` do this on their own."""
        if timeout is None:
            timeout = self.connect_timeout + self.response_timeout
        return self.session.ready(timeout) is None

    def close(self) -> None:
        """Unbind and close; receipts not acknowledged yet are sent again on the next bind."""
        with self._session_lock:
            session, self._session = self._session, None
        if session is not None:
            session.close()

    # --- validation ----------------------------------------------------------------------
    def validate_sender(self, sender: str) -> None:
        """A number (up to 15 digits, optional +) or 1-11 printable Latin characters."""
        if not sender:
            raise ValidationError(_("The sender name is empty."), code="sender_empty")
        numeric = sender.lstrip("+").isdigit() and sender.isascii()
        if len(sender.lstrip("+")) > (15 if numeric else SENDER_MAX_LENGTH):
            raise ValidationError(
                codes.text("sender_too_long", sender=sender), code="sender_too_long"
            )
        if not numeric and (not all(" " <= ch <= "~" for ch in sender) or sender != sender.strip()):
            raise ValidationError(
                codes.text("sender_characters", sender=sender), code="sender_characters"
            )

    def source_address_type(self, sender: str) -> tuple[int, int]:
        """(TON, NPI) of the sender: international 1/1 for a number, alphanumeric 5/0."""
        numeric = sender.lstrip("+").isdigit() and sender.isascii()
        ton, npi = (1, 1) if numeric else (5, 0)
        source_ton, source_npi = self.options["source_ton"], self.options["source_npi"]
        return (
            ton if source_ton is None else source_ton,
            npi if source_npi is None else source_npi,
        )

    def build_submits(self, sms: OutgoingSMS) -> list[dict[str, Any]]:
        """The submit_sm fields of each part of ``sms`` (raises ValidationError)."""
        sender = sms.sender or self.default_sender
        self.validate_sender(sender)
        self.validate_text(sms.text)
        digits = international_digits(sms.to, min_digits=7)
        try:
            encoded = encode_text(
                sms.text, next(self._references) % 256, use_payload=self.long_text == "payload"
            )
        except ValueError as exc:
            raise ValidationError(str(exc), code="text_too_long") from exc
        source_ton, source_npi = self.source_address_type(sender)
        common = {
            "source_addr_ton": source_ton,
            "source_addr_npi": source_npi,
            "source_addr": sender.lstrip("+") if source_ton == 1 else sender,
            "dest_addr_ton": self.options["dest_ton"],
            "dest_addr_npi": self.options["dest_npi"],
            "destination_addr": digits,
            "esm_class": encoded.esm_class,
            "data_coding": encoded.data_coding,
        }
        receipt = 1 if self.registered_delivery else 0
        if encoded.payload:
            return [{**common, "registered_delivery": receipt, "message_payload": encoded.parts[0]}]
        last = len(encoded.parts) - 1
        # One receipt per message, for its last part: its id is the provider_message_id.
        return [
            {**common, "registered_delivery": receipt if i == last else 0, "short_message": part}
            for i, part in enumerate(encoded.parts)
        ]

    # --- sending -------------------------------------------------------------------------
    def send(self, sms: OutgoingSMS) -> SendResult:
        """Send one message (see ``send_many``)."""
        return self.send_many([sms])[0]

    def send_many(self, batch: list[OutgoingSMS]) -> list[SendResult]:
        """Send ``batch`` through the window: every submit_sm is written without waiting for
        the previous answer (up to ``window`` outstanding across all threads), then the
        answers are collected by sequence number. Results in the order of ``batch``."""
        results: list[SendResult | None] = [None] * len(batch)
        plans: list[tuple[int, list[dict[str, Any]]]] = []
        for index, sms in enumerate(batch):
            try:
                plans.append((index, self.build_submits(sms)))
            except ValidationError as exc:
                message = " ".join(exc.messages)
                results[index] = SendResult(
                    S.REJECTED,
                    error_code=exc.code or "invalid",
                    error_message=message,
                    raw={"error": "not sent: refused before sending", "detail": message},
                )
        if plans:
            failure = self.session.ready(self.connect_timeout + self.response_timeout)
            if failure is not None:
                for index, _parts in plans:
                    results[index] = self.failure_result(failure)
            else:
                submitted = [(index, parts, self._submit(parts)) for index, parts in plans]
                for index, parts, pendings in submitted:
                    self._wait(pendings)
                    self._resubmit_parts(parts, pendings)
                    results[index] = self.outcome(batch[index], pendings)
        return [result for result in results if result is not None]  # all are set

    def _submit(self, parts: list[dict[str, Any]]) -> list[Pending]:
        slot_timeout = self.response_timeout + 1
        return [self.session.submit("submit_sm", fields, slot_timeout) for fields in parts]

    def _wait(self, pendings: list[Pending]) -> None:
        for pending in pendings:
            # The session expires an unanswered request after response_timeout; this bound
            # only guards against a session thread that died.
            if not pending.wait(self.response_timeout + 5):
                pending.finish(error="timeout")

    def _resubmit_parts(self, parts: list[dict[str, Any]], pendings: list[Pending]) -> None:
        """When some parts of a long text were accepted and others throttled (or not sent),
        send just those again, briefly: the whole text again would repeat the accepted parts."""
        for attempt in range(PART_RETRIES):
            accepted = [self._accepted(p) for p in pendings]
            retry = [i for i, p in enumerate(pendings) if self._worth_resubmitting(p)]
            if not any(accepted) or not retry:
                return
            time.sleep(min(self.response_timeout, 0.2 * 2**attempt))
            if self.session.ready(self.connect_timeout) is not None:
                return
            for i in retry:
                pendings[i] = self.session.submit("submit_sm", parts[i], self.response_timeout)
            self._wait([pendings[i] for i in retry])

    @staticmethod
    def _accepted(pending: Pending) -> bool:
        return pending.response is not None and pending.response.status == codes.ESME_ROK

    @staticmethod
    def _worth_resubmitting(pending: Pending) -> bool:
        if pending.error == "not_sent":
            return True
        response = pending.response
        return response is not None and codes.classify_status(response.status)[0] is S.RETRY

    def outcome(self, sms: OutgoingSMS, pendings: list[Pending]) -> SendResult:
        """The SendResult of one message from the fates of its parts."""
        ids = [as_text(p.response.message_id) if self._accepted(p) else "" for p in pendings]
        count = len(pendings)
        raw: dict[str, Any] = {"parts": count, "message_ids": ids}
        if all(ids):
            return SendResult(S.ACCEPTED, provider_message_id=ids[-1], raw=raw)
        if any(p.ambiguous for p in pendings):
            return self.ambiguous_result(pendings, raw)
        first = next(i for i, p in enumerate(pendings) if not self._accepted(p))
        pending = pendings[first]
        if pending.error:  # never written: nothing reached the SMSC from this part
            status, code, message = S.RETRY, "not_connected", codes.text("not_sent")
        else:
            raw["command_status"] = pending.response.status
            status, message = codes.classify_status(pending.response.status)
            code = codes.status_name(pending.response.status)
        if any(ids):
            # Some parts reached the subscriber: sending the text again would repeat them.
            status, code = S.REJECTED, "partial"
            message = codes.text(
                "partial", accepted=sum(map(bool, ids)), count=count, part=first + 1, reason=message
            )
        if status is S.PROVIDER_ERROR:
            logger.error("SMPP %s: %s: %s", sms.msg_id, code, message)
        return SendResult(status, error_code=code, error_message=message, raw=raw)

    def ambiguous_result(self, pendings: list[Pending], raw: dict[str, Any]) -> SendResult:
        """The connection was lost (or the SMSC fell silent) after a submit_sm was written and
        before its answer: the SMSC may have accepted it. SMPP has no de-duplication key, so
        sending it again may deliver it twice.

        ``SendResult.ambiguous`` is set: with ``retry_safety`` NONE the outbox holds the
        message as "uncertain" until an operator confirms a resend (never a silent resend)."""
        reasons = sorted({p.error for p in pendings if p.ambiguous})
        raw.update(ambiguous=True, reason=", ".join(reasons))
        return SendResult(
            S.RETRY,
            error_code="ambiguous",
            error_message=codes.text("ambiguous"),
            raw=raw,
            ambiguous=True,
        )

    def failure_result(self, failure: Failure) -> SendResult:
        """The SendResult of every message while the connection cannot be bound: a provider
        error (the campaign pauses) when the SMSC cannot be reached or refuses the bind, a
        retry while the connection is still being made."""
        raw: dict[str, Any] = {"error": failure.kind, "detail": failure.detail}
        values = {
            "where": f"{self.host}:{self.port}",
            "env": self.env_variable,
            "detail": failure.detail,
            "seconds": self.response_timeout,
        }
        if failure.kind not in PROVIDER_FAILURES:  # not bound yet, or closing: passing
            message = codes.text("not_connected", **values)
            return SendResult(S.RETRY, error_code="not_connected", error_message=message, raw=raw)
        code = failure.kind
        if failure.kind == "bind_refused":
            raw["command_status"] = status = failure.code or 0
            code = codes.status_name(status)
            values["reason"] = codes.CODES[status].message() if status in codes.CODES else code
        message = codes.text(failure.kind, **values)
        return SendResult(S.PROVIDER_ERROR, error_code=code, error_message=message, raw=raw)

    # --- delivery receipts ---------------------------------------------------------------
    def parse_deliver_sm(self, pdu: Any) -> DeliveryReport | None:
        """A deliver_sm as a DeliveryReport, or None (see ``receipts.receipt_report``).
        Runs in the session thread."""
        return receipt_report(pdu, self.receipt_timezone, self.alias)

    def apply_received_reports(self) -> dict[str, int]:
        """Apply the receipts received so far; each is acknowledged after it is written."""
        from .receipts import apply_smpp_receipts

        return apply_smpp_receipts(self)

    def collect_reports(self) -> list[DeliveryReport]:
        """The receipts received since the last call, acknowledged to the SMSC now (call it
        every few seconds: the SMSC waits for the acknowledgements). Starts the connection, so
        a worker that only collects still binds and receives what the SMSC kept for it."""
        session = self.session
        session.start()
        items = session.take_receipts()
        session.acknowledge([token for _report, token in items])
        return [report for report, _token in items]

    # --- configuration -------------------------------------------------------------------
    def check(self) -> list[checks.CheckMessage]:
        """Missing address or credentials (E010), a missing (W010) or refused (E004) sender.
        (Option values that do not fit, like a password over 8 characters, are E008.)"""
        problems = super().check()
        example = "smpp://SYSTEM_ID:PASSWORD@smsc.example.com:2775/?sender=MyCompany"
        missing = [
            label
            for label, value in (
                ("host", self.host),
                ("system_id", self.system_id),
                ("password", self.password),
            )
            if not value
        ]
        if missing:
            problems.append(
                checks.Error(
                    f"Provider {self.alias!r}: the SMPP {', '.join(missing)} missing.",
                    hint=f"Set {self.env_variable}={example} (URL-encode special characters "
                    "of the password).",
                    id="crm_sms.E010",
                )
            )
        if not self.default_sender:
            problems.append(
                checks.Warning(
                    f"Provider {self.alias!r}: no default sender; every send must pass sender=…",
                    hint=f"Add ?sender=YourName to {self.env_variable}.",
                    id="crm_sms.W010",
                )
            )
        return problems

    def __repr__(self) -> str:
        scheme = "smpps" if self.tls else "smpp"
        return f"<{type(self).__name__} {self.alias!r} {scheme}://{self.host}:{self.port}>"


class SMPPSBackend(SMPPBackend):
    """SMPP over TLS (``smpps://``; default port 3550)."""

    default_tls = True
