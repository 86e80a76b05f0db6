"""The board's UART host protocol: constants, CRC and frame packing (pure Python).

The gateware (``hw/uart_link.py``) and the host (``sw/host.py``) both take their numbers from
here, so this module imports neither Amaranth nor pyserial. docs/boards.md describes the
protocol; in short:

Request (host to board)::

    0xA5 | cmd u8 | addr u32 LE | len u16 LE | payload (WRITE only: len*bus_bytes bytes) | crc u8

Reply (board to host)::

    0x5A | status u8 | payload (only when status == OK) | crc u8

``crc`` is CRC-8 (polynomial 0x07, initial value 0, no reflection) over every byte after the
sync byte. A WRITE's payload goes to a staging buffer and reaches memory only after its CRC
checked out, so a malformed frame never changes memory. Any error first waits until the line
has been idle for the board's timeout (swallowing the rest of the frame), then replies with
the error status and no payload.
"""

from __future__ import annotations

import enum

__all__ = [
    "REQ_SYNC", "RSP_SYNC", "HEADER_BYTES", "Cmd", "Status", "PROTOCOL_VERSION", "MAGIC",
    "STATUS_BYTES", "INFO_BYTES", "MARK_BYTES", "crc8", "request", "reply",
    "parse_status", "parse_info", "parse_marks", "ProtocolError",
]

REQ_SYNC = 0xA5
RSP_SYNC = 0x5A
HEADER_BYTES = 7          # cmd, addr (4), len (2)
PROTOCOL_VERSION = 1
MAGIC = b"SB"
CRC_POLY = 0x07


class ProtocolError(RuntimeError):
    """A reply that is not a well-formed protocol frame, or an error status from the board."""


class Cmd(enum.IntEnum):
    WRITE = 0x01   # addr = first word, len = words (1..stage_words); payload = the words
    READ = 0x02    # addr = first word, len = words (>= 1); reply payload = the words
    START = 0x03   # pulse the core's start (program at word 0); clears the mark log
    STATUS = 0x04  # reply: STATUS_BYTES (see parse_status)
    INFO = 0x05    # reply: INFO_BYTES (see parse_info)
    MARKS = 0x06   # addr = first entry, len = entries; reply: MARK_BYTES each


class Status(enum.IntEnum):
    OK = 0x00
    BAD_CRC = 0x01       # the frame's CRC does not match
    BAD_LENGTH = 0x02    # len is 0, too long for the staging buffer, or runs past the end
    UNKNOWN_CMD = 0x03
    BUSY = 0x04          # WRITE / READ / START while the core runs
    TIMEOUT = 0x05       # the line went idle in the middle of a frame


STATUS_BYTES = 17   # flags u8 (busy, done, error), cycles u48, marks u16, last id u16, last u48
INFO_BYTES = 20     # magic "SB", version u8, bus_bytes u8, mem_words u32, stage_words u16,
#                     mark_depth u16, config hash 8 bytes (first 16 hex digits)
MARK_BYTES = 8      # id u16, cycles u48


def crc8(data: bytes, crc: int = 0) -> int:
    """CRC-8, polynomial x^8 + x^2 + x + 1 (0x07), MSB first, initial value ``crc``."""
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = ((crc << 1) ^ CRC_POLY) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def request(cmd: int, addr: int = 0, length: int = 0, payload: bytes = b"") -> bytes:
    """One request frame."""
    if not 0 <= addr < 1 << 32 or not 0 <= length < 1 << 16:
        raise ValueError(f"request address {addr} or length {length} does not fit the header")
    body = bytes([cmd]) + addr.to_bytes(4, "little") + length.to_bytes(2, "little") + payload
    return bytes([REQ_SYNC]) + body + bytes([crc8(body)])


def reply(status: int, payload: bytes = b"") -> bytes:
    """One reply frame (what the board sends; used by tests and models)."""
    body = bytes([status]) + payload
    return bytes([RSP_SYNC]) + body + bytes([crc8(body)])


def parse_status(payload: bytes) -> dict[str, int | bool]:
    if len(payload) != STATUS_BYTES:
        raise ProtocolError(f"STATUS reply has {len(payload)} bytes, expected {STATUS_BYTES}")
    flags = payload[0]
    return {
        "busy": bool(flags & 1), "done": bool(flags & 2), "error": bool(flags & 4),
        "cycles": int.from_bytes(payload[1:7], "little"),
        "marks": int.from_bytes(payload[7:9], "little"),
        "last_mark_id": int.from_bytes(payload[9:11], "little"),
        "last_mark_cycles": int.from_bytes(payload[11:17], "little"),
    }


def info_payload(*, bus_bytes: int, mem_words: int, stage_words: int, mark_depth: int,
                 config_hash: str) -> bytes:
    """The INFO reply payload a board with these parameters sends."""
    return (MAGIC + bytes([PROTOCOL_VERSION, bus_bytes]) + mem_words.to_bytes(4, "little")
            + stage_words.to_bytes(2, "little") + mark_depth.to_bytes(2, "little")
            + bytes.fromhex(config_hash[:16]))


def parse_info(payload: bytes) -> dict[str, int | str]:
    if len(payload) != INFO_BYTES or payload[:2] != MAGIC:
        raise ProtocolError("INFO reply is not from a shiftbook board (bad magic or length)")
    return {
        "version": payload[2], "bus_bytes": payload[3],
        "mem_words": int.from_bytes(payload[4:8], "little"),
        "stage_words": int.from_bytes(payload[8:10], "little"),
        "mark_depth": int.from_bytes(payload[10:12], "little"),
        "config_hash": payload[12:20].hex(),
    }


def parse_marks(payload: bytes) -> list[tuple[int, int]]:
    if len(payload) % MARK_BYTES:
        raise ProtocolError(f"MARKS reply of {len(payload)} bytes is not whole entries")
    return [(int.from_bytes(payload[i:i + 2], "little"),
             int.from_bytes(payload[i + 2:i + 8], "little"))
            for i in range(0, len(payload), MARK_BYTES)]
