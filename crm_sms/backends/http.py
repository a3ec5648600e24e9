"""The HTTP plumbing every HTTP provider needs, once: option parsing, and one keep-alive
``requests.Session`` shared by the worker's threads, with a pool that fits its concurrency."""

from __future__ import annotations

import os
import threading
from typing import Any
from urllib.parse import urlsplit

import requests

from .base import BaseBackend, ConfigurationError


def _environ_ca_bundle() -> str:
    return os.environ.get("REQUESTS_CA_BUNDLE") or os.environ.get("CURL_CA_BUNDLE") or ""


class HTTPBackend(BaseBackend):
    """A backend that talks HTTP. Options: ``pool_size`` (32), ``connect_timeout`` (10 s),
    ``read_timeout`` (``default_read_timeout``), ``proxy``, ``ca_bundle``. Subclasses set
    ``base_url`` before using ``session`` and add their headers in ``configure_session``."""

    default_read_timeout: float = 60.0
    base_url: str = ""

    def __init__(self, alias: str = "default", options: dict[str, Any] | None = None, **kwargs):
        super().__init__(alias, options, **kwargs)
        self.pool_size = self.number_option("pool_size", 32, int, minimum=1)
        self.connect_timeout = self.number_option("connect_timeout", 10.0, float, minimum=0.001)
        self.read_timeout = self.number_option(
            "read_timeout", self.default_read_timeout, float, minimum=0.001
        )
        self.proxy = str(self.options.get("proxy") or "")
        self.ca_bundle = str(self.options.get("ca_bundle") or "")
        self._session: requests.Session | None = None
        self._session_lock = threading.Lock()

    @property
    def timeout(self) -> tuple[float, float]:
        """``timeout=`` for requests: (connect, read)."""
        return (self.connect_timeout, self.read_timeout)

    def number_option(self, name: str, default: float, cast: type, minimum: float) -> Any:
        """Option ``name`` as a number (URL query values arrive as strings), or ``default``."""
        value = self.options.get(name)
        if value in (None, ""):
            return default
        try:
            number = cast(float(value)) if cast is int else cast(value)
        except (TypeError, ValueError) as exc:
            raise ConfigurationError(
                f"{self.env_variable}: option {name}={value!r} is not a number"
            ) from exc
        if number < minimum:
            raise ConfigurationError(
                f"{self.env_variable}: option {name}={value!r} must be at least {minimum}"
            )
        return number

    def proxy_password(self) -> str:
        return urlsplit(self.proxy).password or "" if self.proxy else ""

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
        self.configure_session(session)
        return session

    def configure_session(self, session: requests.Session) -> None:
        """Add the provider's headers or auth to a new session."""

    def close(self) -> None:
        """Close the pooled connections."""
        if self._session is not None:
            self._session.close()
            self._session = None
