"""What the sandbox SMSC reads in a submit_sm and writes in a receipt: GSM-7 and UCS-2 text,
concatenation headers, long texts put back together, and the receipt text.

The GSM 03.38 table is the sandbox's own (not the backend's), so the sandbox checks the
backend's encoding instead of sharing its mistakes.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

GSM7 = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞ\x1bÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = {
    0x0A: "\f",
    0x14: "^",
    0x28: "{",
    0x29: "}",
    0x2F: "\\",
    0x3C: "[",
    0x3D: "~",
    0x3E: "]",
    0x40: "|",
    0x65: "€",
}
ESM_UDHI = 0x40


def as_text(value: Any) -> str:
    """A C-octet-string field (bytes from smpplib) as text."""
    return value.decode("latin-1") if isinstance(value, bytes) else str(value or "")


def decode_text(octets: bytes, data_coding: int) -> str:
    """Short message octets as text: GSM-7 (one septet per octet), UCS-2, else Latin-1."""
    if data_coding == 0x08:
        return octets.decode("utf-16-be", errors="replace")
    if data_coding != 0x00:
        return octets.decode("latin-1")
    chars, escape = [], False
    for octet in octets:
        if escape:
            chars.append(GSM7_EXTENSION.get(octet, "?"))
            escape = False
        elif octet == 0x1B:
            escape = True
        else:
            chars.append(GSM7[octet & 0x7F])
    return "".join(chars)


def split_udh(octets: bytes) -> tuple[tuple[int, int, int] | None, bytes]:
    """((reference, total, number) of a concatenation header, or None; the user data)."""
    length = octets[0]
    udh, data = octets[1 : 1 + length], octets[1 + length :]
    position = 0
    while position + 2 <= len(udh):
        iei, size = udh[position], udh[position + 1]
        value = udh[position + 2 : position + 2 + size]
        if iei == 0x00 and size == 3:  # 8-bit reference
            return (value[0], value[1], value[2]), data
        if iei == 0x08 and size == 4:  # 16-bit reference
            return (int.from_bytes(value[:2], "big"), value[2], value[3]), data
        position += 2 + size
    return None, data


class Reassembler:
    """Puts accepted submit_sm back together into messages (not thread-safe: the sandbox
    calls it under its lock)."""

    def __init__(self) -> None:
        self._parts: dict[tuple, dict[int, dict[str, Any]]] = {}

    def add(self, record: dict[str, Any]) -> dict[str, Any] | None:
        """The whole message once ``record`` completes one, else None."""
        octets = record["short_message"] or record["message_payload"]
        concat = None
        if record["esm_class"] & ESM_UDHI and octets:
            concat, octets = split_udh(octets)
        if concat is None:
            return self._message([record], [octets])
        reference, total, number = concat
        key = (record["system_id"], record["source_addr"], record["destination_addr"], reference)
        parts = self._parts.setdefault(key, {})
        parts[number] = {**record, "user_data": octets}
        if len(parts) < total:
            return None
        del self._parts[key]
        ordered = [parts[n] for n in sorted(parts)]
        return self._message(ordered, [part["user_data"] for part in ordered])

    def clear(self) -> None:
        self._parts.clear()

    @staticmethod
    def _message(records: list[dict[str, Any]], chunks: list[bytes]) -> dict[str, Any]:
        first = records[0]
        return {
            "to": first["destination_addr"],
            "sender": first["source_addr"],
            "source_addr_ton": first["source_addr_ton"],
            "source_addr_npi": first["source_addr_npi"],
            "text": decode_text(b"".join(chunks), first["data_coding"]),
            "parts": len(records),
            "data_coding": first["data_coding"],
            "message_ids": [r["message_id"] for r in records],
            "registered_delivery": [r["registered_delivery"] for r in records],
        }


def receipt_text(message_id: str, delivered: bool, submitted: float, done: float) -> str:
    """The classic receipt text (YYMMDDhhmm dates in UTC)."""
    submit_date = datetime.fromtimestamp(submitted, UTC)
    done_date = datetime.fromtimestamp(done, UTC)
    return (
        f"id:{message_id} sub:001 dlvrd:{'001' if delivered else '000'} "
        f"submit date:{submit_date:%y%m%d%H%M} done date:{done_date:%y%m%d%H%M} "
        f"stat:{'DELIVRD' if delivered else 'UNDELIV'} err:{'000' if delivered else '001'}"
    )
