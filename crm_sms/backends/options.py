"""Declared backend options: each backend names its options, their types, defaults and help.

A backend lists ``Option``s in its ``declared_options``; ``BaseBackend.option_table()`` merges
the declarations along the class hierarchy (a subclass may redeclare an option, e.g. with
another default). Values from an ``SMS_URL`` query arrive as strings and are converted here;
an unknown name (``?sendr=Shop``) or a value that does not convert (``?read_timeout=x``) is a
problem reported by ``manage.py check`` (``crm_sms.E007``, ``crm_sms.E008``) and refused by
the backend's constructor with a ``ConfigurationError`` naming the env variable.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from django.core import checks

#: Check id of an option the backend does not declare (a misspelling).
UNKNOWN_OPTION = "crm_sms.E007"
#: Check id of an option value that does not convert to the declared type or range.
INVALID_OPTION = "crm_sms.E008"

# The user:password part of a URL value (a base_url or proxy), never shown in a message.
_USERINFO = re.compile(r"://[^/@]*@")
_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})


def to_bool(value: Any) -> bool:
    """``1/true/yes/on`` and ``0/false/no/off`` (any case); ValueError for anything else."""
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise ValueError("is not a yes/no value (use 1 or 0)")


def to_int(value: Any) -> int:
    """An integer; ``"8"`` and ``8.0`` read as 8."""
    try:
        return int(float(value))
    except (TypeError, ValueError, OverflowError) as exc:
        raise ValueError("is not a number") from exc


def to_float(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError) as exc:
        raise ValueError("is not a number") from exc


def to_http_url(value: Any) -> str:
    """An ``http(s)://host[:port][/path]`` address without a trailing ``/``."""
    text = str(value).rstrip("/")
    try:
        parts = urlsplit(text)
        host = parts.hostname
    except ValueError as exc:
        raise ValueError("is not an http(s) URL") from exc
    if parts.scheme not in ("http", "https") or not host:
        raise ValueError("is not an http(s) URL")
    return text


def to_timezone(value: Any) -> ZoneInfo:
    try:
        return ZoneInfo(str(value))
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError("is not a known time zone") from exc


_CONVERTERS: dict[Any, Callable[[Any], Any]] = {
    bool: to_bool,
    int: to_int,
    float: to_float,
    str: str,
}
_TYPE_NAMES = {bool: "yes/no", int: "integer", float: "number", str: "text"}


@dataclass(frozen=True)
class Option:
    """One option a backend takes (``?name=value`` in its ``SMS_URL``, or in ``OPTIONS``).

    ``type`` is ``str``, ``int``, ``float``, ``bool`` or a function that converts a string and
    raises ValueError with a reason (``to_timezone``); ``None`` or ``""`` means "not given":
    the default. ``secret`` values (passwords, API keys) are scrubbed from everything a
    backend stores or logs.
    """

    name: str
    type: Any = str
    default: Any = ""
    help: str = ""
    minimum: float | None = None
    secret: bool = False

    @property
    def type_name(self) -> str:
        return _TYPE_NAMES.get(self.type, getattr(self.type, "__name__", str(self.type)))

    def convert(self, value: Any) -> Any:
        """``value`` as this option's type; ValueError saying why it does not fit."""
        if value is None or value == "":
            return self.default
        converted = _CONVERTERS.get(self.type, self.type)(value)
        if self.minimum is not None and converted < self.minimum:
            raise ValueError(f"must be at least {self.minimum:g}")
        return converted


def read_options(
    table: Mapping[str, Option], given: Mapping[str, Any], *, env: str, owner: str
) -> tuple[dict[str, Any], list[checks.CheckMessage]]:
    """Convert ``given`` by ``table``: (every declared option's value, the problems found).

    Each problem is a check Error naming ``env`` (the variable to fix) and, for a
    misspelling, the option that was probably meant.
    """
    values = {name: option.default for name, option in table.items()}
    problems: list[checks.CheckMessage] = []
    for name, value in given.items():
        option = table.get(name)
        if option is None:
            problems.append(_unknown(name, table, env, owner))
            continue
        try:
            values[name] = option.convert(value)
        except (TypeError, ValueError) as exc:
            shown = "***" if option.secret else repr(_USERINFO.sub("://***@", str(value)))
            problems.append(
                checks.Error(
                    f"{env}: option {name}={shown} {exc}.",
                    hint=f"{name}: {option.help or option.type_name}.",
                    id=INVALID_OPTION,
                )
            )
    return values, problems


def _unknown(name: str, table: Mapping[str, Option], env: str, owner: str) -> checks.Error:
    close = difflib.get_close_matches(name, list(table), n=1)
    guess = f" (did you mean {close[0]!r}?)" if close else ""
    known = ", ".join(sorted(table)) or "none"
    return checks.Error(
        f"{env}: {owner} has no option {name!r}{guess}.",
        hint=f"Options of {owner}: {known}.",
        id=UNKNOWN_OPTION,
    )


#: ``RATE_LIMIT`` (``?rate_limit=`` in an SMS_URL): not a backend option; ``crm_sms.conf``
#: takes it out of the URL and every backend reads its ``rate_limit`` argument by it.
RATE_LIMIT = Option(
    "rate_limit", float, None, "messages per second (the contracted throughput)", minimum=0
)


def read_rate_limit(value: Any, env: str) -> tuple[float | None, list[checks.CheckMessage]]:
    """(RATE_LIMIT as a number or None for no limit, the problems: crm_sms.E008)."""
    values, problems = read_options(
        {"rate_limit": RATE_LIMIT}, {"rate_limit": value}, env=env, owner=""
    )
    return values["rate_limit"] or None, problems


#: W011 leaves these hosts alone: plain HTTP to them is the local sandbox.
_LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")


@dataclass(frozen=True)
class AccountChecks:
    """What ``HTTPBackend.check`` says about a provider's account settings, as data: missing
    credentials (``crm_sms.E010``), no default sender (``W010``), a remote host reached over
    plain HTTP (``W011``). In the texts ``{alias}`` is the provider's alias, ``{env}`` its
    variable and ``{provider}`` ``provider``."""

    #: The options E010 wants set (the URL's user and password parts).
    credentials: tuple[str, ...]
    #: E010's hint, e.g. "Set {env}=megafon://LOGIN:PASSWORD@host/?sender=MyCompany".
    credentials_hint: str
    #: The provider's name in the texts ("" for the backend's ``display_name``).
    provider: str = ""
    #: E010's whole text for a provider that does not name the missing options one by one.
    credentials_message: str = ""
    #: W010's hint; "" turns W010 off (the provider has a default sender name).
    sender_hint: str = ""
    sender_message: str = (
        "Provider {alias!r}: no default sender name; every send must pass sender=… or "
        "{provider} refuses it."
    )
    #: W010 comes when none of these options is set.
    sender_options: tuple[str, ...] = ("sender",)
    #: What W011 says travels unencrypted; "" turns W011 off.
    plain_http_risk: str = ""
    #: The URL scheme W011's hint names (``megafon://``, ``megafon+http://``).
    scheme: str = ""

    def problems(self, backend: Any) -> list[checks.CheckMessage]:
        """E010, W010 and W011 for ``backend`` (an ``HTTPBackend``), in that order."""
        values = {
            "alias": backend.alias,
            "env": backend.env_variable,
            "provider": self.provider or backend.display_name,
        }
        problems: list[checks.CheckMessage] = []
        missing = [name for name in self.credentials if not backend.options.get(name)]
        if missing:
            message = self.credentials_message or (
                "Provider {alias!r}: the {provider} "
                f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} missing."
            )
            problems.append(
                checks.Error(
                    message.format(**values),
                    hint=self.credentials_hint.format(**values),
                    id="crm_sms.E010",
                )
            )
        if self.sender_hint and not any(backend.options.get(o) for o in self.sender_options):
            problems.append(
                checks.Warning(
                    self.sender_message.format(**values),
                    hint=self.sender_hint.format(**values),
                    id="crm_sms.W010",
                )
            )
        host = urlsplit(backend.base_url).hostname or ""
        remote = backend.base_url.startswith("http://") and host not in _LOOPBACK_HOSTS
        if self.plain_http_risk and remote:
            problems.append(
                checks.Warning(
                    f"Provider {backend.alias!r}: {values['provider']} is reached over plain "
                    f"HTTP ({host}); {self.plain_http_risk}.",
                    hint=f"Use {self.scheme}:// (HTTPS) in {backend.env_variable}; "
                    f"{self.scheme}+http:// is for the local sandbox.",
                    id="crm_sms.W011",
                )
            )
        return problems
