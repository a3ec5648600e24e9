"""The one settings accessor, and the parsing of provider URLs (``SMS_URL``).

Nothing here reads ``django.conf.settings`` at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured

DEFAULTS: dict[str, Any] = {
    "PROVIDERS": {},
    "DEFAULT_PROVIDER": "default",
    "PUBLIC_URL": None,
    "CALLBACK_TOKEN": None,
    "CLAIM_TIMEOUT": 300,
    "MAX_ATTEMPTS": 5,
    "RETRY_BACKOFF": 30,
    "RETRY_BACKOFF_MAX": 3600,
    "PAUSE_AFTER": 3,
    "DEFAULT_REGION": "RU",
    # The outbox worker (``sms_worker`` options and ``dispatch_due`` arguments override these).
    "CONCURRENCY": 16,
    "BATCH_SIZE": 200,
    "POLL_INTERVAL": 1.0,
    "RATE_LIMIT_CACHE": "default",
}

# scheme -> (backend path, the option the URL's user part fills, the option its password fills)
SCHEMES: dict[str, tuple[str, str | None, str | None]] = {
    "megafon": ("crm_sms.backends.megafon.MegafonBackend", "login", "password"),
    "smsru": ("crm_sms.backends.smsru.SmsRuBackend", "api_id", None),
    "console": ("crm_sms.backends.console.ConsoleBackend", None, None),
    "locmem": ("crm_sms.backends.locmem.LocmemBackend", None, None),
    "dummy": ("crm_sms.backends.dummy.DummyBackend", None, None),
}

# Environment variable -> CRM_SMS key, and the type of its value.
ENV_KEYS: dict[str, tuple[str, type]] = {
    "SMS_PUBLIC_URL": ("PUBLIC_URL", str),
    "SMS_CALLBACK_TOKEN": ("CALLBACK_TOKEN", str),
    "SMS_CLAIM_TIMEOUT": ("CLAIM_TIMEOUT", float),
    "SMS_MAX_ATTEMPTS": ("MAX_ATTEMPTS", int),
    "SMS_RETRY_BACKOFF": ("RETRY_BACKOFF", float),
    "SMS_DEFAULT_PROVIDER": ("DEFAULT_PROVIDER", str),
    "SMS_DEFAULT_REGION": ("DEFAULT_REGION", str),
}


def sms_settings() -> dict[str, Any]:
    """``settings.CRM_SMS`` over the defaults."""
    return {**DEFAULTS, **getattr(settings, "CRM_SMS", {})}


def get_setting(name: str) -> Any:
    """One key of ``CRM_SMS`` (or its default)."""
    return sms_settings()[name]


def provider_aliases() -> list[str]:
    return list(get_setting("PROVIDERS"))


def default_provider() -> str:
    return get_setting("DEFAULT_PROVIDER")


def provider_config(alias: str | None = None) -> dict[str, Any]:
    """The configuration dict of one provider (``BACKEND``, ``OPTIONS``, ``RATE_LIMIT``)."""
    alias = alias or default_provider()
    providers = get_setting("PROVIDERS")
    if alias not in providers:
        known = ", ".join(sorted(providers)) or "none"
        raise ImproperlyConfigured(
            f"CRM_SMS['PROVIDERS'] has no provider {alias!r} (configured: {known}). "
            f"Set SMS_URL (or SMS_URL_{alias.upper()}) in the environment."
        )
    return providers[alias]


def callback_tokens() -> list[str]:
    """The accepted callback tokens; the first is put in new callback URLs (rotation)."""
    token = get_setting("CALLBACK_TOKEN")
    if not token:
        return []
    if isinstance(token, str):
        return [t.strip() for t in token.split(",") if t.strip()]
    return [str(t) for t in token]


def parse_sms_url(url: str) -> dict[str, Any]:
    """Turn ``megafon://LOGIN:PASSWORD@host/?sender=X`` into a provider configuration dict.

    ``scheme+http://`` selects plain HTTP (the sandbox). The user and password are URL-decoded,
    so a password may hold ``:``, ``@``, ``/`` or ``%`` written as ``%3A``, ``%40``, ``%2F``,
    ``%25``.
    Query parameters become OPTIONS, except ``rate_limit`` which becomes RATE_LIMIT.
    """
    parts = urlsplit(url)
    scheme, _, transport = parts.scheme.partition("+")
    if scheme not in SCHEMES:
        known = ", ".join(f"{s}://" for s in SCHEMES)
        raise ImproperlyConfigured(
            f"Unknown SMS provider scheme {parts.scheme!r} in an SMS_URL; known: {known}"
        )
    if transport not in ("", "http", "https"):
        raise ImproperlyConfigured(
            f"Unknown transport {transport!r} in SMS_URL scheme {parts.scheme!r}: use "
            f"{scheme}:// (https) or {scheme}+http://"
        )
    backend, user_option, password_option = SCHEMES[scheme]
    options: dict[str, Any] = {}
    # urlsplit's .username/.password split at the first ':' of the user part, which is right:
    # a literal ':' in a login must be written %3A, in a password it may stay as is.
    netloc = parts.netloc
    userinfo, _, hostport = netloc.rpartition("@")
    if userinfo:
        user, sep, password = userinfo.partition(":")
        if user and user_option:
            options[user_option] = unquote(user)
        if sep and password_option:
            options[password_option] = unquote(password)
    if hostport:
        options["base_url"] = f"{transport or 'https'}://{hostport}{parts.path.rstrip('/')}"
    config: dict[str, Any] = {"BACKEND": backend, "OPTIONS": options}
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key == "rate_limit":
            config["RATE_LIMIT"] = float(value)
        else:
            options[key] = value
    return config


def settings_from_env(environ: Mapping[str, str]) -> dict[str, Any]:
    """Build the ``CRM_SMS`` dict from ``SMS_*`` environment variables (see the README)."""
    result: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    if environ.get("SMS_URL"):
        providers["default"] = parse_sms_url(environ["SMS_URL"])
    for key, value in environ.items():
        if key.startswith("SMS_URL_") and value:
            providers[key.removeprefix("SMS_URL_").lower()] = parse_sms_url(value)
    rate_limit = environ.get("SMS_RATE_LIMIT")
    if rate_limit:
        for config in providers.values():
            config.setdefault("RATE_LIMIT", float(rate_limit))
    result["PROVIDERS"] = providers
    if providers and "default" not in providers and "SMS_DEFAULT_PROVIDER" not in environ:
        result["DEFAULT_PROVIDER"] = next(iter(providers))
    for env_key, (key, cast) in ENV_KEYS.items():
        if environ.get(env_key):
            try:
                result[key] = cast(environ[env_key])
            except ValueError as exc:
                raise ImproperlyConfigured(f"{env_key}={environ[env_key]!r}: {exc}") from exc
    return result
