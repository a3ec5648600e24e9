"""Cheaper texts: transliteration (Cyrillic -> Latin) and smart encoding (look-alikes -> GSM-7).

One SMS part holds 160 GSM-7 characters but only 70 UCS-2 ones, and a single character outside
the GSM-7 alphabet (a Cyrillic letter, a typographic quote « », a dash —, an ellipsis …, a
non-breaking space) makes the whole text UCS-2. Two transformations win the parts back; both
run after the template is rendered (names are transformed too), and what they produce is what
is stored in ``Message.text``, counted and sent:

- **Smart encoding** (``smart_encode``, on by default: ``smart_encoding=False`` turns it off)
  replaces the punctuation and space look-alikes in ``LOOKALIKES`` (« » “ ” „ ‘ ’ – — … NBSP,
  zero-width characters…) with their GSM-7 twins, but only when that is all that keeps the text
  UCS-2. A text that stays UCS-2 anyway (Cyrillic, emoji) is left exactly as written, so a
  Russian text keeps its typography. Letters are never touched.
- **Transliteration** (``transliterate``, ``translit=True``) writes Cyrillic in Latin letters
  with the Moscow Metro schema of the maintained ``iuliia`` library, then applies the
  look-alikes (a transliterated text would otherwise stay UCS-2 because of a « or a —) and
  ``TRANSLIT_SYMBOLS`` (№ -> N, ₽ -> RUB).

Why the Moscow Metro schema (``mosmetro``): of iuliia's schemas it is the one whose output is
plain ASCII (no diacritics as in GOST 7.79 A/ISO 9, no apostrophes or backticks as in GOST
7.79 B and MVD 782, all of which are outside GSM-7 or read badly) and reads the way Russians
write Latin themselves: е is ``e`` (``klient``, not Wikipedia's and Yandex's ``kliyent``), й
is ``y`` (not the passport ICAO ``i``: ``Yuliya``, not ``Iuliia``), ы is ``y``, ь and ъ are
dropped, and -ий/-ый end in ``y``. It is also the shortest of them on advertising texts (282
characters for 271 Cyrillic ones, against 288-290 for Wikipedia, Yandex Maps and MVD), and a
shorter text is fewer parts. Words written in capitals stay in capitals (``СКИДКА`` ->
``SKIDKA``, where iuliia alone gives ``ZhIZN`` for ``ЖИЗНЬ``).

The live counter (``static/crm_sms/sms_counter.js``) applies the same tables, which
``counter_config()`` hands to the page, so the counter and the preview agree with what is sent.
"""

from __future__ import annotations

import json
import re
from functools import cache, lru_cache
from typing import Any

from django.utils.translation import gettext as _

from .text import GSM7_ALL, is_gsm7

#: The iuliia schema used for transliteration (see the module docstring for why).
SCHEMA = "mosmetro"

#: Punctuation and spaces that look like a GSM-7 character -> that character.
LOOKALIKES: dict[str, str] = {
    **dict.fromkeys("«»“”„‟″〃", '"'),
    **dict.fromkeys("‘’‚‛′‹›´`", "'"),
    **dict.fromkeys("‐‑‒–—―−", "-"),
    "…": "...",
    # no-break, figure, narrow, thin, hair, en, em… spaces; a tab
    **dict.fromkeys("\u00a0\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008", " "),
    **dict.fromkeys("\u2009\u200a\u202f\u205f\t", " "),
    # invisible: zero-width space, non-joiner, joiner, word joiner, BOM, soft hyphen
    **dict.fromkeys("\u200b\u200c\u200d\u2060\ufeff\u00ad", ""),
    **dict.fromkeys("\u2028\u2029", "\n"),  # line and paragraph separators
}
#: Symbols with no GSM-7 twin that a transliterated text writes out in Latin.
TRANSLIT_SYMBOLS: dict[str, str] = {"№": "N", "₽": "RUB"}

_REPLACEABLE = GSM7_ALL | frozenset(LOOKALIKES)
# Regular expressions, not str.translate: a text has few of these, and translate with a table
# costs a dictionary look-up per character.
_LOOKALIKE = re.compile("[" + re.escape("".join(LOOKALIKES)) + "]")
_SYMBOL = re.compile("[" + re.escape("".join(TRANSLIT_SYMBOLS)) + "]")
# A word as iuliia's word reader sees one (\w: letters, digits, "_"), with a Cyrillic letter
# in it; the live counter splits words the same way (/[\p{L}\p{N}_]+/u).
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_CYRILLIC_WORD = re.compile(r"\w*[\u0400-\u04ff]\w*")


@cache
def _schema() -> Any:
    """The iuliia schema ``SCHEMA`` (iuliia is imported only when something is transliterated)."""
    import iuliia
    from iuliia.schema import TranslitSchema

    path = iuliia.schemas.get(SCHEMA).path
    definition = json.loads(path.read_text(encoding="utf-8"))
    return TranslitSchema(
        name=definition["name"],
        mapping=definition["mapping"],
        prev_mapping=definition.get("prev_mapping"),
        next_mapping=definition.get("next_mapping"),
        ending_mapping=definition.get("ending_mapping"),
        description=definition.get("description"),
    )


@lru_cache(maxsize=50_000)
def _word(word: str) -> str:
    """One word transliterated (campaign texts repeat their words: each is done once)."""
    latin = _schema().translate(word)
    return latin.upper() if len(word) > 1 and word.isupper() else latin


def transliterate(text: str) -> str:
    """``text`` with Cyrillic in Latin letters (``SCHEMA``), ``TRANSLIT_SYMBOLS`` written out
    and, when that makes it GSM-7, the look-alikes replaced. Other characters stay."""
    if _CYRILLIC.search(text):
        text = _CYRILLIC_WORD.sub(lambda match: _word(match.group()), text)
    return smart_encode(_SYMBOL.sub(lambda match: TRANSLIT_SYMBOLS[match.group()], text))


def replace_lookalikes(text: str) -> str:
    """``text`` with every character of ``LOOKALIKES`` replaced, whatever the result."""
    return _LOOKALIKE.sub(lambda match: LOOKALIKES[match.group()], text)


def smart_encode(text: str) -> str:
    """``text`` with its look-alikes replaced when that is all that keeps it UCS-2; else
    ``text`` unchanged (a Cyrillic text keeps its « » and —)."""
    if is_gsm7(text) or not _REPLACEABLE.issuperset(text):
        return text  # GSM-7 already, or UCS-2 whatever is replaced
    return replace_lookalikes(text)


def stays_ucs2(text: str) -> bool:
    """Whether every text holding ``text`` is sent in UCS-2 as written (without translit): it
    has a character that is not GSM-7 and that no look-alike replaces (a Cyrillic letter)."""
    return not _REPLACEABLE.issuperset(text)


def prepare_text(text: str, *, translit: bool = False, smart_encoding: bool = True) -> str:
    """The text to store and send for a rendered ``text``: transliterated with ``translit``
    (which always includes smart encoding), else smart-encoded unless ``smart_encoding`` is
    False."""
    if translit:
        return transliterate(text)
    if smart_encoding:
        return smart_encode(text)
    return text


@lru_cache(maxsize=20_000)
def cached_prepare_text(text: str, translit: bool, smart_encoding: bool) -> str:
    """``prepare_text`` for the rows of a campaign (rendered texts repeat a lot)."""
    return prepare_text(text, translit=translit, smart_encoding=smart_encoding)


def counter_config(*, smart_encoding: bool = True) -> dict[str, Any]:
    """What the live counter needs to transform a text as ``prepare_text`` does: the schema's
    letter tables (as iuliia expands them for upper case), the look-alikes, the symbols, and
    its texts in the active language. For ``json_script`` on the Send SMS page."""
    schema = _schema()
    return {
        "schema": SCHEMA,
        "map": schema.map,
        "prev": schema.prev_map,
        "next": schema.next_map,
        "ending": schema.ending_map,
        "lookalikes": LOOKALIKES,
        "symbols": TRANSLIT_SYMBOLS,
        "smart_encoding": smart_encoding,
        "texts": {
            "before_translit": _(
                "before transliteration: {characters} characters, {encoding}, "
                "{segments} SMS part(s)"
            ),
            "before_smart": _(
                "with the original punctuation: {characters} characters, {encoding}, "
                "{segments} SMS part(s)"
            ),
        },
    }
