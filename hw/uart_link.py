"""The board's host-link protocol engine (framing in ``shiftbook/protocol.py``, docs/boards.md).

It sits between the UART's byte streams and the board: it writes and reads the board memory
through a simple word port, pulses the core's ``start``, reports the core's status and keeps
a log of the core's MARK reports.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from shiftbook import protocol as proto

__all__ = ["LinkEngine", "crc8_step"]


def crc8_step(crc: Value, byte: Value) -> Value:
    """Combinational CRC-8 (polynomial 0x07) of one more byte; matches ``shiftbook.protocol.crc8``.

    A CRC step is linear over GF(2): output bit j is the XOR of the bits i of
    ``crc ^ byte`` whose single-bit CRC has bit j set (a flat XOR network, no mux chain)."""
    d = (crc ^ byte)[:8]
    columns = [proto.crc8(bytes([1 << i])) for i in range(8)]
    bits = []
    for j in range(8):
        terms = [d[i] for i in range(8) if (columns[i] >> j) & 1]
        acc = terms[0]
        for t in terms[1:]:
            acc = acc ^ t
        bits.append(acc)
    return Cat(*bits)


class LinkEngine(wiring.Component):
    """Request/reply engine of the UART host protocol.

    Parameters
    ----------
    bus_bytes : int
        Bytes per board memory word (the core's ``bus_bytes``).
    mem_words : int
        Board memory depth in words.
    stage_words : int
        Staging buffer depth: the largest WRITE, in words. A WRITE lands here first and is
        copied to memory only after its CRC matched.
    mark_depth : int
        Entries of the MARK log (later marks are counted, not stored); 0 leaves the log out
        (MARKS then answers BAD_LENGTH).
    timeout : int
        Idle clock cycles that end a frame early (TIMEOUT) or end the swallowing of a bad
        frame's remaining bytes before the error reply.
    config_hash : str
        Hex hash of the core's CoreConfig, reported by INFO.

    Members
    -------
    rx : In(stream.Signature(8))
        Received bytes. Ready except in the one cycle that checks a header; bytes arriving
        while a request executes or its reply goes out are dropped.
    tx : Out(stream.Signature(8))
        Reply bytes.
    mem_addr, mem_we, mem_wdata, mem_re : Out
        Board memory port; ``mem_rdata`` (In) holds the word of the address presented with
        ``mem_re`` one cycle later. The engine uses memory only while the core is not busy.
    start : Out(1)
        One-cycle pulse for the core.
    core_busy, core_done, core_error, cycles, mark_valid, mark_id : In
        The core's status ports.
    """

    def __init__(self, *, bus_bytes: int, mem_words: int, stage_words: int = 32,
                 mark_depth: int = 64, timeout: int = 1000, config_hash: str = "0" * 16
                 ) -> None:
        for name, v, lo in (("bus_bytes", bus_bytes, 1), ("mem_words", mem_words, 2),
                            ("stage_words", stage_words, 1), ("mark_depth", mark_depth, 0),
                            ("timeout", timeout, 2)):
            if not isinstance(v, int) or v < lo:
                raise ValueError(f"LinkEngine {name} must be an integer >= {lo}, not {v!r}")
        if stage_words > 0xFFFF or mark_depth > 0xFFFF or mem_words > 1 << 28:
            raise ValueError("LinkEngine stage_words and mark_depth must fit 16 bits and "
                             "mem_words 28 bits")
        if len(config_hash) < 16:
            raise ValueError(f"config_hash {config_hash!r} must have at least 16 hex digits")
        self._bus_bytes = bus_bytes
        self._mem_words = mem_words
        self._stage_words = stage_words
        self._mark_depth = mark_depth
        self._timeout = timeout
        self._config_hash = config_hash
        super().__init__({
            "rx": In(stream.Signature(8)),
            "tx": Out(stream.Signature(8)),
            "mem_addr": Out(range(mem_words)),
            "mem_we": Out(1),
            "mem_wdata": Out(8 * bus_bytes),
            "mem_re": Out(1),
            "mem_rdata": In(8 * bus_bytes),
            "start": Out(1),
            "core_busy": In(1),
            "core_done": In(1),
            "core_error": In(1),
            "cycles": In(48),
            "mark_valid": In(1),
            "mark_id": In(16),
        })

    @property
    def bus_bytes(self) -> int:
        return self._bus_bytes

    @property
    def mem_words(self) -> int:
        return self._mem_words

    @property
    def stage_words(self) -> int:
        return self._stage_words

    @property
    def mark_depth(self) -> int:
        return self._mark_depth

    @property
    def timeout(self) -> int:
        return self._timeout

    def info_payload(self) -> bytes:
        return proto.info_payload(bus_bytes=self._bus_bytes, mem_words=self._mem_words,
                                  stage_words=self._stage_words, mark_depth=self._mark_depth,
                                  config_hash=self._config_hash)

    def elaborate(self, platform) -> Module:
        m = Module()
        B = self._bus_bytes
        W = 8 * B

        m.submodules.stage = stage = Memory(shape=unsigned(W), depth=self._stage_words, init=[])
        stage_w = stage.write_port()
        stage_r = stage.read_port()
        if self._mark_depth:
            m.submodules.marklog = marklog = Memory(shape=unsigned(64), depth=self._mark_depth,
                                                    init=[])
            mark_w = marklog.write_port()
            mark_r = marklog.read_port()

        # ---- mark log and status registers
        marks = Signal(16)
        last_id = Signal(16)
        last_cycles = Signal(48)
        clear_marks = Signal()
        if self._mark_depth:
            m.d.comb += [mark_w.addr.eq(marks), mark_w.data.eq(Cat(self.mark_id, self.cycles)),
                         mark_w.en.eq(self.mark_valid & (marks < self._mark_depth))]
        with m.If(clear_marks):
            m.d.sync += marks.eq(0)
        with m.Elif(self.mark_valid):
            m.d.sync += [marks.eq(Mux(marks == 0xFFFF, marks, marks + 1)),
                         last_id.eq(self.mark_id), last_cycles.eq(self.cycles)]
        snap = Signal(48)        # the cycle counter when STATUS executed (no torn reads)
        status_payload = Cat(self.core_busy, self.core_done, self.core_error, Const(0, 5),
                             snap, marks, last_id, last_cycles)
        assert len(status_payload) == 8 * proto.STATUS_BYTES
        info = self.info_payload()
        assert len(info) == proto.INFO_BYTES
        info_const = Const(int.from_bytes(info, "little"), 8 * len(info))

        # ---- request state
        byte = self.rx.payload
        got = self.rx.valid
        m.d.comb += self.rx.ready.eq(1)
        hdr = Signal(8 * proto.HEADER_BYTES)
        cmd = hdr[:8]
        addr = hdr[8:40]
        length = hdr[40:56]
        crc = Signal(8)
        count = Signal(range(proto.HEADER_BYTES))
        word = Signal(16)                         # word index within the frame's payload
        lane = Signal(range(B))                   # byte index within a received word
        wreg = Signal(W)
        idle = Signal(range(self._timeout + 1))
        status = Signal(8)
        has_payload = Signal()
        src_mem = Signal()                        # payload words from memory (else mark log)
        # Reply payload: bytes `pos..last` of the STATUS fields, the INFO constant or `rword`
        # (a memory word or a mark log entry, fetched word by word).
        SRC_STATUS, SRC_INFO, SRC_WORD = 0, 1, 2
        src = Signal(2)
        pos = Signal(range(max(B, 8, proto.INFO_BYTES, proto.STATUS_BYTES)))
        last = Signal.like(pos)
        rword = Signal(max(W, 64) if self._mark_depth else W)
        out_byte = Signal(8)
        with m.Switch(src):
            with m.Case(SRC_STATUS):
                m.d.comb += out_byte.eq(status_payload.word_select(pos, 8))
            with m.Case(SRC_INFO):
                m.d.comb += out_byte.eq(info_const.word_select(pos, 8))
            with m.Default():
                m.d.comb += out_byte.eq(rword.word_select(pos, 8))
        end = Signal(33)
        m.d.comb += end.eq(addr + length)

        def count_idle(on_timeout: str) -> None:
            with m.If(got):
                m.d.sync += idle.eq(0)
            with m.Elif(idle == self._timeout):
                m.d.sync += [idle.eq(0), status.eq(proto.Status.TIMEOUT)]
                m.next = on_timeout
            with m.Else():
                m.d.sync += idle.eq(idle + 1)

        def error(code: int) -> None:
            m.d.sync += [status.eq(code), idle.eq(0)]
            m.next = "DRAIN"

        with m.FSM():
            with m.State("IDLE"):
                with m.If(got & (byte == proto.REQ_SYNC)):
                    m.d.sync += [crc.eq(0), count.eq(0), idle.eq(0)]
                    m.next = "HEADER"
            with m.State("HEADER"):
                with m.If(got):
                    m.d.sync += [hdr.eq(Cat(hdr[8:], byte)), crc.eq(crc8_step(crc, byte)),
                                 count.eq(count + 1)]
                    with m.If(count == proto.HEADER_BYTES - 1):
                        m.next = "CHECK"
                count_idle("REPLY")
            with m.State("CHECK"):
                m.d.comb += self.rx.ready.eq(0)   # the next byte waits a cycle for the checks
                m.d.sync += [word.eq(0), lane.eq(0), idle.eq(0)]
                with m.Switch(cmd):
                    with m.Case(proto.Cmd.WRITE):
                        with m.If((length == 0) | (length > self._stage_words)
                                  | (end > self._mem_words)):
                            error(proto.Status.BAD_LENGTH)
                        with m.Else():
                            m.next = "PAYLOAD"
                    with m.Case(proto.Cmd.READ):
                        with m.If((length == 0) | (end > self._mem_words)):
                            error(proto.Status.BAD_LENGTH)
                        with m.Else():
                            m.next = "CRC"
                    with m.Case(proto.Cmd.MARKS):
                        with m.If((length == 0) | (end > self._mark_depth)):  # 0: no log
                            error(proto.Status.BAD_LENGTH)
                        with m.Else():
                            m.next = "CRC"
                    with m.Case(proto.Cmd.START, proto.Cmd.STATUS, proto.Cmd.INFO):
                        m.next = "CRC"
                    with m.Default():
                        error(proto.Status.UNKNOWN_CMD)
            with m.State("PAYLOAD"):
                with m.If(got):
                    m.d.sync += [crc.eq(crc8_step(crc, byte)), wreg.eq(Cat(wreg[8:], byte)),
                                 lane.eq(lane + 1)]
                    with m.If(lane == B - 1):
                        m.d.comb += [stage_w.addr.eq(word), stage_w.data.eq(Cat(wreg[8:], byte)),
                                     stage_w.en.eq(1)]
                        m.d.sync += [lane.eq(0), word.eq(word + 1)]
                        with m.If(word == length - 1):
                            m.next = "CRC"
                count_idle("REPLY")
            with m.State("CRC"):
                with m.If(got):
                    with m.If(byte != crc):
                        error(proto.Status.BAD_CRC)
                    with m.Else():
                        m.next = "EXEC"
                count_idle("REPLY")
            with m.State("EXEC"):
                m.d.sync += [word.eq(0), status.eq(proto.Status.OK), has_payload.eq(0),
                             src.eq(SRC_WORD), pos.eq(0)]
                busy_cmd = ((cmd == proto.Cmd.WRITE) | (cmd == proto.Cmd.READ)
                            | (cmd == proto.Cmd.START))
                with m.If(busy_cmd & self.core_busy):
                    m.d.sync += status.eq(proto.Status.BUSY)
                    m.next = "REPLY"
                with m.Else():
                    with m.Switch(cmd):
                        with m.Case(proto.Cmd.WRITE):
                            m.next = "COPY_READ"
                        with m.Case(proto.Cmd.READ):
                            m.d.sync += [has_payload.eq(1), src_mem.eq(1)]
                            m.next = "REPLY"
                        with m.Case(proto.Cmd.MARKS):
                            m.d.sync += [has_payload.eq(1), src_mem.eq(0)]
                            m.next = "REPLY"
                        with m.Case(proto.Cmd.START):
                            m.d.comb += [self.start.eq(1), clear_marks.eq(1)]
                            m.next = "REPLY"
                        with m.Case(proto.Cmd.STATUS):
                            m.d.sync += [has_payload.eq(1), src.eq(SRC_STATUS),
                                         last.eq(proto.STATUS_BYTES - 1), snap.eq(self.cycles)]
                            m.next = "REPLY"
                        with m.Case(proto.Cmd.INFO):
                            m.d.sync += [has_payload.eq(1), src.eq(SRC_INFO),
                                         last.eq(proto.INFO_BYTES - 1)]
                            m.next = "REPLY"
            with m.State("COPY_READ"):
                m.d.comb += stage_r.addr.eq(word)
                m.next = "COPY_WRITE"
            with m.State("COPY_WRITE"):
                m.d.comb += [self.mem_addr.eq(addr + word), self.mem_wdata.eq(stage_r.data),
                             self.mem_we.eq(1)]
                m.d.sync += word.eq(word + 1)
                with m.If(word == length - 1):
                    m.next = "REPLY"
                with m.Else():
                    m.next = "COPY_READ"
            with m.State("DRAIN"):   # swallow the rest of a bad frame, then reply the error
                with m.If(got):
                    m.d.sync += idle.eq(0)
                with m.Elif(idle == self._timeout):
                    m.d.sync += [idle.eq(0), has_payload.eq(0)]
                    m.next = "REPLY"
                with m.Else():
                    m.d.sync += idle.eq(idle + 1)

            # ---- reply
            with m.State("REPLY"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(proto.RSP_SYNC)]
                with m.If(self.tx.ready):
                    m.next = "REPLY_STATUS"
            with m.State("REPLY_STATUS"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(status)]
                with m.If(self.tx.ready):
                    m.d.sync += crc.eq(crc8_step(Const(0, 8), status))
                    with m.If(has_payload & (status == proto.Status.OK)):
                        with m.If(src == SRC_WORD):
                            m.next = "FETCH"
                        with m.Else():
                            m.next = "REPLY_PAYLOAD"
                    with m.Else():
                        m.next = "REPLY_CRC"
            with m.State("FETCH"):
                with m.If(src_mem):
                    m.d.comb += [self.mem_addr.eq(addr + word), self.mem_re.eq(1)]
                if self._mark_depth:
                    with m.Else():
                        m.d.comb += mark_r.addr.eq(addr + word)
                m.next = "LOAD"
            with m.State("LOAD"):
                m.d.sync += pos.eq(0)
                with m.If(src_mem):
                    m.d.sync += [rword.eq(self.mem_rdata), last.eq(B - 1)]
                if self._mark_depth:
                    with m.Else():
                        m.d.sync += [rword.eq(mark_r.data), last.eq(proto.MARK_BYTES - 1)]
                m.next = "REPLY_PAYLOAD"
            with m.State("REPLY_PAYLOAD"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(out_byte)]
                with m.If(self.tx.ready):
                    m.d.sync += [pos.eq(pos + 1), crc.eq(crc8_step(crc, out_byte))]
                    with m.If(pos == last):
                        with m.If((src != SRC_WORD) | (word == length - 1)):
                            m.next = "REPLY_CRC"
                        with m.Else():
                            m.d.sync += word.eq(word + 1)
                            m.next = "FETCH"
            with m.State("REPLY_CRC"):
                m.d.comb += [self.tx.valid.eq(1), self.tx.payload.eq(crc)]
                with m.If(self.tx.ready):
                    m.next = "IDLE"
        return m
