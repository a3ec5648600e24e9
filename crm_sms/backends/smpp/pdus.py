"""SMPP 3.4 PDUs as octets: smpplib's command classes do the encoding and decoding; this adds
explicit sequence numbers and the framing of a byte stream into PDUs."""

from __future__ import annotations

import logging
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from smpplib import command_codes
from smpplib import smpp as smpplib_pdu

logger = logging.getLogger("crm_sms.backends.smpp")

HEADER = struct.Struct(">LLLL")  # command_length, command_id, command_status, sequence_number
MAX_PDU_LENGTH = 70_000  # a 64 KiB message_payload and its headers
MAX_SEQUENCE = 0x7FFFFFFF
INTERFACE_VERSION = 0x34
RESPONSE_BIT = 0x80000000


class InvalidPDU(ValueError):
    """The stream holds something that is not an SMPP PDU: the connection cannot go on."""


class _NoSequence:
    """The "client" smpplib's PDU classes ask for sequence numbers: ours are set explicitly."""

    sequence = 0

    def next_sequence(self) -> int:
        return 0


_NO_SEQUENCE = _NoSequence()


def make_pdu(command: str, sequence: int, **fields: Any) -> bytes:
    """The octets of one PDU (``command`` as smpplib names it, e.g. "submit_sm")."""
    pdu = smpplib_pdu.make_pdu(command, client=_NO_SEQUENCE, **fields)
    pdu.sequence = sequence
    return pdu.generate()


def parse_pdu(data: bytes) -> Any:
    """One PDU's octets as a smpplib command object (unknown optional parameters skipped).
    Raises on a body smpplib cannot read."""
    return smpplib_pdu.parse_pdu(data, client=_NO_SEQUENCE, allow_unknown_opt_params=True)


@dataclass
class BareResponse:
    """A response whose body smpplib cannot read: its status is all that is known."""

    status: int
    message_id: bytes = b""


def parse_response(data: bytes, status: int) -> Any:
    """A response PDU as a smpplib object, or a ``BareResponse`` with ``status``."""
    try:
        return parse_pdu(data)
    except Exception:
        logger.warning("SMPP: a response that cannot be parsed: %s", data.hex())
        return BareResponse(status)


def header(data: bytes) -> tuple[str | None, int, int, int]:
    """(command name or None when unknown, command_id, command_status, sequence_number)."""
    _length, command_id, status, sequence = HEADER.unpack_from(data)
    return command_name(command_id), command_id, status, sequence


def command_name(command_id: int) -> str | None:
    try:
        return command_codes.get_command_name(command_id)
    except Exception:  # smpplib raises its UnknownCommandError
        return None


def split_pdus(buffer: bytearray) -> Iterator[bytes]:
    """Yield the complete PDUs at the start of ``buffer``, removing them from it; a partial
    one stays for the next read. Raises InvalidPDU for an impossible length."""
    while len(buffer) >= 16:
        length = int.from_bytes(buffer[:4], "big")
        if not 16 <= length <= MAX_PDU_LENGTH:
            raise InvalidPDU(f"invalid PDU length {length}")
        if len(buffer) < length:
            return
        raw = bytes(buffer[:length])
        del buffer[:length]
        yield raw
