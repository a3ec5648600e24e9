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


def load_backend_class(path: str) -> type[BaseBackend]:
    try:
        cls = import_string(path)
    except ImportError as exc:
        raise ImproperlyConfigured(f"SMS backend {path!r} cannot be imported: {exc}") from exc
    if not (isinstance(cls, type) and issubclass(cls, BaseBackend)):
        raise ImproperlyConfigured(f"SMS backend {path!r} is not a BaseBackend subclass")
    return cls


def build_backend(alias: str) -> BaseBackend:
    """A new backend instance for ``alias`` (``get_backend`` caches these)."""
    config = conf.provider_config(alias)
    if "BACKEND" not in config:
        raise ImproperlyConfigured(f"CRM_SMS['PROVIDERS'][{alias!r}] has no 'BACKEND'")
    cls = load_backend_class(config["BACKEND"])
    return cls(alias=alias, options=config.get("OPTIONS", {}), rate_limit=config.get("RATE_LIMIT"))


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
