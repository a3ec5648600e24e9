"""The steps every HTTP provider shares, written once (as django-anymail's requests backend).

A provider subclass keeps its request format, its answer parsing and its code tables; the
transport is handled here. ``send_request(messages)`` runs the steps for one request:

1. ``build_request(messages) -> HTTPRequest``: the provider's format. A ValidationError
   refuses the messages without a request (``REJECTED``).
2. ``post(request) -> Answer``: sends it on the shared keep-alive session and reads the JSON.
   A connection error, timeout, TLS or proxy failure, an HTTP 5xx, 401/403 (and, for a
   provider whose API answers only 200s, any other status) raise ``ProviderError``.
3. ``parse_answer(answer, messages) -> list[SendResult]``: the provider's codes, one result
   per message in order; None when the answer is not the API's (then the HTTP status
   decides: ``unexpected_answer``).

Failures are named by kind (``timeout``, ``tls_error``, ``server_error``...); the class tables
``failure_statuses`` (kind -> SendStatus and error code) and ``failure_messages`` (kind -> a
text for people) turn a kind into a SendResult, so a provider changes wording or codes as
data. Every result, stored answer and log line is scrubbed of ``secrets()``.

Options (all backends here): ``base_url``, ``pool_size`` (32), ``connect_timeout`` (10 s),
``read_timeout`` (60 s), ``proxy``, ``ca_bundle``.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import threading
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any, ClassVar
from urllib.parse import urlsplit, urlunsplit

import requests
from django.core import checks
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from ..exceptions import ConfigurationError, ProviderError
from .base import BaseBackend, OutgoingSMS, SendResult, SendStatus
from .options import AccountChecks, Option, to_http_url

#: Characters of a non-JSON answer (or an exception text) kept in ``raw``.
RAW_EXCERPT = 500
JSON_CONTENT_TYPE = "application/json; charset=utf-8"

S = SendStatus
#: Failure kind -> (SendStatus, error_code); ``{status}`` is the HTTP status.
FAILURE_STATUSES: dict[str, tuple[SendStatus, str]] = {
    "timeout": (S.RETRY, "timeout"),
    "proxy_error": (S.RETRY, "proxy_error"),
    "connection_error": (S.RETRY, "connection_error"),
    "request_error": (S.RETRY, "request_error"),
    "tls_error": (S.PROVIDER_ERROR, "tls_error"),  # every message would fail: pause
    "server_error": (S.RETRY, "http_{status}"),  # 5xx
    "credentials": (S.PROVIDER_ERROR, "http_{status}"),  # 401, 403
    "wrong_address": (S.PROVIDER_ERROR, "http_{status}"),  # 3xx, 404, 405
    "throttled": (S.RETRY, "http_{status}"),  # 408, 429
    "bad_response": (S.RETRY, "bad_response"),  # 200, but not the API's answer
    "http_error": (S.REJECTED, "http_{status}"),  # any other status without a code
}
#: Failure kind -> a text for people: %(provider)s, %(host)s, %(status)d, %(seconds)s,
#: %(reason)s (the exception, or "HTTP 503"; also as %(error)s) and %(env)s are filled in.
FAILURE_MESSAGES: dict[str, Any] = {
    "timeout": _(
        "%(provider)s (%(host)s) did not answer within %(seconds)s s; the message will be retried."
    ),
    "proxy_error": _(
        "Could not reach %(provider)s (%(host)s) through the proxy; the message will be retried."
    ),
    "connection_error": _(
        "Could not reach %(provider)s (%(host)s): %(reason)s. The message will be retried."
    ),
    "request_error": _(
        "Could not reach %(provider)s (%(host)s): %(reason)s. The message will be retried."
    ),
    "tls_error": _(
        "The TLS certificate of %(provider)s could not be verified (%(host)s). If a corporate "
        "proxy re-signs HTTPS, add ?ca_bundle=/path/to/ca.pem to %(env)s."
    ),
    "server_error": _(
        "%(provider)s had a server error (HTTP %(status)d); the message will be retried."
    ),
    "credentials": _(
        "%(provider)s refused the credentials (HTTP %(status)d): check them in %(env)s."
    ),
    "wrong_address": _(
        "The address of %(provider)s answered HTTP %(status)d: check base_url in %(env)s."
    ),
    "throttled": _(
        "%(provider)s gave an answer that is not the API's (HTTP %(status)d); the message "
        "will be retried."
    ),
    "bad_response": _(
        "%(provider)s gave an answer that is not the API's (HTTP %(status)d); the message "
        "will be retried."
    ),
    "http_error": _("%(provider)s refused the request (HTTP %(status)d)."),
}


def _environ_ca_bundle() -> str:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or ""


@dataclass
class HTTPRequest:
    """One request to a provider: its URL and body (``json``, or ``data``: form fields or
    bytes); ``method="GET"`` with ``params`` for a provider's read endpoints (status, balance)."""

    url: str
    json: Any = None  # encoded by encode_payload: UTF-8 without a BOM or \u escapes
    data: Any = None
    headers: dict[str, str] | None = None
    method: str = "POST"
    params: Any = None  # the query string's parameters


@dataclass
class Answer:
    """A provider's HTTP answer, read once."""

    http_status: int
    data: Any  # the decoded JSON; None when the body is not JSON
    raw: Any  # what a SendResult keeps: the JSON, or {"http_status", "body": an excerpt}
    response: requests.Response | None = field(default=None, repr=False)


class HTTPBackend(BaseBackend):
    """A backend that talks HTTP: subclass it, set ``default_base_url``, and write
    ``build_request`` and ``parse_answer`` (``configure_session`` for auth headers)."""

    declared_options = (
        Option("base_url", to_http_url, "", "the provider's address (default: its own)"),
        Option("pool_size", int, 32, "keep-alive connections (>= the worker's concurrency)", 1),
        Option("connect_timeout", float, 10.0, "seconds to connect", minimum=0.001),
        Option("read_timeout", float, 60.0, "seconds to wait for the answer", minimum=0.001),
        Option("proxy", str, "", "an HTTP(S) proxy URL (the environment's HTTPS_PROXY else)"),
        Option("ca_bundle", str, "", "a CA file or directory to trust; TLS is always verified"),
    )
    #: The provider's address when the URL names no host.
    default_base_url: ClassVar[str] = ""
    #: Whether an answer with a 3xx/4xx status may carry the provider's own code (MegaFon);
    #: when False, such an answer is classified by its HTTP status alone.
    reads_error_answers: ClassVar[bool] = True
    failure_statuses: ClassVar[dict[str, tuple[SendStatus, str]]] = FAILURE_STATUSES
    failure_messages: ClassVar[dict[str, Any]] = FAILURE_MESSAGES
    #: Whether the URL's user and password go as HTTP Basic auth (MegaFon, MTS, Twilio).
    basic_auth: ClassVar[bool] = False
    #: What ``check`` says about the account's settings (E010, W010, W011); None: nothing.
    account_checks: ClassVar[AccountChecks | None] = None

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.pool_size: int = self.options["pool_size"]
        self.connect_timeout: float = self.options["connect_timeout"]
        self.read_timeout: float = self.options["read_timeout"]
        self.proxy: str = self.options["proxy"]
        self.ca_bundle: str = self.options["ca_bundle"]
        self.base_url = self._address(self.options["base_url"] or self.default_base_url)
        self.host = urlsplit(self.base_url).netloc
        self._auth_header = self._basic_auth_header() if self.basic_auth else ""
        self.logger = logging.getLogger(type(self).__module__)
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    def _address(self, base_url: str) -> str:
        """``base_url`` without credentials: they move to the user/password options."""
        if not base_url:
            raise ConfigurationError(
                f"{self.env_variable}: no address for {self.display_name}: put its host in the URL"
            )
        parts = urlsplit(base_url)
        if not (parts.username or parts.password):
            return base_url
        for option, value in (
            (self.url_user_option, parts.username),
            (self.url_password_option, parts.password),
        ):
            if option and value and not self.options.get(option):
                self.options[option] = value
        return urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))

    def _basic_auth_header(self) -> str:
        user = self.options.get(self.url_user_option or "", "")
        password = self.options.get(self.url_password_option or "", "")
        token = base64.b64encode(f"{user}:{password}".encode()).decode("ascii")
        return f"Basic {token}"

    @property
    def timeout(self) -> tuple[float, float]:
        """``timeout=`` for requests: (connect, read)."""
        return (self.connect_timeout, self.read_timeout)

    # --- the steps -----------------------------------------------------------------------
    def send(self, sms: OutgoingSMS) -> SendResult:
        """Send one message; every outcome, failures included, is a SendResult."""
        return self.send_request([sms])[0]

    def send_many(self, batch: list[OutgoingSMS]) -> list[SendResult]:
        """Send ``batch`` in the requests ``split_batch`` makes; results in ``batch``'s order."""
        results: list[SendResult | None] = [None] * len(batch)
        for indexes in self.split_batch(batch):
            answers = self.send_request([batch[i] for i in indexes])
            for index, result in zip(indexes, answers, strict=True):
                results[index] = result
        return results  # type: ignore[return-value]

    def split_batch(self, batch: list[OutgoingSMS]) -> list[list[int]]:
        """Indexes of ``batch`` per request: up to ``max_batch_size`` each, in order."""
        size = max(1, self.max_batch_size)
        return [list(range(i, min(i + size, len(batch)))) for i in range(0, len(batch), size)]

    def send_request(self, messages: list[OutgoingSMS]) -> list[SendResult]:
        """One request for ``messages``: build, post, parse. One SendResult per message, in
        order, scrubbed of credentials; never raises for provider or network trouble."""
        try:
            request = self.build_request(messages)
        except ValidationError as exc:
            return [self.refused_before_sending(exc) for _ in messages]
        try:
            answer = self.post(request)
            results = self.parse_answer(answer, messages)
            if results is None:
                raise self.unexpected_answer(answer)
        except ProviderError as exc:
            self._log(exc.result, messages)
            return [replace(exc.result) for _ in messages]
        results = [self.scrub(result) for result in results]
        for result in results:
            if result.status is S.PROVIDER_ERROR:
                self._log(result, messages)
                break
        else:
            if self.logger.isEnabledFor(logging.DEBUG):
                outcome = ", ".join(f"{r.status} {r.error_code}".strip() for r in results[:3])
                self.logger.debug(
                    "%s %s: HTTP %s, %s",
                    self.display_name,
                    _ids(messages),
                    answer.http_status,
                    outcome,
                )
        return results

    def build_request(self, messages: list[OutgoingSMS]) -> HTTPRequest:
        """The request that sends ``messages`` (raise ValidationError to refuse them)."""
        raise NotImplementedError(f"{type(self).__name__} must implement build_request()")

    def parse_answer(self, answer: Answer, messages: list[OutgoingSMS]) -> list[SendResult] | None:
        """One SendResult per message from the provider's answer; None when it is not the
        API's answer (``unexpected_answer`` then decides by the HTTP status)."""
        raise NotImplementedError(f"{type(self).__name__} must implement parse_answer()")

    def post(self, request: HTTPRequest) -> Answer:
        """POST ``request`` on the shared session and read the answer; ProviderError for a
        transport failure, an HTTP 5xx or 401/403 (see ``reads_error_answers``)."""
        data, headers = request.data, request.headers
        if request.json is not None:
            data = self.encode_payload(request.json)
            if self.session.headers.get("Content-Type") != JSON_CONTENT_TYPE:
                headers = {"Content-Type": JSON_CONTENT_TYPE, **(headers or {})}
        try:
            response = self.session.request(
                request.method,
                request.url,
                params=request.params,
                data=data,
                headers=headers,
                timeout=self.timeout,
                allow_redirects=False,
            )
        except requests.RequestException as exc:
            raise self.failure(transport_failure_kind(exc), exc=exc) from exc
        answer = self.read_answer(response)
        if answer.http_status >= 500:
            raise self.failure("server_error", answer=answer)
        if answer.http_status in (401, 403):
            raise self.failure("credentials", answer=answer)
        if answer.http_status != 200 and not self.reads_error_answers:
            raise self.unexpected_answer(answer)
        return answer

    @staticmethod
    def encode_payload(payload: Any) -> bytes:
        """UTF-8 JSON without a byte-order mark, ``\\u`` escapes or spaces."""
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")

    @staticmethod
    def read_answer(response: requests.Response) -> Answer:
        """The answer's JSON (None when it is not JSON) and what to keep of it."""
        status = response.status_code
        try:
            data = response.json()
        except ValueError:
            data = None
        if data is None:
            raw: Any = {"http_status": status, "body": response.text[:RAW_EXCERPT]}
        else:
            raw = data if status == 200 else {"http_status": status, "body": data}
        return Answer(status, data, raw, response)

    # --- failures ------------------------------------------------------------------------
    def unexpected_answer(self, answer: Answer) -> ProviderError:
        """The failure of an answer without the provider's own code, by its HTTP status."""
        status = answer.http_status
        if status == 200:
            kind = "bad_response"
        elif status in (408, 429):
            kind = "throttled"
        elif 300 <= status < 400 or status in (404, 405):
            kind = "wrong_address"  # every message would get this: the address is wrong
        else:
            kind = "http_error"
        return self.failure(kind, answer=answer)

    def failure(
        self, kind: str, *, answer: Answer | None = None, exc: Exception | None = None
    ) -> ProviderError:
        """A ProviderError whose ``result`` is the scrubbed SendResult for failure ``kind``."""
        status, code = self.failure_statuses[kind]
        http_status = answer.http_status if answer else 0
        reason = type(exc).__name__ if exc else f"HTTP {http_status}"
        read = not isinstance(exc, requests.ConnectTimeout)
        values = {
            "provider": self.display_name,
            "host": self.host,
            "status": http_status,
            "seconds": self.read_timeout if read else self.connect_timeout,
            "reason": reason,
            "error": reason,
            "env": self.env_variable,
        }
        message = str(self.failure_messages[kind]) % values
        if answer is not None:
            raw = answer.raw
        else:
            raw = {"error": reason, "detail": str(exc)[:RAW_EXCERPT]}
        result = SendResult(
            status,
            error_code=code.format(status=http_status),
            error_message=message,
            raw=raw,
            ambiguous=failure_is_ambiguous(kind, exc),
        )
        result = self.scrub(result)
        return ProviderError(result.error_message, result)

    @staticmethod
    def refused_before_sending(exc: ValidationError) -> SendResult:
        """A message the provider's rules refuse, so no request was made."""
        message = " ".join(exc.messages)
        return SendResult(
            S.REJECTED,
            error_code=exc.code or "invalid",
            error_message=message,
            raw={"error": "not sent: refused before sending", "detail": message},
        )

    def _log(self, result: SendResult, messages: list[OutgoingSMS]) -> None:
        level = logging.ERROR if result.status is S.PROVIDER_ERROR else logging.WARNING
        detail = result.raw.get("detail") if isinstance(result.raw, dict) else None
        self.logger.log(
            level,
            "%s %s: %s: %s%s",
            self.display_name,
            _ids(messages),
            result.error_code,
            result.error_message,
            f" ({detail})" if detail else "",
        )

    # --- configuration -------------------------------------------------------------------
    def check(self) -> list[checks.CheckMessage]:
        """The base's checks, then ``account_checks``: missing credentials (E010), no default
        sender (W010), a remote host over plain HTTP (W011)."""
        problems = super().check()
        if self.account_checks is not None:
            problems += self.account_checks.problems(self)
        return problems

    # --- credentials ---------------------------------------------------------------------
    def secrets(self) -> list[str]:
        """What never leaves the backend: the secret options' values, the URL's user (a login
        shows in answers and URLs; one under 3 characters would mangle other text, so it is
        left), the Basic auth token and a proxy password."""
        table = self.option_table()
        values = [str(v) for k, v in self.options.items() if v and k in table and table[k].secret]
        user = str(self.options.get(self.url_user_option or "") or "")
        if len(user) >= 3:
            values.append(user)
        if self._auth_header:
            values.append(self._auth_header.removeprefix("Basic "))
        proxy_password = urlsplit(self.proxy).password if self.proxy else None
        return values + ([proxy_password] if proxy_password else [])

    @cached_property
    def _secrets(self) -> list[str]:
        # Longest first, so a secret that contains another is replaced whole.
        return sorted(set(self.secrets()), key=len, reverse=True)

    def redact(self, value: Any) -> Any:
        """``value`` (a text, or JSON-like data) with every secret replaced by ``***``."""
        if isinstance(value, str):
            for secret in self._secrets:
                value = value.replace(secret, "***")
            return value
        if isinstance(value, dict):
            return {k: self.redact(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.redact(v) for v in value]
        return value

    def scrub(self, result: SendResult) -> SendResult:
        """``result`` without credentials in its texts or its stored answer."""
        if self._secrets:
            result.error_message = self.redact(result.error_message)
            result.raw = self.redact(result.raw)
        return result

    # --- the HTTP session ----------------------------------------------------------------
    @property
    def session(self) -> requests.Session:
        """One keep-alive session for all threads; its pool holds ``pool_size`` connections."""
        if self._session is None:
            with self._session_lock:
                if self._session is None:
                    self._session = self._new_session()
        return self._session

    def _new_session(self) -> requests.Session:
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(
            pool_connections=2, pool_maxsize=self.pool_size, max_retries=0
        )
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        # The environment (HTTPS_PROXY, NO_PROXY, REQUESTS_CA_BUNDLE) is read once here,
        # not on every request as requests does (a sixth of a send's CPU), and the options
        # win over it (requests would let the environment win over a session's settings).
        session.trust_env = False
        session.verify = self.ca_bundle or _environ_ca_bundle() or True
        if self.proxy:
            session.proxies = {"https": self.proxy, "http": self.proxy}
        else:
            session.proxies = requests.utils.get_environ_proxies(self.base_url)
        session.headers["User-Agent"] = "crm-sms"
        if self._auth_header:
            # An auth object, not a header, so a ~/.netrc entry cannot replace the credentials.
            session.auth = BasicAuth(self._auth_header)
        self.configure_session(session)
        return session

    def configure_session(self, session: requests.Session) -> None:
        """Add the provider's headers or auth to a new session."""

    def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.alias!r} {self.base_url}>"


class BasicAuth(requests.auth.AuthBase):
    """A precomputed Basic ``Authorization`` header for a session (an auth object, not a
    header, so a ~/.netrc entry cannot replace it); its repr never shows the credentials."""

    def __init__(self, header: str):
        self._header = header

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self._header
        return request

    def __repr__(self) -> str:
        return "<BasicAuth ***>"


def requests_by_key(
    batch: list[OutgoingSMS],
    key: Callable[[OutgoingSMS], Hashable],
    number: Callable[[OutgoingSMS], str],
    size: int,
) -> list[list[int]]:
    """Indexes of ``batch`` per request, for a provider that answers per number: messages of
    one ``key`` (a sender, a text) each, up to ``size``, no ``number`` twice in one (answers
    to a repeated number could not be told apart). A message joins the first request of its
    key with room; requests come in the order they were started."""
    requests_: list[list[int]] = []
    open_requests: dict[Hashable, list[tuple[list[int], set[str]]]] = {}
    for index, sms in enumerate(batch):
        group, phone = key(sms), number(sms)
        for items, phones in open_requests.setdefault(group, []):
            if len(items) < size and phone not in phones:
                items.append(index)
                phones.add(phone)
                break
        else:
            items = [index]
            open_requests[group].append((items, {phone}))
            requests_.append(items)
    return requests_


def transport_failure_kind(exc: requests.RequestException) -> str:
    """The failure kind of an exception from ``requests`` (most specific first)."""
    if isinstance(exc, requests.Timeout):
        return "timeout"
    if isinstance(exc, requests.exceptions.SSLError):
        return "tls_error"
    if isinstance(exc, requests.exceptions.ProxyError):
        return "proxy_error"
    if isinstance(exc, requests.ConnectionError):
        return "connection_error"
    return "request_error"


#: Failure kinds whose request body reached the provider: it may have taken the message.
AMBIGUOUS_KINDS = frozenset({"server_error", "bad_response"})


def failure_is_ambiguous(kind: str, exc: Exception | None = None) -> bool:
    """Whether a failure of ``kind`` may have come after the provider took the message: a read
    timeout or a connection lost after the request was written, a 5xx, a garbled answer. A
    connect timeout, a refused connection, DNS, TLS and proxy failures happen before sending."""
    if kind in AMBIGUOUS_KINDS:
        return True
    if kind == "timeout":
        return not isinstance(exc, requests.ConnectTimeout)
    if kind == "connection_error":
        return not _failed_to_connect(exc)
    return False


def _failed_to_connect(exc: Exception | None) -> bool:
    """A ``requests.ConnectionError`` raised before the request was sent (urllib3's
    NewConnectionError: refused, unreachable, DNS) rather than a connection lost later."""
    from urllib3.exceptions import NameResolutionError, NewConnectionError

    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, NewConnectionError | NameResolutionError):
            return True
        reason = getattr(exc, "reason", None)
        inner = exc.args[0] if exc.args and isinstance(exc.args[0], BaseException) else None
        exc = reason if isinstance(reason, BaseException) else inner or exc.__cause__
    return False


def _ids(messages: list[OutgoingSMS]) -> str:
    ids = ", ".join(sms.msg_id for sms in messages[:3])
    return ids + (", ..." if len(messages) > 3 else "")
