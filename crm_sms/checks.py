"""System checks: a wrong SMS configuration is reported at start-up, naming the env variable.

Every problem is a check message, never a traceback: an unreadable ``SMS_URL`` or an unknown
scheme (E006), a backend that cannot be imported (E002), an unknown option (E007), an option
value of the wrong type (E008), options the backend refuses (E003), and the backend's own
``check()``; a delivery-report mode that is neither "direct" nor "queued" (E009).
docs/configuration.md lists every id.
"""

from __future__ import annotations

from typing import Any

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf


@checks.register("crm_sms")
def check_providers(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    providers = conf.get_setting("PROVIDERS")
    if not providers:
        return [
            checks.Warning(
                "No SMS provider is configured: nothing can be sent.",
                hint="Set SMS_URL, e.g. SMS_URL=megafon://LOGIN:PASSWORD@a2p-api.megalabs.ru/"
                "?sender=MyCompany, or SMS_URL=console:// for development.",
                id="crm_sms.W001",
            )
        ]
    problems: list[checks.CheckMessage] = []
    default = conf.default_provider()
    if default not in providers:
        problems.append(
            checks.Error(
                f"DEFAULT_PROVIDER {default!r} is not among the providers "
                f"({', '.join(sorted(providers))}).",
                hint="Set SMS_URL for the default provider or SMS_DEFAULT_PROVIDER.",
                id="crm_sms.E001",
            )
        )
    for alias in providers:
        problems.extend(check_provider(alias))
    problems.extend(_check_numbers())
    problems.extend(_check_failover(providers))
    problems.extend(_check_report_mode())
    return problems


def check_provider(alias: str) -> list[checks.CheckMessage]:
    """The problems of provider ``alias``: its URL, its backend class, its options, then the
    backend's own ``check()``. Stops at the first step that fails."""
    from .backends import load_backend_class
    from .backends.options import read_rate_limit

    env = conf.env_variable(alias)
    config, problems = conf.read_provider_config(alias)
    if problems:
        return problems
    path = config.get("BACKEND", "")
    try:
        cls = load_backend_class(path)
    except ImproperlyConfigured as exc:
        return [
            checks.Error(
                f"Provider {alias!r}: {exc}",
                hint=f"Check the scheme of {env} (megafon://, smsru://, console://, …) "
                f"or CRM_SMS['PROVIDERS'][{alias!r}]['BACKEND'].",
                id="crm_sms.E002",
            )
        ]
    options: Any = config.get("OPTIONS", {})
    problems = cls.read_options(options, env)[1] + read_rate_limit(config.get("RATE_LIMIT"), env)[1]
    if problems:
        return problems
    try:
        backend = cls(alias=alias, options=options, rate_limit=config.get("RATE_LIMIT"))
    except ImproperlyConfigured as exc:
        return [checks.Error(f"Provider {alias!r}: {exc}", hint=f"Fix {env}.", id="crm_sms.E003")]
    return backend.check()


def _check_numbers() -> list[checks.CheckMessage]:
    problems = []
    for key in ("CLAIM_TIMEOUT", "MAX_ATTEMPTS", "RETRY_BACKOFF"):
        value = conf.get_setting(key)
        if not isinstance(value, int | float) or value <= 0:
            problems.append(
                checks.Error(
                    f"CRM_SMS[{key!r}] must be a positive number, not {value!r}.",
                    hint=f"Fix SMS_{key}.",
                    id="crm_sms.E005",
                )
            )
    return problems


def _check_report_mode() -> list[checks.CheckMessage]:
    """``REPORTS`` that is neither "direct" nor "queued": every delivery report would be
    answered 500 (``conf.report_mode`` refuses it), so say it at start-up instead."""
    try:
        conf.report_mode()
    except ImproperlyConfigured:
        value = conf.get_setting("REPORTS")
        allowed = " or ".join(f'"{mode}"' for mode in conf.REPORT_MODES)
        return [
            checks.Error(
                f'CRM_SMS["REPORTS"] (env SMS_REPORTS) is {value!r}; the allowed values are '
                f"{allowed}.",
                hint=f'Set SMS_REPORTS to {allowed} (or leave it unset: "direct").',
                id="crm_sms.E009",
            )
        ]
    return []


def _check_failover(providers: Any) -> list[checks.CheckMessage]:
    """``FAILOVER`` naming a provider that is not configured: failover skips it."""
    missing = [alias for alias in conf.failover_chain() if alias not in providers]
    if not missing:
        return []
    return [
        checks.Warning(
            f"FAILOVER names provider(s) that are not configured: {', '.join(missing)}; "
            "failover skips them.",
            hint="Set "
            + ", ".join(conf.env_variable(alias) for alias in missing)
            + ", or leave them out of SMS_FAILOVER.",
            id="crm_sms.W002",
        )
    ]
