"""The one settings accessor, and the parsing of provider URLs (``SMS_URL``).

Nothing here reads ``django.conf.settings`` at import time.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed
from django.dispatch import receiver

from .exceptions import ConfigurationError

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
    # Seconds an idle worker sleeps before it looks for due messages again.
    "IDLE_SLEEP": 1.0,
    "RATE_LIMIT_CACHE": "default",
    # scheme -> backend class (a dotted path or the class), over BUILTIN_SCHEMES.
    "SCHEMES": {},
    # The callback endpoint: the largest body it reads (bytes; larger is answered 413), and
    # where reports wait while the database is away (crm_sms.inbox; None: under BASE_DIR).
    "CALLBACK_MAX_BYTES": 5 * 1024 * 1024,
    "REPORT_SPOOL_DIR": None,
    # How the callback endpoint takes delivery reports: "direct" (applied in the request) or
    # "queued" (one INSERT into the report queue, applied in batches: crm_sms.inbox).
    "REPORTS": "direct",
    # Quiet hours: the local times of each recipient between which campaigns send
    # (crm_sms.quiet_hours; each campaign may have its own); "" or None: any time.
    "SEND_WINDOW": "09:00-21:00",
    # Replies (crm_sms.inbound): a reply that is one of these words opts its sender out (case,
    # spaces and punctuation do not matter); the text sent back then ("": none); the phrase
    # appended to advertising texts ("": none).
    "OPT_OUT_KEYWORDS": ["STOP", "СТОП", "ОТПИСКА", "ОТПИСАТЬСЯ", "UNSUBSCRIBE"],
    "OPT_OUT_REPLY": "",
    "UNSUBSCRIBE_TEXT": "",
    # Failover (crm_sms.outbox.failover): provider aliases in order of preference. A provider
    # that fails provider-wide, or refuses a message for a route reason, hands its queued
    # messages to the next one (a new msg_id there). [] or one alias: campaigns pause instead.
    "FAILOVER": [],
}

#: The built-in URL schemes: scheme -> backend class. A site adds its own (or replaces one) in
#: ``CRM_SMS["SCHEMES"]``; the class's ``url_user_option``/``url_password_option`` say which
#: options the URL's user and password fill. Every HTTP scheme also has a ``<scheme>+http://``
#: form (plain HTTP, for a local test double).
BUILTIN_SCHEMES: dict[str, str] = {
    "megafon": "crm_sms.backends.megafon.MegafonBackend",
    "smsru": "crm_sms.backends.smsru.SmsRuBackend",
    "smsc": "crm_sms.backends.smsc.SmscBackend",
    "sms4b": "crm_sms.backends.sms4b.Sms4bBackend",
    "beeline": "crm_sms.backends.beeline.BeelineBackend",
    "mts": "crm_sms.backends.mts.MtsBackend",
    "smsuslugi": "crm_sms.backends.smsuslugi.SmsUslugiBackend",
    "twilio": "crm_sms.backends.twilio.TwilioBackend",
    "smpp": "crm_sms.backends.smpp.SMPPBackend",
    "smpps": "crm_sms.backends.smpp.SMPPSBackend",
    "console": "crm_sms.backends.console.ConsoleBackend",
    "locmem": "crm_sms.backends.locmem.LocmemBackend",
    "dummy": "crm_sms.backends.dummy.DummyBackend",
}

#: Check id of an SMS_URL that cannot be read: not a URL, an unknown scheme or transport.
BAD_URL = "crm_sms.E006"


def word_list(value: str) -> list[str]:
    """A comma-separated environment value as a list of its non-empty items."""
    return [item.strip() for item in value.split(",") if item.strip()]


# Environment variable -> CRM_SMS key, and what reads its value (a type, or word_list).
ENV_KEYS: dict[str, tuple[str, Any]] = {
    "SMS_PUBLIC_URL": ("PUBLIC_URL", str),
    "SMS_CALLBACK_TOKEN": ("CALLBACK_TOKEN", str),
    "SMS_CLAIM_TIMEOUT": ("CLAIM_TIMEOUT", float),
    "SMS_MAX_ATTEMPTS": ("MAX_ATTEMPTS", int),
    "SMS_RETRY_BACKOFF": ("RETRY_BACKOFF", float),
    "SMS_DEFAULT_PROVIDER": ("DEFAULT_PROVIDER", str),
    "SMS_DEFAULT_REGION": ("DEFAULT_REGION", str),
    "SMS_CALLBACK_MAX_BYTES": ("CALLBACK_MAX_BYTES", int),
    "SMS_REPORT_SPOOL_DIR": ("REPORT_SPOOL_DIR", str),
    "SMS_REPORTS": ("REPORTS", str),
    "SMS_SEND_WINDOW": ("SEND_WINDOW", str),
    "SMS_OPT_OUT_KEYWORDS": ("OPT_OUT_KEYWORDS", word_list),
    "SMS_OPT_OUT_REPLY": ("OPT_OUT_REPLY", str),
    "SMS_UNSUBSCRIBE_TEXT": ("UNSUBSCRIBE_TEXT", str),
    "SMS_FAILOVER": ("FAILOVER", word_list),
}


#: Old key -> its current name (the old one is still read).
RENAMED = {"POLL_INTERVAL": "IDLE_SLEEP"}


def sms_settings() -> dict[str, Any]:
    """``settings.CRM_SMS`` over the defaults (do not change the dict: it is shared).

    Merged again only when ``settings.CRM_SMS`` is another object or Django says it changed
    (``setting_changed``: tests): a callback reads three settings, thousands of times a
    second."""
    global _merged
    configured = getattr(settings, "CRM_SMS", None)
    merged = _merged
    if merged is not None and merged[0] is configured:
        return merged[1]
    values = dict(configured or {})
    for old, new in RENAMED.items():
        if old in values:
            values.setdefault(new, values.pop(old))
    result = {**DEFAULTS, **values}
    _merged = (configured, result)
    return result


_merged: tuple[Any, dict[str, Any]] | None = None  # (settings.CRM_SMS, merged)


@receiver(setting_changed)
def _forget_merged(setting: str, **kwargs: Any) -> None:
    global _merged
    if setting == "CRM_SMS":
        _merged = None


def get_setting(name: str) -> Any:
    """One key of ``CRM_SMS`` (or its default)."""
    return sms_settings()[name]


def provider_aliases() -> list[str]:
    return list(get_setting("PROVIDERS"))


def default_provider() -> str:
    return get_setting("DEFAULT_PROVIDER")


def failover_chain() -> list[str]:
    """``CRM_SMS["FAILOVER"]``: provider aliases in order of preference (a list, or a
    comma-separated string as ``SMS_FAILOVER`` gives it); an alias named twice counts once."""
    value = get_setting("FAILOVER") or []
    items = word_list(value) if isinstance(value, str) else [str(a).strip() for a in value]
    return list(dict.fromkeys(alias for alias in items if alias))


#: The values of ``CRM_SMS["REPORTS"]``.
REPORT_MODES = ("direct", "queued")


def report_mode() -> str:
    """``CRM_SMS["REPORTS"]`` (env ``SMS_REPORTS``): "direct" or "queued"."""
    mode = str(get_setting("REPORTS") or "direct").strip().lower()
    if mode not in REPORT_MODES:
        raise ImproperlyConfigured(
            f'CRM_SMS["REPORTS"] (env SMS_REPORTS) is {mode!r}; use "direct" or "queued".'
        )
    return mode


def env_variable(alias: str) -> str:
    """The environment variable that configures provider ``alias`` (for messages)."""
    return "SMS_URL" if alias == "default" else f"SMS_URL_{alias.upper()}"


def registered_schemes() -> dict[str, Any]:
    """scheme -> backend class (or its dotted path): the built-ins and ``CRM_SMS["SCHEMES"]``.

    Only the built-ins while the settings module itself is being read (``settings_from_env``
    runs then, before ``CRM_SMS`` exists).
    """
    if not settings.configured:
        return dict(BUILTIN_SCHEMES)
    return {**BUILTIN_SCHEMES, **get_setting("SCHEMES")}


def provider_config(alias: str | None = None) -> dict[str, Any]:
    """The configuration dict of one provider (``BACKEND``, ``OPTIONS``, ``RATE_LIMIT``).

    An entry given as a ``URL`` (what ``settings_from_env`` keeps when it cannot resolve an
    SMS_URL while the settings load) is resolved here, with the site's schemes. Raises
    ImproperlyConfigured for an unknown alias and ConfigurationError for a URL that does not
    resolve, both naming the env variable.
    """
    config, problems = read_provider_config(alias)
    if problems:
        raise ConfigurationError(" ".join(problem.msg for problem in problems))
    return config


def read_provider_config(alias: str | None = None) -> tuple[dict[str, Any], list[Any]]:
    """(provider ``alias``'s configuration, the problems of its URL as check messages)."""
    alias = alias or default_provider()
    providers = get_setting("PROVIDERS")
    if alias not in providers:
        known = ", ".join(sorted(providers)) or "none"
        raise ImproperlyConfigured(
            f"CRM_SMS['PROVIDERS'] has no provider {alias!r} (configured: {known}). "
            f"Set {env_variable(alias)} in the environment."
        )
    config = providers[alias]
    if "URL" not in config or "BACKEND" in config:
        return config, []
    resolved, problems = read_sms_url(config["URL"], env=env_variable(alias))
    if problems:
        return {}, problems
    resolved["OPTIONS"].update(config.get("OPTIONS", {}))
    if "RATE_LIMIT" in config:
        resolved.setdefault("RATE_LIMIT", config["RATE_LIMIT"])  # the URL's own wins
    return resolved, []


def callback_tokens() -> list[str]:
    """The accepted callback tokens; the first is put in new callback URLs (rotation)."""
    token = get_setting("CALLBACK_TOKEN")
    if not token:
        return []
    if isinstance(token, str):
        return [t.strip() for t in token.split(",") if t.strip()]
    return [str(t) for t in token]


# --- SMS_URL -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SMSURL:
    """An ``SMS_URL`` taken apart, before any backend class is involved.

    ``user`` and ``password`` are URL-decoded (``password`` is None without a ``:``); ``host``
    is ``host[:port]`` as written; ``query`` holds the parameters in order.
    """

    scheme: str
    transport: str  # "", "http" or "https": the "+http" of "megafon+http://"
    user: str
    password: str | None
    host: str
    path: str
    query: tuple[tuple[str, str], ...]

    @property
    def base_url(self) -> str:
        """``https://host[:port][/path]`` (``http://`` for the ``+http`` form); "" without host."""
        return f"{self.transport or 'https'}://{self.host}{self.path}" if self.host else ""


def split_sms_url(url: str) -> SMSURL:
    """Take ``url`` apart; ValueError when it is not a ``scheme://...`` URL.

    urlsplit's .username/.password would split at the first ``:`` of the user part, which is
    right: a literal ``:`` in a login must be written %3A, in a password it may stay as is.
    The last ``@`` ends the user part, so a raw ``@`` in a password reads right too.
    """
    parts = urlsplit(url.strip())
    if not parts.scheme or "://" not in url:
        raise ValueError("it is not a URL like megafon://LOGIN:PASSWORD@host/?sender=Name")
    scheme, _, transport = parts.scheme.partition("+")
    userinfo, _, host = parts.netloc.rpartition("@")
    user, sep, password = userinfo.partition(":")
    return SMSURL(
        scheme=scheme,
        transport=transport,
        user=unquote(user),
        password=unquote(password) if sep else None,
        host=host,
        path=parts.path.rstrip("/"),
        query=tuple(parse_qsl(parts.query, keep_blank_values=True)),
    )


def parse_sms_url(url: str, schemes: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Turn ``megafon://LOGIN:PASSWORD@host/?sender=X`` into a provider configuration dict.

    ``scheme+http://`` selects plain HTTP (a local test double). The user and password are
    URL-decoded, so a password may hold ``:``, ``@``, ``/`` or ``%`` written as ``%3A``,
    ``%40``, ``%2F``, ``%25``; the backend class says which options they fill. Query
    parameters become OPTIONS, except ``rate_limit`` which becomes RATE_LIMIT; each must be an
    option the backend declares, of its type. ``schemes`` defaults to
    ``registered_schemes()``. Raises ConfigurationError saying what is wrong.
    """
    config, problems = read_sms_url(url, schemes=schemes)
    if problems:
        raise ConfigurationError(" ".join(problem.msg for problem in problems))
    return config


def read_sms_url(
    url: str, *, env: str = "SMS_URL", schemes: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], list[Any]]:
    """(the configuration dict of ``url``, or {} with its problems as check Errors naming
    ``env``: crm_sms.E006 unreadable URL or unknown scheme, E002 a backend that cannot be
    imported, E007 an option the backend does not declare, E008 an option value that does
    not fit its type, rate_limit included). Never raises."""
    from django.core import checks

    from .backends import backend_path, load_backend_class
    from .backends.options import read_rate_limit

    schemes = registered_schemes() if schemes is None else schemes
    known = ", ".join(f"{name}://" for name in schemes)
    try:
        parts = split_sms_url(url)
    except ValueError as exc:
        return {}, [_bad_url(f"{env} cannot be read: {exc}.", env, known)]
    if parts.scheme not in schemes:
        message = f"Unknown SMS provider scheme {parts.scheme!r} in {env}; known: {known}."
        return {}, [_bad_url(message, env, known)]
    if parts.transport not in ("", "http", "https"):
        message = (
            f"Unknown transport {parts.transport!r} in {env} scheme "
            f"'{parts.scheme}+{parts.transport}': use {parts.scheme}:// (https) or "
            f"{parts.scheme}+http://."
        )
        return {}, [_bad_url(message, env, known)]
    try:
        cls = load_backend_class(schemes[parts.scheme])
    except ImproperlyConfigured as exc:
        hint = f"Fix CRM_SMS['SCHEMES'][{parts.scheme!r}]."
        return {}, [checks.Error(f"{env}: {exc}", hint=hint, id="crm_sms.E002")]
    query = dict(parts.query)
    rate_limit, problems = read_rate_limit(query.pop("rate_limit", None), env)
    try:
        options = cls.options_from_url(replace(parts, query=tuple(query.items())))
    except ConfigurationError as exc:
        problems.append(_bad_url(f"{env}: {exc}.", env, known))
    else:
        problems += cls.read_options(options, env)[1]  # unknown or ill-typed: E007, E008
    if problems:
        return {}, problems
    config: dict[str, Any] = {"BACKEND": backend_path(cls), "OPTIONS": options}
    if rate_limit is not None:
        config["RATE_LIMIT"] = rate_limit
    return config, []


def _bad_url(message: str, env: str, known: str) -> Any:
    from django.core import checks

    return checks.Error(
        message,
        hint=f"Set {env} to scheme://USER:PASSWORD@host/?sender=Name with a scheme of: {known} "
        "(a site adds its own in CRM_SMS['SCHEMES']).",
        id=BAD_URL,
    )


def settings_from_env(
    environ: Mapping[str, str], schemes: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """Build the ``CRM_SMS`` dict from ``SMS_*`` environment variables (see the README).

    Runs while the settings module is read, so it never raises for an SMS_URL: a URL it
    cannot resolve now (a scheme of the site's ``CRM_SMS["SCHEMES"]``, or a mistake) is kept
    as ``{"URL": ...}`` and resolved on first use, where a mistake becomes a check error and
    a ValidationError on sending. ``schemes`` (scheme -> backend class) are resolved now, so
    their classes must be importable before the apps are loaded.
    Raises ImproperlyConfigured for the other variables' values that are not numbers.
    """
    known = {**BUILTIN_SCHEMES, **(schemes or {})}

    def provider(env_key: str) -> dict[str, Any]:
        config, problems = read_sms_url(environ[env_key], env=env_key, schemes=known)
        return {"URL": environ[env_key]} if problems else config

    result: dict[str, Any] = {}
    providers: dict[str, Any] = {}
    if environ.get("SMS_URL"):
        providers["default"] = provider("SMS_URL")
    for key, value in environ.items():
        if key.startswith("SMS_URL_") and value:
            providers[key.removeprefix("SMS_URL_").lower()] = provider(key)
    if environ.get("SMS_RATE_LIMIT"):
        rate_limit = _number("SMS_RATE_LIMIT", environ["SMS_RATE_LIMIT"], float)
        for config in providers.values():
            config.setdefault("RATE_LIMIT", rate_limit)
    result["PROVIDERS"] = providers
    if providers and "default" not in providers and "SMS_DEFAULT_PROVIDER" not in environ:
        result["DEFAULT_PROVIDER"] = next(iter(providers))
    for env_key, (key, cast) in ENV_KEYS.items():
        if environ.get(env_key):
            result[key] = _number(env_key, environ[env_key], cast)
    return result


def _number(env_key: str, value: str, cast: Any) -> Any:
    try:
        return cast(value)
    except ValueError as exc:
        raise ImproperlyConfigured(f"{env_key}={value!r}: {exc}") from exc
