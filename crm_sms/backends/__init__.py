"""Provider backends. ``get_backend(alias)`` returns the configured instance (one per alias and
process, so its HTTP session and connection pool are shared by the worker's threads)."""

from __future__ import annotations

import threading

from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

from .. import conf
from .base import BaseBackend

_instances: dict[str, BaseBackend] = {}
_lock = threading.Lock()


def load_backend_class(path: str | type) -> type[BaseBackend]:
    """The backend class at dotted ``path`` (or ``path`` itself when it is a class);
    ImproperlyConfigured when it cannot be imported or is not a BaseBackend."""
    cls = path
    if isinstance(path, str):
        try:
            cls = import_string(path)
        except Exception as exc:  # ImportError, or the module failed (e.g. apps not ready)
            raise ImproperlyConfigured(f"SMS backend {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseBackend)):
        raise ImproperlyConfigured(f"SMS backend {path!r} is not a BaseBackend subclass")
    return cls


def backend_path(cls: type) -> str:
    """The dotted path of a backend class (what ``BACKEND`` holds)."""
    return f"{cls.__module__}.{cls.__qualname__}"


def build_backend(alias: str) -> BaseBackend:
    """A new backend instance for ``alias`` (``get_backend`` caches these)."""
    config = conf.provider_config(alias)
    if "BACKEND" not in config:
        raise ImproperlyConfigured(f"CRM_SMS['PROVIDERS'][{alias!r}] has no 'BACKEND'")
    cls = load_backend_class(config["BACKEND"])
    return cls(alias=alias, options=config.get("OPTIONS", {}), rate_limit=config.get("RATE_LIMIT"))


def provider_choices() -> list[tuple[str, str]]:
    """(alias, "alias (display name)") of every configured provider, for select boxes.

    Only the backend class is looked at, so a provider configured wrongly is still listed
    (by its alias alone); choosing it gives the send's ValidationError.
    """
    choices = []
    for alias in conf.provider_aliases():
        try:
            cls = load_backend_class(conf.provider_config(alias).get("BACKEND", ""))
        except ImproperlyConfigured:
            choices.append((alias, alias))
            continue
        choices.append((alias, f"{alias} ({cls.display_name})"))
    return choices


def get_backend(alias: str | None = None) -> BaseBackend:
    """The backend for provider ``alias`` (the default provider when None)."""
    alias = alias or conf.default_provider()
    backend = _instances.get(alias)
    if backend is None:
        with _lock:
            backend = _instances.get(alias)
            if backend is None:
                backend = _instances[alias] = build_backend(alias)
    return backend


def reset_backends() -> None:
    """Forget the cached instances (settings changed, or a test wants fresh ones)."""
    with _lock:
        for backend in _instances.values():
            backend.close()
        _instances.clear()


def _on_setting_changed(setting: str, **kwargs) -> None:
    if setting == "CRM_SMS":
        reset_backends()


def connect_signals() -> None:
    from django.core.signals import setting_changed

    setting_changed.connect(_on_setting_changed, dispatch_uid="crm_sms_reset_backends")
