"""SMS text: GSM-7 or UCS-2, characters and SMS parts, and campaign templates.

The counting follows 3GPP TS 23.038/23.040: 160 GSM-7 units in one SMS, 153 per part of a long
one; 70 UCS-2 units, 67 per part. Extension characters take two GSM-7 units and are never split
across parts; characters outside the BMP take two UCS-2 units (a surrogate pair), never split.

A campaign text is a small sandboxed Django template: plain ``{{ name }}`` variables, the filters
in ``ALLOWED_FILTERS``, and ``{% if %}``/``{% elif %}``/``{% else %}``/``{% endif %}``; nothing
that reads files, loops, or shows server internals. Its size, tag count and nesting are capped,
so rendering one recipient's text takes a bounded time, and every problem is a ValidationError
(see docs/security.md).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.template import Context, Engine, Library, Template
from django.template.base import (
    FilterExpression,
    Lexer,
    Parser,
    TextNode,
    Token,
    TokenType,
    Variable,
    VariableNode,
)
from django.template.defaultfilters import register as default_filters
from django.template.defaulttags import register as default_tags
from django.utils.translation import gettext as _

from .template_errors import template_error_text

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


GSM7_ALL = GSM7_BASIC | GSM7_EXTENSION


def is_gsm7(text: str) -> bool:
    return GSM7_ALL.issuperset(text)


def _unit_costs(text: str, encoding: str) -> Iterable[int]:
    if encoding == GSM7:
        return (2 if ch in GSM7_EXTENSION else 1 for ch in text)
    return (2 if ord(ch) > 0xFFFF else 1 for ch in text)


def sms_info(text: str) -> SMSInfo:
    """Encoding, character count, units and SMS parts of ``text``."""
    encoding = GSM7 if is_gsm7(text) else UCS2
    single, multi = LIMITS[encoding]
    # Two-unit characters counted at C speed: a campaign preview counts many texts.
    if encoding == GSM7:
        doubles = sum(text.count(ch) for ch in GSM7_EXTENSION)
    else:
        doubles = sum(1 for ch in text if ord(ch) > 0xFFFF) if max(text) > "\uffff" else 0
    units = len(text) + doubles
    if units <= single:
        return SMSInfo(encoding, len(text), units, 1 if units else 0, single)
    if not doubles:  # nothing to keep whole across a part boundary
        return SMSInfo(encoding, len(text), units, -(-units // multi), multi)
    costs = list(_unit_costs(text, encoding))
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

#: Block tags a campaign text may use (``{# comments #}`` are allowed too).
ALLOWED_TAGS = ("if", "elif", "else", "endif")
#: Filters a campaign text may use: each costs time linear in its value and arguments, and none
#: can blow a short text up to megabytes (``ljust``, ``stringformat``, ``floatformat`` can).
ALLOWED_FILTERS = (
    "capfirst",
    "cut",
    "date",
    "default",
    "default_if_none",
    "lower",
    "time",
    "title",
    "truncatechars",
    "truncatewords",
    "upper",
    "urlencode",
    "yesno",
)
#: Characters in a template, ``{{ }}`` and ``{% %}`` tags in it, ``{% if %}`` inside one
#: another, and words in one condition; and characters in a rendered text (above what any
#: provider takes: MegaFon 1000, SMS.ru 8 parts).
MAX_SOURCE_LENGTH = 4000
MAX_TAGS = 100
MAX_DEPTH = 5
MAX_CONDITION_WORDS = 20
MAX_TEXT_LENGTH = 2000

_IF_TAGS = "{% if %} … {% elif %} … {% else %} … {% endif %}"

_library = Library()
_library.tags["if"] = default_tags.tags["if"]
_library.filters.update({name: default_filters.filters[name] for name in ALLOWED_FILTERS})

_INVALID = "\x00crm-sms-invalid\x00"
# SMS is plain text: no HTML escaping; unknown names are caught, not rendered blank. No
# loaders: nothing can be read from disk even if a tag that loads templates slipped through.
_engine = Engine(autoescape=False, string_if_invalid=_INVALID + "%s" + _INVALID, loaders=[])


def _template_error(detail: str, code: str = "template_syntax") -> ValidationError:
    return ValidationError(
        _("The message template has an error: %(error)s") % {"error": detail}, code=code
    )


def _check_tokens(tokens: list[Token]) -> None:
    """Refuse, before parsing, a tag outside ALLOWED_TAGS and a template over the caps (the
    parser recurses per nested block and per ``not``, so these also keep it off the stack)."""
    tags = [t for t in tokens if t.token_type in (TokenType.VAR, TokenType.BLOCK)]
    if len(tags) > MAX_TAGS:
        raise ValidationError(
            _("The message template has %(count)d tags; at most %(max)d are allowed.")
            % {"count": len(tags), "max": MAX_TAGS},
            code="template_syntax",
        )
    depth = 0
    for token in tags:
        words = token.contents.split()
        command = words[0] if words and token.token_type == TokenType.BLOCK else None
        if command is None:
            continue
        if command not in ALLOWED_TAGS:
            raise _template_error(
                _(
                    "“%(tag)s” cannot be used in a message: only %(tags)s "
                    "and variables such as %(example)s."
                )
                % {"tag": "{% " + command + " %}", "tags": _IF_TAGS, "example": "{{ first_name }}"}
            )
        if command in ("if", "elif") and len(words) > MAX_CONDITION_WORDS:
            raise _template_error(
                _("the condition “%(tag)s” is too long: at most %(max)d words.")
                % {"tag": "{% " + " ".join(words[:4]) + " … %}", "max": MAX_CONDITION_WORDS}
            )
        depth += {"if": 1, "endif": -1}.get(command, 0)
        if depth > MAX_DEPTH:
            raise _template_error(
                _("at most %(max)d “%(tag)s” may be inside one another.")
                % {"max": MAX_DEPTH, "tag": "{% if %}"}
            )


class _SandboxParser(Parser):
    """Django's parser with messages that say what a campaign text may use instead; it keeps
    every expression it compiles (``{{ }}`` and ``{% if %}`` ones) for ``_check_lookups``."""

    def __init__(self, tokens: list[Token], origin: Any):
        super().__init__(tokens, {}, [_library], origin)
        self.expressions: list[FilterExpression] = []

    def invalid_block_tag(self, token: Token, command: str, parse_until: Any = None) -> None:
        tag = "{% " + command + " %}"
        if parse_until:
            expected = ", ".join("{% " + name + " %}" for name in parse_until)
            detail = _("“%(tag)s” is out of place: %(expected)s expected here.") % {
                "tag": tag,
                "expected": expected,
            }
        else:
            detail = _("“%(tag)s” without %(if)s before it.") % {"tag": tag, "if": "{% if %}"}
        raise _template_error(detail)

    def unclosed_block_tag(self, parse_until: Any) -> None:
        command, _token = self.command_stack.pop()
        raise _template_error(
            _("“%(tag)s” is not closed: add %(end)s.")
            % {"tag": "{% " + command + " %}", "end": "{% " + parse_until[-1] + " %}"}
        )

    def find_filter(self, filter_name: str) -> Any:
        if filter_name not in self.filters:
            raise _template_error(
                _("the filter “%(filter)s” cannot be used in a message. Filters: %(filters)s.")
                % {
                    "filter": "|" + filter_name,
                    "filters": ", ".join("|" + name for name in ALLOWED_FILTERS),
                }
            )
        return self.filters[filter_name]

    def compile_filter(self, token: str) -> FilterExpression:
        expression = super().compile_filter(token)
        self.expressions.append(expression)
        return expression


class _SandboxTemplate(Template):
    """A template compiled with ``_library`` only, after ``_check_tokens``."""

    def compile_nodelist(self) -> Any:
        tokens = Lexer(self.source).tokenize()
        _check_tokens(tokens)
        parser = _SandboxParser(tokens, self.origin)
        nodelist = parser.parse()
        self.extra_data = parser.extra_data
        self.expressions = parser.expressions
        return nodelist


def _compile(source: str) -> Template:
    """The sandboxed template of ``source``; ValidationError for anything wrong with it."""
    if len(source) > MAX_SOURCE_LENGTH:
        raise ValidationError(
            _("The message template has %(count)d characters; at most %(max)d are allowed.")
            % {"count": len(source), "max": MAX_SOURCE_LENGTH},
            code="template_syntax",
        )
    try:
        return _SandboxTemplate(source, engine=_engine)
    except ValidationError:
        raise
    except RecursionError as exc:
        raise _template_error(_("it is too complex, simplify its conditions.")) from exc
    except Exception as exc:  # TemplateSyntaxError, or a tag's own error: the text's fault
        raise _template_error(template_error_text(exc)) from exc


def _check_lookups(template: Template) -> None:
    """Refuse ``{{ first_name.upper }}``: it calls str methods, and on a model instance a
    lookup could reach anything. A text gets plain names, and filters to change them."""
    for expression in template.expressions:
        for variable in _variables(expression):
            if len(variable.lookups) > 1:
                raise _template_error(
                    _("“%(variable)s”: use a name alone, such as %(example)s, with no “.”.")
                    % {"variable": "{{ " + variable.var + " }}", "example": "{{ first_name }}"}
                )


def _variables(expression: FilterExpression) -> Iterable[Variable]:
    """The variables an expression reads: its own and its filters' arguments (not literals)."""
    if isinstance(expression.var, Variable) and expression.var.lookups:
        yield expression.var
    for _func, args in expression.filters:
        for is_variable, arg in args:
            if is_variable and arg.lookups:
                yield arg


class SMSTemplate:
    """A checked campaign text. ``SMSTemplate(text)`` raises ValidationError for a syntax error,
    a tag or filter a text may not use, a template over the size caps, or a variable that is
    not among ``variables``."""

    def __init__(self, source: str, variables: Iterable[str] = CONTACT_VARIABLES):
        if not source or not source.strip():
            raise ValidationError(_("The message text is empty."), code="empty_text")
        self.source = source
        self.variables = tuple(variables)
        self.template = _compile(source)
        for node in self.template.nodelist.get_nodes_by_type(TextNode):
            for opening, closing in (("{{", "}}"), ("{%", "%}")):
                if opening in node.s:
                    raise ValidationError(
                        _("The message template has an error: “%(opening)s” without “%(closing)s”.")
                        % {"opening": opening, "closing": closing},
                        code="template_syntax",
                    )
        variable_nodes = self.template.nodelist.get_nodes_by_type(VariableNode)
        # Names in {% if %} may be unknown (they are false there); in {{ }} they must exist.
        unknown = sorted(
            {
                name
                for node in variable_nodes
                for variable in _variables(node.filter_expression)
                if (name := variable.lookups[0]) not in self.variables
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
        _check_lookups(self.template)
        self._parts = _plain_parts(self.template)
        # Static: the source is the text (not so with a {# comment #}, which is left out).
        self.is_static = self._parts == [(False, source)]

    @property
    def names(self) -> tuple[str, ...]:
        """The variables the text reads (in ``{{ }}``, conditions and filter arguments), in
        the order they first appear: what its rendered texts depend on."""
        found = (
            variable.lookups[0]
            for expression in getattr(self.template, "expressions", ())
            for variable in _variables(expression)
        )
        return tuple(name for name in dict.fromkeys(found) if name in self.variables)

    @property
    def literal_text(self) -> str:
        """The text around the names of a plain template (``is_plain``); "" otherwise."""
        return "".join(text for is_name, text in self._parts or () if not is_name)

    @property
    def is_plain(self) -> bool:
        """Text and plain ``{{ name }}`` only (no tags, no filters): each value is pasted in."""
        return self._parts is not None

    def render(self, values: Mapping[str, Any]) -> str:
        """The text for one recipient. Raises ValidationError if a name could not be resolved,
        a filter failed, or the text would be longer than MAX_TEXT_LENGTH."""
        if self.is_static:
            text = self.source
        elif self._parts is not None and all(
            isinstance(values.get(name), str) for is_var, name in self._parts if is_var
        ):
            text = "".join(values[name] if is_var else name for is_var, name in self._parts)
        else:
            text = self._render_template(values)
        if len(text) > MAX_TEXT_LENGTH:
            raise ValidationError(
                _("The message would have %(count)d characters; at most %(max)d are allowed.")
                % {"count": len(text), "max": MAX_TEXT_LENGTH},
                code="text_too_long",
            )
        return text

    def _render_template(self, values: Mapping[str, Any]) -> str:
        try:
            text = self.template.render(Context(dict(values), autoescape=False))
        except Exception as exc:  # a filter or a value's __str__ failed: this text, not a 500
            raise ValidationError(
                _("The message could not be made from the template: %(error)s")
                % {"error": f"{type(exc).__name__}: {exc}"[:200]},
                code="template_render",
            ) from exc
        if _INVALID in text:
            names = text.split(_INVALID)[1::2]
            raise ValidationError(
                _("The message template uses unknown variable(s): %(names)s")
                % {"names": ", ".join(sorted(set(names)))},
                code="template_variable",
            )
        return text

    def render_contact(self, contact: Any, extra: Mapping[str, Any] | None = None) -> str:
        """The text for ``contact`` (its CONTACT_VARIABLES), with ``extra`` names added."""
        values = {name: getattr(contact, name, "") or "" for name in CONTACT_VARIABLES}
        if extra:
            values.update(extra)
        return self.render(values)


def _plain_parts(template: Template) -> list[tuple[bool, str]] | None:
    """Text and plain ``{{ name }}`` nodes as (is_variable, text or name), or None when the
    template has anything else. Rendered by joining strings, because the template engine per
    row would dominate a 100,000-contact campaign."""
    parts: list[tuple[bool, str]] = []
    for node in template.nodelist:
        if isinstance(node, TextNode):
            parts.append((False, node.s))
        elif (
            isinstance(node, VariableNode)
            and not node.filter_expression.filters
            and len(getattr(node.filter_expression.var, "lookups", None) or ()) == 1
        ):
            parts.append((True, node.filter_expression.var.lookups[0]))
        else:
            return None
    return parts


def render_template(source: str, values: Mapping[str, Any]) -> str:
    """Check and render ``source`` once (``SMSTemplate`` when rendering many)."""
    return SMSTemplate(source, variables=tuple(values)).render(values)
