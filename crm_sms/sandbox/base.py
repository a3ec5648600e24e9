"""What a provider module of the sandbox builds on: the request it gets, the reply it gives,
and :class:`ProviderEmulator`, the class a provider subclasses.

A second provider is one module with one small class::

    class SmsruEmulator(ProviderEmulator):
        name, title, scheme = "smsru", "SMS.RU", "smsru"
        routes = {("POST", "/sms/send"): "send", ("GET", "/sms/status"): "status"}

        def authenticate(self, request): ...  # api_id in the form instead of Basic auth
        def send(self, request): ...          # -> Reply(200, {...}, reports=[accepted, ...])
        def status(self, request): ...
        def delivery_report(self, message, delivered): ...
        def encode_report(self, message, report): ...  # a form with data[] entries

plus its line in ``EMULATORS``; the server, failure injection, rate limit and report posting
are shared (:mod:`crm_sms.sandbox.server`).
"""

from __future__ import annotations

import importlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import parse_qs, quote, urlsplit

if TYPE_CHECKING:
    from .server import SandboxServer

JSON = "application/json; charset=utf-8"

#: The emulated providers, by the name ``SandboxServer(provider=...)`` and ``sms_sandbox
#: --provider`` take: one line per provider module.
EMULATORS = {
    "megafon": "crm_sms.sandbox.megafon.MegafonEmulator",
    "smsru": "crm_sms.sandbox.smsru.SmsRuEmulator",
    "smsc": "crm_sms.sandbox.smsc.SmscEmulator",
    "sms4b": "crm_sms.sandbox.sms4b.Sms4bEmulator",
    "beeline": "crm_sms.sandbox.beeline.BeelineEmulator",
    "mts": "crm_sms.sandbox.mts.MtsEmulator",
    "smsuslugi": "crm_sms.sandbox.smsuslugi.SmsUslugiEmulator",
    "twilio": "crm_sms.sandbox.twilio.TwilioEmulator",
}


@dataclass
class RecordedRequest:
    """One request as it arrived: method, path, headers and the raw body bytes.

    Also readable as a mapping (``record["body"]``), for tests that prefer that."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received_at: float = field(default_factory=time.time)

    def __getitem__(self, key: str) -> Any:
        return getattr(self, key)

    def header(self, name: str, default: str | None = None) -> str | None:
        """A header by case-insensitive name."""
        name = name.lower()
        for key, value in self.headers.items():
            if key.lower() == name:
                return value
        return default

    @property
    def route(self) -> str:
        """The path without the query string and the trailing slash: what routes match."""
        return self.path.split("?", 1)[0].rstrip("/")

    @property
    def query(self) -> dict[str, list[str]]:
        """The query string's parameters."""
        return parse_qs(urlsplit(self.path).query, keep_blank_values=True)

    def form(self) -> dict[str, list[str]]:
        """The body parsed as an HTML form (``application/x-www-form-urlencoded``)."""
        return parse_qs(self.body.decode("utf-8", "replace"), keep_blank_values=True)

    def json(self) -> Any:
        """The body parsed as JSON (raises ValueError when it is not)."""
        return json.loads(self.body.decode("utf-8"))


@dataclass
class Reply:
    """A provider's answer to one request. ``reports``: the messages it accepted, whose delivery
    reports the sandbox posts (to each one's ``callback_url``) once the answer is written."""

    status: int = 200
    body: bytes | str | dict | list = b""  # a dict or list is sent as JSON
    content_type: str = JSON
    headers: dict[str, str] = field(default_factory=dict)
    reports: list[dict[str, Any]] = field(default_factory=list)


#: "Close the connection without answering" (an injected drop, or the sandbox stopping).
NO_ANSWER = Reply(status=0)


class ProviderEmulator:
    """One provider's API in the sandbox. A subclass sets the class attributes, writes the
    endpoint methods ``routes`` names and ``delivery_report``, and is listed in ``EMULATORS``.

    An endpoint takes the :class:`RecordedRequest` (already authenticated) and returns a
    :class:`Reply`. It uses the sandbox's shared behaviour through ``self.sandbox``:
    ``count_attempt``, ``inject_failure`` (after counting, so a 503 still counts as an
    attempt), ``forced_code``, ``is_accepted``, ``throttled`` and ``accept``.
    """

    name: ClassVar[str] = ""  # the ``--provider`` value
    title: ClassVar[str] = ""  # for people: "MegaFon"
    scheme: ClassVar[str] = ""  # of the SMS_URL that points at the sandbox: SCHEME+http://
    #: (method, path) -> the endpoint method's name; paths without the trailing slash.
    routes: ClassVar[dict[tuple[str, str], str]] = {}
    realm: ClassVar[str] = "sandbox"  # of the 401's WWW-Authenticate
    delivered_status: ClassVar[str] = "delivered"  # a message's status after its report
    failed_status: ClassVar[str] = "undelivered"
    #: Where reports go for a provider that takes one URL from the account's settings (SMS.RU,
    #: SMSC, Beeline: set ``sandbox.provider.callback_url``); None: no callbacks. Its
    #: accepted messages carry it as their ``callback_url``; the others take it per message.
    callback_url: str | None = None

    def __init__(self, sandbox: SandboxServer):
        self.sandbox = sandbox

    @property
    def api(self) -> str:
        """What a person calls, e.g. ``POST /sms/v1/sms``."""
        return ", ".join(f"{method} {path}" for method, path in self.routes)

    @property
    def server_header(self) -> str:
        return f"{self.name.capitalize()}Sandbox/1.0"

    def sms_url(self, sender: str) -> str:
        """An ``SMS_URL`` pointing at the sandbox with its credentials (URL-encoded)."""
        sandbox = self.sandbox
        return (
            f"{self.scheme}+http://{quote(sandbox.login, safe='')}:"
            f"{quote(sandbox.password, safe='')}@{sandbox.host}:{sandbox.port}/"
            f"?sender={quote(sender, safe='')}"
        )

    def endpoint(self, request: RecordedRequest) -> Callable[[RecordedRequest], Reply] | None:
        """The bound endpoint method for ``request``, or None (answered by ``not_found``)."""
        name = self.routes.get((request.method, request.route))
        return getattr(self, name) if name else None

    def not_found(self, request: RecordedRequest) -> Reply:
        return Reply(404, {"error": f"not found; the API is {self.api}"})

    def authenticate(self, request: RecordedRequest) -> Reply | None:
        """None when the request carries the sandbox's credentials, else the answer to give:
        HTTP Basic by default (a provider with keys in the parameters overrides this)."""
        if self.sandbox.basic_auth_ok(request):
            return None
        return Reply(
            401,
            {"error": "unauthorized"},
            headers={"WWW-Authenticate": f'Basic realm="{self.realm}"'},
        )

    # --- delivery ------------------------------------------------------------------------
    def final_status(self, delivered: bool) -> str:
        """``delivered_status`` or ``failed_status``."""
        return self.delivered_status if delivered else self.failed_status

    def finish(self, message: dict[str, Any], delivered: bool) -> None:
        """Give ``message`` its final status (what tests call to steer polling)."""
        message["status"] = self.final_status(delivered)

    def settle(self, message: dict[str, Any], pending: bool) -> None:
        """Polling's view of a report nobody posts: a ``pending`` message (still on its way)
        is finished, delivered by ``deliver_rate``, once ``callback_delay`` has passed, when
        reports are on and the message has no callback URL to post its report to."""
        sandbox = self.sandbox
        if not (pending and sandbox.callbacks) or message.get("callback_url"):
            return
        if time.time() >= message["accepted_at"] + float(sandbox.callback_delay or 0):
            self.finish(message, sandbox._random.random() < sandbox.deliver_rate)

    def delivery_report(self, message: dict[str, Any], delivered: bool) -> dict[str, Any]:
        """The report the provider posts for an accepted ``message``."""
        raise NotImplementedError

    def encode_report(
        self, message: dict[str, Any], report: dict[str, Any]
    ) -> tuple[bytes, dict[str, str]]:
        """The body and headers posted to ``message["callback_url"]``: UTF-8 JSON by default."""
        body = json.dumps(report, ensure_ascii=False).encode("utf-8")
        return body, {"Content-Type": JSON}


def emulator_class(provider: str | type[ProviderEmulator]) -> type[ProviderEmulator]:
    """The emulator named ``provider`` in ``EMULATORS`` (or the class itself)."""
    if isinstance(provider, type):
        return provider
    if provider not in EMULATORS:
        known = ", ".join(sorted(EMULATORS))
        raise ValueError(f"Unknown sandbox provider {provider!r}; known: {known}")
    module, _, name = EMULATORS[provider].rpartition(".")
    return getattr(importlib.import_module(module), name)
