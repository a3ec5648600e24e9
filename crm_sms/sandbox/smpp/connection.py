"""One ESME's connection to the sandbox SMSC: read in its own thread, written (under a lock)
by that thread, by the scheduler (delayed answers) and by whoever delivers a receipt."""

from __future__ import annotations

import itertools
import socket
import threading
from collections.abc import Callable
from typing import Any

from ...backends.smpp.pdus import InvalidPDU, split_pdus


class ESMEConnection:
    """``on_pdu(connection, raw)`` handles each PDU read; ``on_close(connection)`` runs once
    when the connection ends, however it ends."""

    def __init__(
        self,
        sock: socket.socket,
        on_pdu: Callable[[ESMEConnection, bytes], None],
        on_close: Callable[[ESMEConnection], None],
    ):
        self.sock = sock
        self.on_pdu, self.on_close = on_pdu, on_close
        self.system_id = ""
        self.bound = False
        self.outstanding = 0  # submit_sm read and not answered yet
        self.unacked: dict[int, dict[str, Any]] = {}  # deliver_sm sequence -> receipt
        self.closed = False
        self._write_lock = threading.Lock()
        self._sequences = itertools.count(1)

    def next_sequence(self) -> int:
        return next(self._sequences)

    def send(self, data: bytes) -> bool:
        """Write one PDU; False when the connection is closed or the write failed."""
        with self._write_lock:
            if self.closed:
                return False
            try:
                self.sock.sendall(data)
                return True
            except OSError:
                return False

    def close(self) -> None:
        """Close without unbind (the reading thread then runs ``on_close``)."""
        with self._write_lock:
            if self.closed:
                return
            self.closed = True
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self.sock.close()

    def serve(self) -> None:
        """Read and handle PDUs until the connection ends."""
        buffer = bytearray()
        try:
            while not self.closed:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                buffer += chunk
                for raw in split_pdus(buffer):
                    self.on_pdu(self, raw)
        except (OSError, InvalidPDU):
            pass
        finally:
            self.close()
            self.on_close(self)
