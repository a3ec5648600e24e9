"""The delivery-report endpoint: ``POST <prefix>/callback/<provider alias>/<token>/``.

Provider-specific parsing lives in the backend (``parse_callback``/``callback_response``); this
view only authenticates, dispatches and answers with the status codes providers retry on.
"""

from __future__ import annotations

import hmac
import logging

from django.core.exceptions import ImproperlyConfigured
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from . import conf
from .backends import get_backend
from .backends.base import CallbackError, CallbackForbidden

logger = logging.getLogger("crm_sms.webhooks")


def _token_ok(token: str) -> bool:
    # compare_digest against every accepted token, so timing tells nothing about any of them
    ok = False
    for expected in conf.callback_tokens():
        ok |= hmac.compare_digest(token.encode(), expected.encode())
    return ok


@csrf_exempt
@require_POST
def callback(request: HttpRequest, provider: str, token: str) -> HttpResponse:
    if not _token_ok(token):
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
        return HttpResponse("Forbidden", status=403, content_type="text/plain")
    except CallbackError as exc:
        logger.warning("Malformed %s delivery report: %s", provider, exc)
        return HttpResponseBadRequest(f"Malformed report: {exc}", content_type="text/plain")
    from .reports import apply_delivery_reports

    # An error here propagates as a 500, so the provider retries the report later.
    apply_delivery_reports(reports, provider=provider, source="callback")
    return backend.callback_response(reports)
