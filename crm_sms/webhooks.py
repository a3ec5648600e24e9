"""The delivery-report endpoint, ``POST <prefix>/callback/<provider alias>/<token>/``, and the
incoming-message endpoint, ``POST <prefix>/callback/<provider alias>/<token>/inbound/``.

Provider-specific parsing lives in the backend (``parse_callback``/``callback_response``,
``parse_inbound``/``inbound_response``); these views only authenticate, dispatch and answer with
the status codes providers act on (for an incoming message as for a report; ``crm_sms.inbound``
acts on it: opt-out keywords, the rest ignored with 200):

=====  ==========================================================================================
code   when
=====  ==========================================================================================
200    reports applied -- also repeated, stale, unknown and invalid ones (logged, one line per
       kind), which a retry would not fix: the provider would otherwise repeat them forever;
       and reports spooled because the database is unavailable (``crm_sms.inbox``: applied by
       the worker when it is back). The body is the backend's ``callback_response`` (MegaFon:
       ``OK``, SMS.RU: ``100``)
400    the body cannot be parsed: ``CallbackError``, not UTF-8 or not JSON, nested too deeply,
       too many form fields (a short message, no traceback)
403    the provider's signature does not match (``CallbackForbidden``)
404    wrong token, unknown provider alias, or a provider that takes no callbacks (no incoming
       messages, for the inbound endpoint)
405    any method but POST
413    the body is larger than ``CRM_SMS["CALLBACK_MAX_BYTES"]`` (5 MB)
500    an error of ours (a bug, or the database is down and the spool cannot be written either):
       the provider retries the report later
=====  ==========================================================================================

The token is a secret path segment (MegaFon's reports carry no signature). ``CALLBACK_TOKEN`` may
list several tokens (a list, or a comma-separated string) so a token can be rotated: new callback
URLs carry the first one, reports to any of them are accepted.

A provider that posts incoming messages and reports to the one URL of its account's settings
(SMSC) gets its messages handled at the delivery-report URL too (``callback_is_inbound``).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
from collections.abc import Callable
from typing import Any

from django.core.exceptions import (
    BadRequest,
    ImproperlyConfigured,
    RequestDataTooBig,
    SuspiciousOperation,
)
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import conf
from .backends import get_backend
from .backends.base import BaseBackend, DeliveryReport, InboundMessage
from .exceptions import CallbackError, CallbackForbidden

logger = logging.getLogger("crm_sms.webhooks")


def _digest(value: str) -> bytes:
    return hashlib.sha256(value.encode("utf-8", "surrogatepass")).digest()


def token_is_valid(token: str) -> bool:
    """Whether ``token`` is one of ``CALLBACK_TOKEN``'s tokens, compared in constant time.

    Both sides are hashed first so the comparison time does not depend on the tokens' lengths
    either, and every configured token is compared, so timing tells nothing about any of them.
    """
    given = _digest(token)
    ok = False
    for expected in conf.callback_tokens():
        ok |= hmac.compare_digest(given, _digest(expected))
    return ok


def plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


def _backend(provider: str, token: str, what: str) -> BaseBackend:
    """The backend of ``provider``; Http404 for a wrong token or an unknown provider."""
    if not token_is_valid(token):
        logger.warning("A %s to %s with a wrong token refused", what, provider)
        raise Http404("No such callback")
    try:
        return get_backend(provider)
    except ImproperlyConfigured as exc:
        raise Http404("No such provider") from exc


def callback_backend(provider: str, token: str) -> BaseBackend:
    """The backend taking delivery reports at ``provider``'s URL; Http404 for a wrong token,
    an unknown provider alias or a provider that takes no callbacks."""
    backend = _backend(provider, token, "delivery report")
    if not backend.supports_callbacks:
        raise Http404("This provider takes no callbacks")
    return backend


@csrf_exempt
@require_POST
def callback(request: HttpRequest, provider: str, token: str) -> HttpResponse:
    """Receive a provider's delivery report(s), apply them, answer as the table above says."""
    backend = callback_backend(provider, token)
    refusal = _read_body(request, provider)
    if refusal is not None:
        return refusal
    parsed = parse_or_refuse(
        lambda: _report_or_inbound(backend, request), provider, "delivery report"
    )
    if isinstance(parsed, HttpResponse):
        return parsed
    inbound, items = parsed
    if inbound:
        return _act_on_inbound(backend, provider, items)
    return _apply(backend, provider, items)


@csrf_exempt
@require_POST
def inbound(request: HttpRequest, provider: str, token: str) -> HttpResponse:
    """Receive incoming SMS (replies) and act on them (``crm_sms.inbound``); answers as the
    table above says."""
    backend = _backend(provider, token, "incoming message")
    if not backend.supports_inbound:
        raise Http404("This provider delivers no incoming messages")
    refusal = _read_body(request, provider)
    if refusal is not None:
        return refusal
    parsed = parse_or_refuse(lambda: backend.parse_inbound(request), provider, "incoming message")
    if isinstance(parsed, HttpResponse):
        return parsed
    return _act_on_inbound(backend, provider, parsed)


def _report_or_inbound(backend: BaseBackend, request: HttpRequest) -> tuple[bool, list[Any]]:
    """(True, incoming messages) or (False, delivery reports) of a request to the report URL."""
    if backend.supports_inbound and backend.callback_is_inbound(request):
        return True, backend.parse_inbound(request)
    return False, backend.parse_callback(request)


def parse_or_refuse(parse: Callable[[], Any], provider: str, what: str) -> Any:
    """What ``parse()`` returns, or the answer to a request it refused: 403 (signature), 413,
    400 (malformed: a line, no traceback), 500 (a bug of ours)."""
    try:
        return parse()
    except CallbackForbidden as exc:
        logger.warning("Refused a %s %s: %s", provider, what, _short(exc))
        return plain("Forbidden", 403)
    except RequestDataTooBig as exc:
        logger.warning("Refused a %s %s: %s", provider, what, _short(exc))
        return plain("Report too large", 413)
    except (BadRequest, CallbackError, SuspiciousOperation, UnreadablePostError, ValueError) as exc:
        # ValueError: not UTF-8, not JSON, a number too long; SuspiciousOperation: Django
        # refused the form (too many fields); BadRequest: a form that is not UTF-8. Answered
        # in a line, without a traceback.
        logger.warning("Malformed %s %s: %s", provider, what, _short(exc))
        return plain(f"Malformed report: {_short(exc)}", 400)
    except RecursionError:
        logger.warning("Malformed %s %s: nested too deeply", provider, what)
        return plain("Malformed report: nested too deeply", 400)
    except Exception:
        logger.exception("Parsing a %s %s failed", provider, what)
        return plain("Internal error; please retry", 500)


def _act_on_inbound(
    backend: BaseBackend, provider: str, messages: list[InboundMessage]
) -> HttpResponse:
    """Opt out the senders of keywords (``crm_sms.inbound``); 500 on an error of ours or of
    the database, so the provider may post the messages again."""
    from .inbound import handle_inbound

    try:
        counts = handle_inbound(messages, provider=provider)
    except Exception:
        logger.exception("Handling %d %s incoming message(s) failed", len(messages), provider)
        return plain("Internal error; please retry", 500)
    logger.debug("Incoming messages from %s: %s", provider, counts)
    return backend.inbound_response(messages)


def _short(exc: BaseException, limit: int = 200) -> str:
    """An exception's text for a log line or an answer: its first line, at most ``limit``."""
    lines = str(exc).strip().splitlines()
    text = lines[0] if lines else type(exc).__name__
    return text if len(text) <= limit else text[:limit] + "…"


def _read_body(request: HttpRequest, provider: str) -> HttpResponse | None:
    """Read the body up to ``CALLBACK_MAX_BYTES`` (413 beyond it, before anything is parsed).

    This endpoint's own limit replaces Django's ``DATA_UPLOAD_MAX_MEMORY_SIZE`` (meant for the
    site's forms): the body read here is what ``request.body`` and ``request.POST`` give the
    backend. Django's ``DATA_UPLOAD_MAX_NUMBER_FIELDS`` still applies to form posts.
    """
    limit = int(conf.get_setting("CALLBACK_MAX_BYTES"))
    try:
        declared = int(request.META.get("CONTENT_LENGTH") or 0)
    except ValueError:
        declared = 0
    if declared <= limit:
        try:
            if hasattr(request, "_body"):  # a middleware read it, within Django's limit
                body = request.body
            else:
                body = request._body = request.read(limit + 1)  # request.body from now on
        except OSError as exc:  # UnreadablePostError: the client went away
            logger.warning("Unreadable %s delivery report: %s", provider, _short(exc))
            return plain("Malformed report: the body could not be read", 400)
        if len(body) <= limit:
            return None
    return too_large(provider, limit)


def too_large(provider: str, limit: int) -> HttpResponse:
    """The answer to a report over ``CALLBACK_MAX_BYTES`` (logged)."""
    logger.warning("A %s delivery report over %d bytes refused", provider, limit)
    return plain(f"Report too large (the limit is {limit} bytes)", 413)


def _apply(backend: BaseBackend, provider: str, reports: list[DeliveryReport]) -> HttpResponse:
    """Apply the parsed reports, or queue them (``CRM_SMS["REPORTS"]``: ``inbox.receive_reports``);
    spool them when the database is unavailable (200 either way)."""
    from .inbox import receive_reports

    try:
        counts = receive_reports(reports, provider=provider)
    except (OperationalError, InterfaceError) as exc:
        return spool(backend, provider, reports, exc)
    except Exception:
        # A bug of ours: 500, so the provider retries the report later.
        logger.exception("Applying %d %s delivery report(s) failed", len(reports), provider)
        return plain("Internal error; please retry", 500)
    logger.debug("Delivery reports from %s: %s", provider, counts)
    return backend.callback_response(reports)


def spool(
    backend: BaseBackend, provider: str, reports: list[DeliveryReport], error: Exception
) -> HttpResponse:
    """The database cannot take the reports now: keep them on disk (``crm_sms.inbox``), to be
    applied when it is back, and tell the provider they arrived."""
    from .inbox import spool_reports

    try:
        path = spool_reports(reports, provider=provider)
    except Exception:
        logger.exception(
            "The database is unavailable (%s) and %d %s delivery report(s) could not be "
            "spooled either; answered 500 so the provider retries",
            _short(error),
            len(reports),
            provider,
        )
        return plain("Internal error; please retry", 500)
    logger.warning(
        "The database is unavailable (%s): %d %s delivery report(s) spooled to %s, to be "
        "applied when it is back",
        _short(error),
        len(reports),
        provider,
        path,
    )
    return backend.callback_response(reports)
