"""crm-sms's one exception tree (as django-anymail has): everything it raises on purpose."""

from __future__ import annotations

from django.core.exceptions import ImproperlyConfigured


class SMSError(Exception):
    """The root of crm-sms's exceptions."""


class ConfigurationError(SMSError, ImproperlyConfigured):
    """A provider is configured wrongly; the message names the setting or env variable."""


class CallbackError(SMSError):
    """A delivery report that cannot be parsed (answered 400)."""


class CallbackForbidden(SMSError):
    """A delivery report whose signature does not match (answered 403)."""


class InvalidTransition(SMSError):
    """A status move that the table in ``crm_sms.transitions`` does not allow."""


class ProviderError(SMSError):
    """A request to a provider failed as a whole: it could not be reached, or its answer is not
    the provider's API's (``HTTPBackend.post``). Sends turn it into ``result`` (a SendResult,
    scrubbed of credentials) for each message; a status query lets it through."""

    def __init__(self, message: str, result: object = None):
        super().__init__(message)
        self.result = result
