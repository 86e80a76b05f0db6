"""A well-framed INFO reply with a zero field is refused in one line (found by fuzzing: a
zero ``stage_words`` reached ``range(..., 0)`` in ``Board.write``)."""

from __future__ import annotations

import pytest

from shiftbook import protocol as proto
from shiftbook.sw.host import Board

from .targets import _FakeTransport


def _info(bus_bytes: int, mem_words: int, stage_words: int) -> bytes:
    payload = proto.info_payload(bus_bytes=bus_bytes, mem_words=mem_words,
                                 stage_words=stage_words, mark_depth=0, config_hash="0" * 16)
    return proto.reply(proto.Status.OK, payload)


@pytest.mark.parametrize("field,args", [("bus_bytes", (0, 16, 4)), ("mem_words", (8, 0, 4)),
                                        ("stage_words", (8, 16, 0))])
def test_zero_info_field_is_refused(field, args):
    board = Board(_FakeTransport([_info(*args)]))
    with pytest.raises(proto.ProtocolError, match=f"{field} = 0"):
        board.write(0, bytes(16))


def test_valid_info_loads():
    assert Board(_FakeTransport([_info(8, 16, 4)])).info()["stage_words"] == 4
