"""SMS text: GSM-7 or UCS-2, characters and SMS parts, and campaign templates.

The counting follows 3GPP TS 23.038/23.040: 160 GSM-7 units in one SMS, 153 per part of a long
one; 70 UCS-2 units, 67 per part. Extension characters take two GSM-7 units and are never split
across parts; characters outside the BMP take two UCS-2 units (a surrogate pair), never split.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.template import Context, Engine, TemplateSyntaxError
from django.template.base import TextNode, VariableNode
from django.utils.translation import gettext as _

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("\f^{}\\[~]|€")

GSM7 = "GSM-7"
UCS2 = "UCS-2"
LIMITS = {GSM7: (160, 153), UCS2: (70, 67)}


@dataclass(frozen=True)
class SMSInfo:
    encoding: str  # GSM-7 or UCS-2
    characters: int  # as a person counts them
    units: int  # GSM-7 septets or UCS-2 code units
    segments: int  # SMS parts the subscriber is billed for
    per_segment: int  # units per part at this length (160/153 or 70/67)

    def as_dict(self) -> dict[str, Any]:
        return {
            "encoding": self.encoding,
            "characters": self.characters,
            "units": self.units,
            "segments": self.segments,
            "per_segment": self.per_segment,
        }


def is_gsm7(text: str) -> bool:
    return all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)


def _unit_costs(text: str, encoding: str) -> Iterable[int]:
    if encoding == GSM7:
        return (2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return (2 if ord(ch) > 0xFFFF else 1 for ch in text)


def sms_info(text: str) -> SMSInfo:
    """Encoding, character count, units and SMS parts of ``text``."""
    encoding = GSM7 if is_gsm7(text) else UCS2
    single, multi = LIMITS[encoding]
    costs = list(_unit_costs(text, encoding))
    units = sum(costs)
    if units <= single:
        return SMSInfo(encoding, len(text), units, 1 if units else 0, single)
    segments, used = 1, 0
    for cost in costs:
        if used + cost > multi:  # a pair that does not fit moves whole to the next part
            segments += 1
            used = 0
        used += cost
    return SMSInfo(encoding, len(text), units, segments, multi)


def count_segments(text: str) -> int:
    return sms_info(text).segments


# --- templates ---------------------------------------------------------------------------

#: Contact fields a campaign text may use.
CONTACT_VARIABLES = ("first_name", "last_name", "middle_name", "phone")

_INVALID = "\x00crm-sms-invalid\x00"
# SMS is plain text: no HTML escaping; unknown names are caught, not rendered blank.
_engine = Engine(autoescape=False, string_if_invalid=_INVALID + "%s" + _INVALID)


class SMSTemplate:
    """A checked campaign text. ``SMSTemplate(text)`` raises ValidationError for a syntax error
    or a variable that is not among ``variables``."""

    def __init__(self, source: str, variables: Iterable[str] = CONTACT_VARIABLES):
        if not source or not source.strip():
            raise ValidationError(_("The message text is empty."), code="empty_text")
        self.source = source
        self.variables = tuple(variables)
        try:
            self.template = _engine.from_string(source)
        except TemplateSyntaxError as exc:
            raise ValidationError(
                _("The message template has an error: %(error)s") % {"error": exc},
                code="template_syntax",
            ) from exc
        for node in self.template.nodelist.get_nodes_by_type(TextNode):
            for opening, closing in (("{{", "}}"), ("{%", "%}")):
                if opening in node.s:
                    raise ValidationError(
                        _("The message template has an error: “%(opening)s” without “%(closing)s”.")
                        % {"opening": opening, "closing": closing},
                        code="template_syntax",
                    )
        unknown = sorted(
            {
                name
                for node in self.template.nodelist.get_nodes_by_type(VariableNode)
                if (name := _variable_name(node)) and name not in self.variables
            }
        )
        if unknown:
            raise ValidationError(
                _("Unknown variable(s) in the message: %(unknown)s. Available: %(known)s.")
                % {
                    "unknown": ", ".join("{{ " + n + " }}" for n in unknown),
                    "known": ", ".join("{{ " + n + " }}" for n in self.variables),
                },
                code="template_variable",
            )
        self.is_static = not self.template.nodelist.get_nodes_by_type(VariableNode) and (
            "{%" not in source
        )
        # Text and plain {{ name }} nodes only: rendered by joining strings, because the
        # template engine per row would dominate a 100,000-contact campaign.
        self._parts: list[tuple[bool, str]] | None = []
        for node in self.template.nodelist:
            if isinstance(node, TextNode):
                self._parts.append((False, node.s))
            elif (
                isinstance(node, VariableNode)
                and not node.filter_expression.filters
                and len(getattr(node.filter_expression.var, "lookups", None) or ()) == 1
            ):
                self._parts.append((True, node.filter_expression.var.lookups[0]))
            else:
                self._parts = None
                break

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one recipient; raises ValidationError if a name could not be resolved."""
        if self.is_static:
            return self.source
        if self._parts is not None and all(
            isinstance(values.get(name), str) for is_var, name in self._parts if is_var
        ):
            return "".join(values[name] if is_var else name for is_var, name in self._parts)
        text = self.template.render(Context(dict(values), autoescape=False))
        if _INVALID in text:
            names = text.split(_INVALID)[1::2]
            raise ValidationError(
                _("The message template uses unknown variable(s): %(names)s")
                % {"names": ", ".join(sorted(set(names)))},
                code="template_variable",
            )
        return text

    def render_contact(self, contact: Any, extra: Mapping[str, Any] | None = None) -> str:
        values = {name: getattr(contact, name, "") or "" for name in CONTACT_VARIABLES}
        if extra:
            values.update(extra)
        return self.render(values)


def _variable_name(node: VariableNode) -> str | None:
    var = node.filter_expression.var
    lookups = getattr(var, "lookups", None)
    return lookups[0] if lookups else None


def render_template(source: str, values: Mapping[str, Any]) -> str:
    """Check and render ``source`` once (``SMSTemplate`` when rendering many)."""
    return SMSTemplate(source, variables=tuple(values)).render(values)
