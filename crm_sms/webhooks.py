"""The delivery-report endpoint: ``POST <prefix>/callback/<provider alias>/<token>/``.

Provider-specific parsing lives in the backend (``parse_callback``/``callback_response``); this
view only authenticates, dispatches and answers with the status codes providers act on:

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
404    wrong token, unknown provider alias, or a provider that takes no callbacks
405    any method but POST
413    the body is larger than ``CRM_SMS["CALLBACK_MAX_BYTES"]`` (5 MB)
500    an error of ours (a bug, or the database is down and the spool cannot be written either):
       the provider retries the report later
=====  ==========================================================================================

The token is a secret path segment (MegaFon's reports carry no signature). ``CALLBACK_TOKEN`` may
list several tokens (a list, or a comma-separated string) so a token can be rotated: new callback
URLs carry the first one, reports to any of them are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.core.exceptions import ImproperlyConfigured, RequestDataTooBig, SuspiciousOperation
from django.db import InterfaceError, OperationalError
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import conf
from .backends import get_backend
from .backends.base import BaseBackend, DeliveryReport
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


def _plain(text: str, status: int) -> HttpResponse:
    return HttpResponse(text, status=status, content_type="text/plain; charset=utf-8")


@csrf_exempt
@require_POST
def callback(request: HttpRequest, provider: str, token: str) -> HttpResponse:
    """Receive a provider's delivery report(s), apply them, answer as the table above says."""
    if not token_is_valid(token):
        logger.warning("Delivery report to %s with a wrong token refused", provider)
        raise Http404("No such callback")
    try:
        backend = get_backend(provider)
    except ImproperlyConfigured as exc:
        raise Http404("No such provider") from exc
    if not backend.supports_callbacks:
        raise Http404("This provider takes no callbacks")
    refusal = _read_body(request, provider)
    if refusal is not None:
        return refusal
    try:
        reports = backend.parse_callback(request)
    except CallbackForbidden as exc:
        logger.warning("Refused a %s delivery report: %s", provider, _short(exc))
        return _plain("Forbidden", 403)
    except RequestDataTooBig as exc:
        logger.warning("Refused a %s delivery report: %s", provider, _short(exc))
        return _plain("Report too large", 413)
    except (CallbackError, SuspiciousOperation, UnreadablePostError, ValueError) as exc:
        # ValueError: not UTF-8, not JSON, a number too long; SuspiciousOperation: Django
        # refused the form (too many fields). Answered in a line, without a traceback.
        logger.warning("Malformed %s delivery report: %s", provider, _short(exc))
        return _plain(f"Malformed report: {_short(exc)}", 400)
    except RecursionError:
        logger.warning("Malformed %s delivery report: nested too deeply", provider)
        return _plain("Malformed report: nested too deeply", 400)
    except Exception:
        logger.exception("Parsing a %s delivery report failed", provider)
        return _plain("Internal error; please retry", 500)
    return _apply(backend, provider, reports)


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
            return _plain("Malformed report: the body could not be read", 400)
        if len(body) <= limit:
            return None
    logger.warning("A %s delivery report over %d bytes refused", provider, limit)
    return _plain(f"Report too large (the limit is {limit} bytes)", 413)


def _apply(backend: BaseBackend, provider: str, reports: list[DeliveryReport]) -> HttpResponse:
    """Apply the parsed reports; spool them when the database is unavailable (200 either way)."""
    from .reports import apply_delivery_reports

    try:
        counts = apply_delivery_reports(reports, provider=provider, source="callback")
    except (OperationalError, InterfaceError) as exc:
        return _spool(backend, provider, reports, exc)
    except Exception:
        # A bug of ours: 500, so the provider retries the report later.
        logger.exception("Applying %d %s delivery report(s) failed", len(reports), provider)
        return _plain("Internal error; please retry", 500)
    logger.debug("Delivery reports from %s: %s", provider, counts)
    return backend.callback_response(reports)


def _spool(
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
        return _plain("Internal error; please retry", 500)
    logger.warning(
        "The database is unavailable (%s): %d %s delivery report(s) spooled to %s, to be "
        "applied when it is back",
        _short(error),
        len(reports),
        provider,
        path,
    )
    return backend.callback_response(reports)
