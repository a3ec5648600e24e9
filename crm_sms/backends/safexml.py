"""Reading providers' XML answers safely, and their dates.

``parse_xml`` refuses what defusedxml refuses -- a DTD, entity declarations, external entities --
so an answer cannot expand entities ("billion laughs") or make us fetch a resource; it uses
only the standard library's expat and ElementTree. Namespaces are dropped from names, since
providers' XML (ASMX ``<string xmlns=...>``) is matched by local names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from datetime import UTC, datetime
from typing import Any
from xml.parsers import expat

#: The largest answer parsed; a provider's answer is a few kilobytes.
XML_MAX_BYTES = 5 * 1024 * 1024
_DATE_FORMATS = ("%d.%m.%Y %H:%M:%S", "%d.%m.%y %H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M:%S")


class _Forbidden(Exception):
    pass


def _forbid(*args: Any) -> None:
    raise _Forbidden


def _local(name: str) -> str:
    return name.rpartition(" ")[2]  # "namespace-uri local" -> "local"


def parse_xml(body: bytes | str) -> ET.Element | None:
    """``body`` as an element tree, or None when it is not well-formed XML, is over 5 MB or
    has a DTD or entity declarations (refused as defusedxml does: no entity expansion, no
    external resources). Namespaces are dropped from tag and attribute names."""
    data = body.encode("utf-8") if isinstance(body, str) else body
    if not data or len(data) > XML_MAX_BYTES:
        return None
    builder = ET.TreeBuilder()
    parser = expat.ParserCreate(namespace_separator=" ")
    parser.StartDoctypeDeclHandler = _forbid
    parser.EntityDeclHandler = _forbid
    parser.UnparsedEntityDeclHandler = _forbid
    parser.ExternalEntityRefHandler = _forbid
    parser.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
    parser.buffer_text = True
    parser.StartElementHandler = lambda name, attrs: builder.start(
        _local(name), {_local(key): value for key, value in attrs.items()}
    )
    parser.EndElementHandler = lambda name: builder.end(_local(name))
    parser.CharacterDataHandler = builder.data
    try:
        parser.Parse(data, True)
        return builder.close()
    except (expat.ExpatError, _Forbidden, AssertionError, SyntaxError, ValueError):
        return None


def parse_date(value: str | None, tz: Any = UTC) -> datetime | None:
    """A provider's date (``dd.mm.yyyy hh:mm:ss`` in ``tz``, ISO, or unix seconds) in UTC; None
    when it is none of these."""
    text = (value or "").strip()
    if text.isdigit() and len(text) in (9, 10):
        return datetime.fromtimestamp(int(text), UTC)
    for fmt in _DATE_FORMATS:
        try:
            return datetime.strptime(text, fmt).replace(tzinfo=tz).astimezone(UTC)
        except ValueError:
            continue
    return None
