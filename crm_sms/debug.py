"""Error reports that hide SMS credentials: Django's debug page and the 500 e-mail to ADMINS.

Set it in your settings (the demo site does)::

    DEFAULT_EXCEPTION_REPORTER_FILTER = "crm_sms.debug.SafeExceptionReporterFilter"
"""

from __future__ import annotations

import re
from typing import Any

from django.views import debug

# The credentials of any URL (SMS_URL, DATABASE_URL, CACHE_URL, CELERY_BROKER_URL, …):
# "user:password@" keeps the user, "secret@" (SMS.RU's api_id) is a secret as a whole.
_URL_CREDENTIALS = re.compile(r"(?P<scheme>[a-z][a-z0-9+.-]*://)(?P<userinfo>[^@/?#\s]+)@", re.I)
# Shorter tokens would mask ordinary words; a callback token is a long random string.
_MIN_TOKEN_LENGTH = 8


class SafeExceptionReporterFilter(debug.SafeExceptionReporterFilter):
    """Django's filter, and also: every ``SMS_URL*`` setting or environment variable (a
    provider's login and password), every name with ``TOKEN`` (``SMS_CALLBACK_TOKEN``,
    ``*_TOKEN``), the password of any URL with credentials, and the callback tokens wherever
    they appear in a value (the callback path in ``PATH_INFO``).

    Settings and ``request.META`` are cleansed with DEBUG on or off, as Django does.
    """

    # Django's names (API|AUTH|TOKEN|KEY|SECRET|PASS|SIGNATURE|HTTP_COOKIE), and SMS_URL.
    hidden_settings = re.compile(
        debug.SafeExceptionReporterFilter.hidden_settings.pattern + "|SMS_URL", flags=re.I
    )

    def cleanse_setting(self, key: Any, value: Any) -> Any:
        """``value`` with secrets replaced by ``cleansed_substitute`` (dicts and lists too)."""
        value = super().cleanse_setting(key, value)
        if isinstance(value, str) and value != self.cleansed_substitute:
            value = _URL_CREDENTIALS.sub(self._cleanse_userinfo, value)
            for token in _callback_tokens():
                value = value.replace(token, self.cleansed_substitute)
        return value

    def _cleanse_userinfo(self, match: re.Match) -> str:
        user, colon, _password = match["userinfo"].partition(":")
        kept = user + ":" if colon else ""
        return f"{match['scheme']}{kept}{self.cleansed_substitute}@"


def _callback_tokens() -> list[str]:
    # An error report must not fail because the settings it reports on are broken.
    try:
        from . import conf

        return [t for t in conf.callback_tokens() if len(t) >= _MIN_TOKEN_LENGTH]
    except Exception:
        return []
