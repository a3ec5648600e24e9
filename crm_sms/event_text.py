"""Event descriptions kept language-neutral, shown in the reader's language.

A worker writes events whatever language is active (often the site's default, Russian), but an
English reader must not see "Попытка 1". So a description is stored as its English msgid:

- a text without parameters is stored as the msgid itself (``gettext_noop("Accepted")``);
- a text with parameters is an :class:`EventText`: a ``str`` whose value is the English text
  ("Attempt 2", what an API reader or a signal receiver sees) and which carries the msgid and
  its parameters; ``MessageEvent.params`` stores them (``{"msgid": ..., "args": {...}}``).

:func:`describe` translates either at display time. A description that is no msgid (a
provider's own error text, an event written before this) is shown as it was stored.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django.utils.translation import gettext


class EventText(str):
    """An English event description that remembers its msgid and parameters.

    ``EventText("Attempt %(n)d", n=2)`` is the ``str`` "Attempt 2"; a parameter may be an
    EventText itself (translated too when shown)."""

    msgid: str
    args: dict[str, Any]

    def __new__(cls, msgid: str, **args: Any) -> EventText:
        text = super().__new__(cls, msgid % args if args else msgid)
        text.msgid = msgid
        text.args = args
        return text

    def as_params(self) -> dict[str, Any]:
        """What ``MessageEvent.params`` stores (JSON)."""
        return {"msgid": self.msgid, "args": {k: _jsonable(v) for k, v in self.args.items()}}


def _jsonable(value: Any) -> Any:
    if isinstance(value, EventText):
        return value.as_params()
    if isinstance(value, int | float | bool) or value is None:
        return value
    return str(value)


def event_params(description: Any) -> dict[str, Any] | None:
    """``MessageEvent.params`` for a description: its msgid and arguments, or None."""
    return description.as_params() if isinstance(description, EventText) else None


def describe(description: str, params: Mapping[str, Any] | None = None) -> str:
    """The stored description in the active language."""
    if params and params.get("msgid"):
        return _translate(params)
    return gettext(description) if description else ""


def _translate(params: Mapping[str, Any]) -> str:
    msgid = str(params["msgid"])
    args = {
        key: _translate(value) if isinstance(value, Mapping) and "msgid" in value else value
        for key, value in (params.get("args") or {}).items()
    }
    try:
        return gettext(msgid) % args if args else gettext(msgid)
    except (KeyError, TypeError, ValueError):  # a translation that does not fit its msgid
        return msgid % args if args else msgid
