# amaranth: UnusedElaboratable=no
"""The board's UART host link in simulation: link engine + board memory + a stand-in core.

Checks every protocol command against a Python model of the board memory, the malformed
frames (each must leave memory unchanged and answer an error), and a full host run through
the real UART PHY at 4 clocks per bit.
"""

from __future__ import annotations

import random

import pytest
from board_standin import MARK_ID, StandInCore, standin_model

from shiftbook import protocol as proto
from shiftbook.boards.sim_link import SimBoard
from shiftbook.config import CoreConfig
from shiftbook.hw.board_top import BoardSystem
from shiftbook.protocol import Cmd, Status
from shiftbook.sw.host import Board, BoardError, BoardImage, Region, load_bundle_and_run

CFG = CoreConfig(bus_bytes=4, mem_words=256, mem_latency=3, name="link-test")
STAGE = 8
TIMEOUT = 40


def _board(*, divisor: int | None = None, init: list[int] | None = None,
           cfg: CoreConfig = CFG) -> SimBoard:
    system = BoardSystem(cfg, core=StandInCore, divisor=divisor, stage_words=STAGE,
                         mark_depth=4, timeout=TIMEOUT if divisor is None else 40 * divisor,
                         init=init or [])
    return SimBoard(system, timeout_cycles=20_000)


def _raw(sim: SimBoard, frame: bytes, reply_len: int) -> bytes:
    sim.write(frame)
    return sim.read(reply_len)


def _words(blob: bytes, bb: int = 4) -> list[int]:
    return [int.from_bytes(blob[i:i + bb], "little") for i in range(0, len(blob), bb)]


def _blob(words: list[int], bb: int = 4) -> bytes:
    return b"".join(w.to_bytes(bb, "little") for w in words)


def test_info_write_read_roundtrip() -> None:
    rng = random.Random(1)
    init = [rng.randrange(1 << 32) for _ in range(256)]
    sim = _board(init=init)
    board = Board(sim)
    info = board.info()
    assert info == {"version": proto.PROTOCOL_VERSION, "bus_bytes": 4, "mem_words": 256,
                    "stage_words": STAGE, "mark_depth": 4, "config_hash": CFG.hash[:16]}
    model = list(init)
    # 21 words: three frames of 8, 8 and 5 words through the staging buffer
    new = [rng.randrange(1 << 32) for _ in range(21)]
    board.write(100, _blob(new))
    model[100:121] = new
    assert _words(board.read(90, 40, chunk=16)) == model[90:130]
    assert _words(board.read(0, 256)) == model
    # the reply frame is exactly as the protocol module builds it
    raw = _raw(sim, proto.request(Cmd.READ, 100, 2), 2 + 8 + 1)
    assert raw == proto.reply(Status.OK, _blob(new[:2]))


def test_start_status_marks_with_standin_core() -> None:
    rng = random.Random(2)
    n = 5
    mem = [n] + [rng.randrange(1 << 32) for _ in range(n)] + [0] * (256 - 1 - n)
    sim = _board(init=[0] * 256)
    board = Board(sim)
    board.write(0, _blob(mem[:16]))
    st = board.status()
    assert not st["busy"] and not st["done"] and not st["error"] and st["marks"] == 0
    board.start()
    sim.idle(200e-6)
    st = board.status()
    assert st["done"] and not st["busy"] and not st["error"]
    assert st["marks"] == 1 and st["last_mark_id"] == MARK_ID
    assert 0 < st["cycles"] == st["last_mark_cycles"] + 1 or st["cycles"] == st["last_mark_cycles"]
    expect = standin_model(mem, 4)
    got = _words(board.read(0, 16))
    for a, v in expect.items():
        assert got[a] == v
    assert got[:1 + n] == mem[:1 + n]
    assert board.marks(0, 1) == [(MARK_ID, st["last_mark_cycles"])]
    # the mark log has 4 entries: reading past them is a length error
    with pytest.raises(BoardError, match="BAD_LENGTH"):
        board.marks(2, 3)


def test_busy_core_refuses_memory_access() -> None:
    mem = [100] + list(range(1, 101))  # a job of 100 reads and writes
    sim = _board(init=mem + [0] * (256 - len(mem)))
    board = Board(sim)
    board.start()
    assert board.status()["busy"]
    for cmd in (Cmd.READ, Cmd.START):
        assert _raw(sim, proto.request(cmd, 0, 1), 3) == proto.reply(Status.BUSY)
    assert _raw(sim, proto.request(Cmd.WRITE, 0, 1, b"\x01\x02\x03\x04"), 3) == \
        proto.reply(Status.BUSY)
    sim.idle(2e-3)
    st = board.status()
    assert st["done"] and not st["busy"]
    assert _words(board.read(0, 1)) == [100]   # the refused WRITE did not land


BAD_FRAMES = {
    "bad_crc": (proto.request(Cmd.WRITE, 3, 2, bytes(range(8)))[:-1] + b"\x00",
                Status.BAD_CRC),
    "payload_bit_flip": (bytearray(proto.request(Cmd.WRITE, 3, 2, bytes(range(8)))),
                         Status.BAD_CRC),
    "len_zero": (proto.request(Cmd.WRITE, 3, 0), Status.BAD_LENGTH),
    "len_over_stage": (proto.request(Cmd.WRITE, 0, STAGE + 1, bytes(4 * (STAGE + 1))),
                       Status.BAD_LENGTH),
    "past_end": (proto.request(Cmd.WRITE, 250, 7, bytes(28)), Status.BAD_LENGTH),
    "read_past_end": (proto.request(Cmd.READ, 255, 2), Status.BAD_LENGTH),
    "unknown_cmd": (proto.request(0x7E, 3, 2, bytes(8)), Status.UNKNOWN_CMD),
    "truncated": (proto.request(Cmd.WRITE, 3, 2, bytes(range(8)))[:-3], Status.TIMEOUT),
    "header_only": (proto.request(Cmd.WRITE, 3, 2)[:5], Status.TIMEOUT),
}
BAD_FRAMES["payload_bit_flip"][0][12] ^= 0x10


@pytest.mark.parametrize("name", list(BAD_FRAMES))
def test_malformed_frame_rejected_memory_intact(name: str) -> None:
    frame, status = BAD_FRAMES[name]
    rng = random.Random(name)
    init = [rng.randrange(1 << 32) for _ in range(256)]
    sim = _board(init=init)
    board = Board(sim)
    # garbage before the sync byte is ignored
    sim.write(b"\x00\x13")
    assert _raw(sim, bytes(frame), 3) == proto.reply(status)
    sim.idle(2 * TIMEOUT * 1e-6)
    assert _words(board.read(0, 256)) == init
    # the link is usable afterwards
    board.write(3, _blob([7, 8]))
    assert _words(board.read(2, 4)) == [init[2], 7, 8, init[5]]


def test_host_run_over_uart_phy() -> None:
    """The whole path at 4 clocks per bit: host frames -> 8N1 line -> board -> line -> host."""
    n = 6
    rng = random.Random(3)
    data = [rng.randrange(1 << 32) for _ in range(n)]
    image = _blob([n, *data])
    sim = _board(divisor=4)
    img = BoardImage(CFG, image, [Region("out", 4 * (1 + n), 4 * n), Region("odd", 4 * 7 + 1, 5)])
    res = load_bundle_and_run(sim, img, poll=50e-6)
    expect = standin_model([n, *data], 4)
    out = _blob([expect[1 + n + i] for i in range(n)])
    assert res.outputs["out"] == out
    assert res.outputs["odd"] == out[1:6]
    assert res.marks == [(MARK_ID, res.status["last_mark_cycles"])]
    assert res.cycles > 0


def test_host_refuses_other_config() -> None:
    sim = _board()
    other = CoreConfig(bus_bytes=4, mem_words=256, mem_latency=2)
    with pytest.raises(BoardError, match="config"):
        load_bundle_and_run(sim, BoardImage(other, b"\x00" * 8))


def test_core_error_reported() -> None:
    sim = _board()
    with pytest.raises(BoardError, match="illegal instruction"):
        load_bundle_and_run(sim, BoardImage(CFG, _blob([0xFFFF])), poll=20e-6)


def test_no_mark_log() -> None:
    system = BoardSystem(CFG, core=StandInCore, stage_words=STAGE, mark_depth=0,
                         timeout=TIMEOUT, init=[1, 5] + [0] * 254)
    sim = SimBoard(system, timeout_cycles=20_000)
    board = Board(sim)
    assert board.info()["mark_depth"] == 0
    board.start()
    sim.idle(100e-6)
    st = board.status()
    assert st["done"] and st["marks"] == 1 and st["last_mark_id"] == MARK_ID
    with pytest.raises(BoardError, match="BAD_LENGTH"):
        board.marks(0, 1)
    assert _words(board.read(0, 3)) == [1, 5, 6]


def test_cli_run_errors(tmp_path, capsys) -> None:
    from shiftbook.cli import main

    assert main(["run", str(tmp_path / "nope"), "--port", "/dev/null-port"]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_real_core_behind_the_link() -> None:
    """hw/core.py on the simulated board: a MARK/END program over the link (byte streams)."""
    pytest.importorskip("shiftbook.hw.core")
    from shiftbook.boards.targets import get_target
    from shiftbook.isa import Insn, Opcode, encode_program

    cfg = get_target("icebreaker").config
    sim = SimBoard(BoardSystem(cfg, stage_words=16, mark_depth=4, timeout=200),
                   timeout_cycles=50_000)
    prog = encode_program([Insn(Opcode.MARK, {"id": 7}), Insn(Opcode.MARK, {"id": 9}),
                           Insn(Opcode.END)])
    data = bytes(range(100, 116))
    img = BoardImage(cfg, prog + data, [Region("data", len(prog), 16)])
    res = load_bundle_and_run(sim, img, poll=20e-6)
    assert res.status["done"] and not res.status["error"]
    assert [i for i, _ in res.marks] == [7, 9]
    assert 0 < res.marks[0][1] < res.marks[1][1] <= res.cycles
    assert res.outputs["data"] == data


def test_compiled_bundle_on_simulated_board(tmp_path) -> None:
    """A compiled conv layer: loaded over the link, run by hw/core.py on the simulated board,
    its output read back bit-exact with the functional simulator (L1)."""
    pytest.importorskip("shiftbook.hw.core")
    from shiftbook.sim.functional import run_program
    from shiftbook.sw.compiler import compile_graph
    from shiftbook.sw.reference import random_layer

    cfg = CoreConfig(rows=2, cols=4, bus_bytes=4, abuf_bytes=256, wbuf_rows=32, bbuf_rows=2,
                     obuf_bytes=64, mem_latency=3, mem_words=1024, name="board-e2e")
    layer = random_layer("conv", 2, 3, 3, 1, 1, 4, seed=4, exp_bits=cfg.exp_bits,
                         acc_bits=cfg.acc_bits)
    prog = compile_graph(layer.graph, cfg, layer.inputs)
    want = run_program(cfg, prog.memory).memory
    out = prog.outputs[0]
    p = prog.tensors[out]
    sim = SimBoard(BoardSystem(cfg, stage_words=32, mark_depth=8, timeout=200),
                   timeout_cycles=100_000)
    from shiftbook.sw.bundle import write_bundle

    path = write_bundle(prog, layer.graph, tmp_path / "bundle")
    res = load_bundle_and_run(sim, path, poll=200e-6)      # a bundle directory, as `run` does
    assert res.outputs[out] == bytes(want[p.addr:p.addr + p.nbytes])
    assert any(res.outputs[out])                       # not a trivially zero output
    assert [i for i, _ in res.marks] == [lay.index for lay in prog.layers]
