"""System checks: a wrong SMS configuration is reported at start-up, naming the env variable."""

from __future__ import annotations

from django.core import checks
from django.core.exceptions import ImproperlyConfigured

from . import conf


@checks.register("crm_sms")
def check_providers(app_configs=None, **kwargs) -> list[checks.CheckMessage]:
    from .backends import load_backend_class

    problems: list[checks.CheckMessage] = []
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
    for alias, config in providers.items():
        env = "SMS_URL" if alias == "default" else f"SMS_URL_{alias.upper()}"
        path = config.get("BACKEND", "")
        try:
            cls = load_backend_class(path)
        except ImproperlyConfigured as exc:
            problems.append(
                checks.Error(
                    f"Provider {alias!r}: {exc}",
                    hint=f"Check the scheme of {env} (megafon://, smsru://, console://, …) "
                    f"or CRM_SMS['PROVIDERS'][{alias!r}]['BACKEND'].",
                    id="crm_sms.E002",
                )
            )
            continue
        try:
            backend = cls(
                alias=alias, options=config.get("OPTIONS", {}), rate_limit=config.get("RATE_LIMIT")
            )
        except ImproperlyConfigured as exc:
            problems.append(
                checks.Error(f"Provider {alias!r}: {exc}", hint=f"Fix {env}.", id="crm_sms.E003")
            )
            continue
        problems.extend(backend.check())
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
