"""The delivery-report endpoint: ``POST <prefix>/callback/<provider alias>/<token>/``.

Provider-specific parsing lives in the backend (``parse_callback``/``callback_response``); this
view only authenticates, dispatches and answers with the status codes providers act on:

=====  ==========================================================================================
code   when
=====  ==========================================================================================
200    reports applied -- also repeated, stale and unknown ones (logged), which a retry would not
       fix: the provider would otherwise repeat them forever; the body is the backend's
       ``callback_response`` (MegaFon: ``OK``, SMS.RU: ``100``)
400    the body cannot be parsed (``CallbackError``), or is too large
403    the provider's signature does not match (``CallbackForbidden``)
404    wrong token, unknown provider alias, or a provider that takes no callbacks
405    any method but POST
500    an error of ours (the database is down, a bug): the provider retries the report later
=====  ==========================================================================================

The token is a secret path segment (MegaFon's reports carry no signature). ``CALLBACK_TOKEN`` may
list several tokens (a list, or a comma-separated string) so a token can be rotated: new callback
URLs carry the first one, reports to any of them are accepted.
"""

from __future__ import annotations

import hashlib
import hmac
import logging

from django.core.exceptions import ImproperlyConfigured, SuspiciousOperation
from django.http import Http404, HttpRequest, HttpResponse, UnreadablePostError
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import conf
from .backends import get_backend
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
    try:
        reports = backend.parse_callback(request)
    except CallbackForbidden as exc:
        logger.warning("Refused a %s delivery report: %s", provider, exc)
        return _plain("Forbidden", 403)
    except (CallbackError, SuspiciousOperation, UnreadablePostError) as exc:
        # SuspiciousOperation: Django refused the body (too large, too many fields).
        logger.warning("Malformed %s delivery report: %s", provider, exc)
        return _plain(f"Malformed report: {exc}", 400)
    except Exception:
        logger.exception("Parsing a %s delivery report failed", provider)
        return _plain("Internal error; please retry", 500)

    from .reports import apply_delivery_reports

    try:
        counts = apply_delivery_reports(reports, provider=provider, source="callback")
    except Exception:
        # The database is down or a bug of ours: 500, so the provider retries the report later.
        logger.exception("Applying %d %s delivery report(s) failed", len(reports), provider)
        return _plain("Internal error; please retry", 500)
    logger.debug("Delivery reports from %s: %s", provider, counts)
    return backend.callback_response(reports)
