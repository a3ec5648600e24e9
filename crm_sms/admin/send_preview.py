"""What the "Send SMS…" page shows about consent, quiet hours, transliteration and cost
(issue 13): the live counter's configuration (its texts with Russian plurals, issue 14.5) and
the preview's extra lines."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.utils import formats
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

from .. import costs, inbound, translit

#: Numbers whose plural form the counter is told; larger ones take that of 100 + n % 100,
#: which is theirs in every gettext plural rule (they look at n % 10 and n % 100).
PLURAL_SAMPLES = 200


def plural_forms(phrase: Callable[[int], str]) -> dict[str, list]:
    """``phrase(n)`` (an ngettext with ``%(count)s``) for the counter's JavaScript: its
    distinct ``forms`` and, for each n below PLURAL_SAMPLES, the ``index`` of n's form."""
    forms: list[str] = []
    index: list[int] = []
    for n in range(PLURAL_SAMPLES):
        form = phrase(n)
        if form not in forms:
            forms.append(form)
        index.append(forms.index(form))
    return {"forms": forms, "index": index}


def _characters(n: int) -> str:
    return ngettext("%(count)s character", "%(count)s characters", n)


def _parts(n: int) -> str:
    return ngettext("%(count)s SMS part", "%(count)s SMS parts", n)


def counter_config() -> dict[str, Any]:
    """The live counter's transformations (``crm_sms.translit.counter_config``), the
    unsubscribe phrase it appends when "advertising" is chosen, and its texts: ``{characters}``
    and ``{segments}`` in them are filled with the ``plural`` forms."""
    config = translit.counter_config()
    texts = {
        **config["texts"],
        "before_translit": _("before transliteration: {characters}, {encoding}, {segments}"),
        "before_smart": _("with the original punctuation: {characters}, {encoding}, {segments}"),
    }
    return {
        **config,
        "texts": texts,
        "plural": {"characters": plural_forms(_characters), "segments": plural_forms(_parts)},
        "unsubscribe": inbound.unsubscribe_config(),
    }


def total_line(preview: Any) -> str:
    """ "In all: 5 SMS parts to 3 recipients.", each number with its own plural."""
    # The msgid of the page's recipient count ({% blocktranslate count counter=… %}).
    recipients = ngettext("%(counter)s recipient", "%(counter)s recipients", preview.recipients)
    recipients %= {"counter": preview.recipients}
    return _("In all: %(parts)s to %(recipients)s.") % {
        "parts": _parts(preview.total_segments) % {"count": preview.total_segments},
        "recipients": recipients,
    }


def _money(amount: Any, currency: str) -> str:
    return "" if amount is None else costs.format_money(amount, currency)


def _when(at: Any) -> str:
    return formats.date_format(at, "DATETIME_FORMAT") if at is not None else ""


def window_line(preview: Any) -> str:
    """ "Send window: … in each recipient's local time", the waiting recipients after it."""
    if preview.window:
        line = _("Send window: %(window)s in each recipient's local time.") % {
            "window": preview.window
        }
    else:
        line = _("Send window: at any hour.")
    if preview.waiting and preview.first_opening == preview.last_opening:
        line += " " + ngettext(
            "%(waiting)d recipient's window is closed: they get it at %(first)s.",
            "%(waiting)d recipients' windows are closed: they get it at %(first)s.",
            preview.waiting,
        ) % {"waiting": preview.waiting, "first": _when(preview.first_opening)}
    elif preview.waiting:
        line += " " + ngettext(
            "%(waiting)d recipient's window is closed: they get it from %(first)s to %(last)s.",
            "%(waiting)d recipients' windows are closed: they get it from %(first)s to %(last)s.",
            preview.waiting,
        ) % {
            "waiting": preview.waiting,
            "first": _when(preview.first_opening),
            "last": _when(preview.last_opening),
        }
    return line


def cost_line(preview: Any) -> str:
    """The estimated cost (and before the transformations, when they changed it) or ""."""
    if preview.estimated_cost is None:
        return ""
    line = _("Estimated cost: %(cost)s.") % {
        "cost": _money(preview.estimated_cost, preview.currency)
    }
    before = preview.estimated_cost_before
    if before is not None and before != preview.estimated_cost:
        line += " " + _("As written it would cost %(cost)s.") % {
            "cost": _money(before, preview.currency)
        }
    return line


def balance_line(preview: Any) -> str:
    balance = costs.cached_balance(preview.provider)
    if balance is None:
        return ""
    return _("Balance of the provider: %(balance)s.") % {
        "balance": _money(balance.amount, balance.currency)
    }


def compliance_context(preview: Any) -> dict[str, Any]:
    """The template context the page's consent, window, translit and cost parts need."""
    context: dict[str, Any] = {"translit_config": counter_config()}
    if preview is None:
        return context
    return {
        **context,
        "window_line": window_line(preview),
        "total_line": total_line(preview),
        "cost_line": cost_line(preview),
        "balance_line": balance_line(preview),
        "balance_warning": costs.balance_warning(preview),
    }
