"""Django's template syntax errors in our own words, translated: a Russian user must not read
"Unused 'b' at end of if expression." inside a Russian message (``crm_sms.text``)."""

from __future__ import annotations

import re

from django.utils.translation import gettext as _

#: Django's messages (as its template engine words them) and ours, by a pattern each.
_PATTERNS = [
    (
        re.compile(r"Unused '(?P<token>.*)' at end of if expression"),
        lambda m: _("“%(token)s” is left over at the end of an if condition.") % m,
    ),
    (
        re.compile(r"Invalid block tag on line (?P<line>\d+): '(?P<tag>[^']*)'"),
        lambda m: _("line %(line)s: the tag “%(tag)s” is unknown or out of place.") % m,
    ),
    (
        re.compile(r"Unclosed tag on line (?P<line>\d+): '(?P<tag>[^']*)'"),
        lambda m: _("line %(line)s: the tag “%(tag)s” is not closed.") % m,
    ),
    (
        re.compile(r"Could not parse the remainder: '(?P<rest>.*)' from '(?P<whole>.*)'"),
        lambda m: _("“%(rest)s” in “%(whole)s” cannot be read.") % m,
    ),
    (
        re.compile(r"Invalid filter: '(?P<name>[^']*)'"),
        lambda m: _("the filter “%(name)s” is unknown.") % m,
    ),
    (
        re.compile(r"Empty variable tag on line (?P<line>\d+)"),
        lambda m: _("line %(line)s: an empty {{ }}.") % m,
    ),
]


def template_error_text(exc: BaseException) -> str:
    """What was wrong with a text's template, in the active language."""
    detail = str(exc)
    for pattern, text in _PATTERNS:
        found = pattern.search(detail)
        if found:
            return text(found.groupdict())
    return _("the template language cannot read it: check its {% %} and {{ }} tags.")
