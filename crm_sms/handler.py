"""A WSGI handler that takes the callback endpoints past the site's browser middleware.

A provider posting delivery reports needs none of sessions, authentication, messages, the
language, CSRF or X-Frame-Options; at a campaign's pace (thousands of reports a second) that
middleware costs more CPU than taking the report. ``CallbackHandler`` is Django's
``WSGIHandler`` with one difference: a request to ``crm_sms.urls``' ``callback`` or ``inbound``
URL goes through the site's other middleware (``SecurityMiddleware``'s HTTPS redirect and
headers, ``CommonMiddleware``'s host check, a site's own) and straight to the view, without
URL resolution. Everything else is what Django does: the request/response signals (database
connections are closed or kept as ``CONN_MAX_AGE`` says), ``ATOMIC_REQUESTS``, the answers to
exceptions (a wrong token: Django's 404), the log line of a 4xx/5xx answer.

Use it in the site's ``wsgi.py``::

    from crm_sms.handler import get_wsgi_application
    application = get_wsgi_application()

Any other request is handled by the full middleware. The lean path is off (every request takes
the full one) when a kept middleware has ``process_view``, ``process_exception`` or
``process_template_response`` hooks (this handler does not run them), when a middleware
cannot run synchronously, or when the callback URL does not resolve to ``crm_sms``' view.
"""

from __future__ import annotations

import logging
from typing import Any

import django
from django.conf import settings
from django.core.exceptions import MiddlewareNotUsed
from django.core.handlers.exception import convert_exception_to_response
from django.core.handlers.wsgi import WSGIHandler
from django.http import HttpRequest, HttpResponseBase
from django.urls import NoReverseMatch, Resolver404, ResolverMatch, resolve, reverse, set_urlconf
from django.urls.base import get_script_prefix
from django.utils.log import log_response
from django.utils.module_loading import import_string

from . import webhooks

logger = logging.getLogger("crm_sms.handler")

#: Middleware a provider's request does not need (browser sessions, users, pages).
SKIPPED_MIDDLEWARE = frozenset(
    {
        "django.contrib.sessions.middleware.SessionMiddleware",
        "django.middleware.locale.LocaleMiddleware",
        "django.middleware.csrf.CsrfViewMiddleware",
        "django.contrib.auth.middleware.AuthenticationMiddleware",
        "django.contrib.messages.middleware.MessageMiddleware",
        "django.middleware.clickjacking.XFrameOptionsMiddleware",
    }
)
_HOOKS = ("process_view", "process_exception", "process_template_response")
_VIEWS = {"callback": webhooks.callback, "inbound": webhooks.inbound}


class CallbackHandler(WSGIHandler):
    """Django's WSGI handler; the callback URLs of ``crm_sms.urls`` take the lean path."""

    def load_middleware(self, is_async: bool = False) -> None:
        super().load_middleware(is_async)
        self._lean_chain = None if is_async else self._build_lean_chain()
        self._lean_prefix: str | None = None  # found at the first request (the URLconf)

    def _build_lean_chain(self) -> Any:
        """The site's middleware minus ``SKIPPED_MIDDLEWARE`` around the view; None when one
        of them needs what only the full path does."""
        handler = convert_exception_to_response(self._lean_view)
        for path in reversed(settings.MIDDLEWARE):
            if path in SKIPPED_MIDDLEWARE:
                continue
            middleware = import_string(path)
            if not getattr(middleware, "sync_capable", True):
                logger.debug("Callbacks take the full path: %s is async only", path)
                return None
            try:
                instance = middleware(handler)
            except MiddlewareNotUsed:
                continue
            if any(hasattr(instance, hook) for hook in _HOOKS):
                logger.debug("Callbacks take the full path: %s has view hooks", path)
                return None
            handler = convert_exception_to_response(instance)
        return handler

    def _lean_view(self, request: HttpRequest) -> HttpResponseBase:
        match = request.resolver_match
        view = self.make_view_atomic(match.func)
        return view(request, *match.args, **match.kwargs)

    def _prefix(self) -> str:
        """The path of the callback URLs up to the provider alias ("/sms/callback/"); "" when
        the site's URLconf does not send them to ``crm_sms.webhooks``."""
        if self._lean_prefix is None:
            self._lean_prefix = callback_prefix()
        return self._lean_prefix

    def get_response(self, request: HttpRequest) -> HttpResponseBase:
        match = self._match(request.path_info) if self._lean_chain is not None else None
        if match is None:
            return super().get_response(request)
        set_urlconf(settings.ROOT_URLCONF)
        request.resolver_match = match
        response = self._lean_chain(request)
        response._resource_closers.append(request.close)
        if response.status_code >= 400:
            log_response(
                "%s: %s", response.reason_phrase, request.path, response=response, request=request
            )
        return response

    def _match(self, path: str) -> ResolverMatch | None:
        """What ``resolve(path)`` would give for a callback URL (``<str:…>`` segments); None
        for any other path."""
        route = callback_route(path, self._prefix())
        if route is None:
            return None
        name, provider, token = route
        kwargs = {"provider": provider, "token": token}
        return ResolverMatch(
            _VIEWS[name], (), kwargs, url_name=name, app_names=["crm_sms"], namespaces=["crm_sms"]
        )


def callback_route(path: str, prefix: str) -> tuple[str, str, str] | None:
    """("callback" or "inbound", provider alias, token) of a callback URL's ``path`` under
    ``prefix`` (``callback_prefix()``); None for any other path."""
    if not prefix or not path.startswith(prefix):
        return None
    parts = path[len(prefix) :].split("/")
    if len(parts) == 3 and parts[2] == "":
        name = "callback"
    elif len(parts) == 4 and parts[2] == "inbound" and parts[3] == "":
        name = "inbound"
    else:
        return None
    if not parts[0] or not parts[1]:
        return None
    return name, parts[0], parts[1]


def callback_prefix() -> str:
    """The path (no script prefix) up to the provider alias of ``crm_sms:callback``, checked to
    resolve to ``crm_sms.webhooks``; "" when it does not (the lean path is then off)."""
    try:
        sample = reverse("crm_sms:callback", kwargs={"provider": "p", "token": "t"})
        inbound = reverse("crm_sms:inbound", kwargs={"provider": "p", "token": "t"})
    except NoReverseMatch:
        return ""
    script = get_script_prefix()
    path = "/" + sample[len(script) :] if sample.startswith(script) else sample
    inbound_path = "/" + inbound[len(script) :] if inbound.startswith(script) else inbound
    if not path.endswith("/p/t/") or inbound_path != path + "inbound/":
        return ""
    try:
        if resolve(path).func is not webhooks.callback:
            return ""
        if resolve(inbound_path).func is not webhooks.inbound:
            return ""
    except Resolver404:
        return ""
    return path[: -len("p/t/")]


def get_wsgi_application() -> CallbackHandler:
    """``django.core.wsgi.get_wsgi_application`` with the lean path for callbacks."""
    django.setup(set_prefix=False)
    return CallbackHandler()
