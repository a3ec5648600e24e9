"""A text as SMPP short messages: GSM-7 (data_coding 0) or UCS-2 (8), split into parts with a
concatenation UDH, or whole in ``message_payload``.

``crm_sms.text`` decides the alphabet and its part sizes (160/153, 70/67), so the parts sent
are the parts the preview counted: a GSM-7 extension character (ESC + code) and a UCS-2
surrogate pair are never split across two parts.
"""

from __future__ import annotations

from dataclasses import dataclass

from ... import text as sms_text

DATA_CODING_GSM7 = 0x00  # the SMSC default alphabet: GSM 03.38, one septet per octet
DATA_CODING_UCS2 = 0x08
ESM_CLASS_UDHI = 0x40  # short_message starts with a user data header
MAX_PARTS = 255  # the concatenation header counts parts in one octet

# GSM 03.38 default alphabet, by code (0x1B is the escape to the extension table).
GSM7_BASIC = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {
    "\f": 0x0A,
    "^": 0x14,
    "{": 0x28,
    "}": 0x29,
    "\\": 0x2F,
    "[": 0x3C,
    "~": 0x3D,
    "]": 0x3E,
    "|": 0x40,
    "€": 0x65,
}
_GSM7_CODES = {ch: bytes([code]) for code, ch in enumerate(GSM7_BASIC) if code != 0x1B}
_GSM7_CODES.update({ch: bytes([0x1B, code]) for ch, code in GSM7_EXTENSION.items()})


@dataclass(frozen=True)
class EncodedText:
    """One text ready for submit_sm: ``parts`` are the short_message octets (each with its UDH
    when there are several), or one ``payload`` for message_payload."""

    data_coding: int
    esm_class: int
    parts: list[bytes]
    payload: bool = False


def _units(text: str) -> tuple[int, list[bytes]]:
    """The data_coding and the encoded octets of each character."""
    if sms_text.is_gsm7(text):
        return DATA_CODING_GSM7, [_GSM7_CODES[ch] for ch in text]
    return DATA_CODING_UCS2, [ch.encode("utf-16-be") for ch in text]


def encode_gsm7(text: str) -> bytes:
    """``text`` in the GSM 03.38 default alphabet, one septet per octet (KeyError if it is not
    GSM-7)."""
    return b"".join(_GSM7_CODES[ch] for ch in text)


def encode_text(text: str, reference: int, use_payload: bool = False) -> EncodedText:
    """``text`` as short messages. ``reference`` (0-255) ties the parts of one long text
    together in their UDH; ``use_payload`` puts a long text whole in message_payload."""
    data_coding, chars = _units(text)
    encoding = sms_text.GSM7 if data_coding == DATA_CODING_GSM7 else sms_text.UCS2
    single, multi = sms_text.LIMITS[encoding]
    unit_size = 1 if data_coding == DATA_CODING_GSM7 else 2
    whole = b"".join(chars)
    if len(whole) // unit_size <= single:
        return EncodedText(data_coding, 0, [whole])
    if use_payload:
        return EncodedText(data_coding, 0, [whole], payload=True)
    chunks: list[bytes] = []
    current = bytearray()
    for octets in chars:
        if len(current) + len(octets) > multi * unit_size:
            chunks.append(bytes(current))
            current = bytearray()
        current += octets
    chunks.append(bytes(current))
    if len(chunks) > MAX_PARTS:
        raise ValueError(f"the text needs {len(chunks)} SMS parts; SMPP allows {MAX_PARTS}")
    total = len(chunks)
    parts = [
        bytes([0x05, 0x00, 0x03, reference & 0xFF, total, number]) + chunk
        for number, chunk in enumerate(chunks, start=1)
    ]
    return EncodedText(data_coding, ESM_CLASS_UDHI, parts)
