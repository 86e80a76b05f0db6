"""The board's host-link protocol engine (framing in ``shiftbook/protocol.py``, docs/boards.md).

It sits between the UART's byte streams and the board: it writes and reads the board memory
through a simple word port, pulses the core's ``start``, reports the core's status and keeps
a log of the core's MARK reports.
"""

from __future__ import annotations

from types import SimpleNamespace

from amaranth.hdl import Cat, Const, Module, Mux, Signal, Value, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from shiftbook import protocol as proto

__all__ = ["LinkEngine", "crc8_step"]

# Where a reply's payload bytes come from: the STATUS fields, the INFO constant or `rword`.
_SRC_STATUS, _SRC_INFO, _SRC_WORD = 0, 1, 2


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
        s = self._signals()
        self._memories(m, s)
        self._status_registers(m, s)
        self._reply_source(m, s)
        with m.FSM():
            self._receive_states(m, s)
            self._execute_states(m, s)
            self._reply_states(m, s)
        return m

    def _signals(self) -> SimpleNamespace:
        """The request state shared by the sections of :meth:`elaborate`."""
        B, W = self._bus_bytes, 8 * self._bus_bytes
        s = SimpleNamespace()
        # the mark log and status registers
        s.marks, s.last_id, s.last_cycles = (Signal(16, name="marks"), Signal(16, name="last_id"),
                                             Signal(48, name="last_cycles"))
        s.clear_marks = Signal(name="clear_marks")
        s.snap = Signal(48, name="snap")   # the cycle counter when STATUS executed (no torn reads)
        # the request: header (command, address, length), running CRC, payload position
        s.hdr = Signal(8 * proto.HEADER_BYTES, name="hdr")
        s.cmd, s.addr, s.length = s.hdr[:8], s.hdr[8:40], s.hdr[40:56]
        s.crc = Signal(8, name="crc")
        s.count = Signal(range(proto.HEADER_BYTES), name="count")
        s.word = Signal(16, name="word")       # word index within the frame's payload
        s.lane = Signal(range(B), name="lane")  # byte index within a received word
        s.wreg = Signal(W, name="wreg")
        s.idle = Signal(range(self._timeout + 1), name="idle")
        s.status = Signal(8, name="status")
        s.has_payload = Signal(name="has_payload")
        s.src_mem = Signal(name="src_mem")     # payload words from memory (else mark log)
        # Reply payload: bytes `pos..last` of the STATUS fields, the INFO constant or `rword`
        # (a memory word or a mark log entry, fetched word by word).
        s.src = Signal(2, name="src")
        s.pos = Signal(range(max(B, 8, proto.INFO_BYTES, proto.STATUS_BYTES)), name="pos")
        s.last = Signal.like(s.pos, name="last")
        s.rword = Signal(max(W, 64) if self._mark_depth else W, name="rword")
        s.out_byte = Signal(8, name="out_byte")
        s.end = Signal(33, name="end")
        return s

    def _memories(self, m: Module, s: SimpleNamespace) -> None:
        """The staging buffer of WRITE payloads and, with ``mark_depth``, the MARK log."""
        m.submodules.stage = stage = Memory(shape=unsigned(8 * self._bus_bytes),
                                            depth=self._stage_words, init=[])
        stage_w = stage.write_port()   # (one statement each: the ports take their names)
        stage_r = stage.read_port()
        s.stage_w, s.stage_r = stage_w, stage_r
        s.mark_w = s.mark_r = None
        if self._mark_depth:
            m.submodules.marklog = marklog = Memory(shape=unsigned(64), depth=self._mark_depth,
                                                    init=[])
            mark_w = marklog.write_port()
            mark_r = marklog.read_port()
            s.mark_w, s.mark_r = mark_w, mark_r

    def _status_registers(self, m: Module, s: SimpleNamespace) -> None:
        """MARK logging (cleared by START), the STATUS payload and the INFO constant."""
        marks = s.marks
        if self._mark_depth:
            m.d.comb += [s.mark_w.addr.eq(marks),
                         s.mark_w.data.eq(Cat(self.mark_id, self.cycles)),
                         s.mark_w.en.eq(self.mark_valid & (marks < self._mark_depth))]
        with m.If(s.clear_marks):
            m.d.sync += marks.eq(0)
        with m.Elif(self.mark_valid):
            m.d.sync += [marks.eq(Mux(marks == 0xFFFF, marks, marks + 1)),
                         s.last_id.eq(self.mark_id), s.last_cycles.eq(self.cycles)]
        s.status_payload = Cat(self.core_busy, self.core_done, self.core_error, Const(0, 5),
                               s.snap, marks, s.last_id, s.last_cycles)
        assert len(s.status_payload) == 8 * proto.STATUS_BYTES
        info = self.info_payload()
        assert len(info) == proto.INFO_BYTES
        s.info_const = Const(int.from_bytes(info, "little"), 8 * len(info))

    def _reply_source(self, m: Module, s: SimpleNamespace) -> None:
        """The receive side's ready, the reply's payload byte at ``pos`` and ``addr + length``."""
        m.d.comb += self.rx.ready.eq(1)
        with m.Switch(s.src):
            with m.Case(_SRC_STATUS):
                m.d.comb += s.out_byte.eq(s.status_payload.word_select(s.pos, 8))
            with m.Case(_SRC_INFO):
                m.d.comb += s.out_byte.eq(s.info_const.word_select(s.pos, 8))
            with m.Default():
                m.d.comb += s.out_byte.eq(s.rword.word_select(s.pos, 8))
        m.d.comb += s.end.eq(s.addr + s.length)

    def _count_idle(self, m: Module, s: SimpleNamespace, on_timeout: str) -> None:
        """Within a receiving state: a byte restarts the idle count, ``timeout`` idle cycles
        end the frame with TIMEOUT."""
        with m.If(self.rx.valid):
            m.d.sync += s.idle.eq(0)
        with m.Elif(s.idle == self._timeout):
            m.d.sync += [s.idle.eq(0), s.status.eq(proto.Status.TIMEOUT)]
            m.next = on_timeout
        with m.Else():
            m.d.sync += s.idle.eq(s.idle + 1)

    def _error(self, m: Module, s: SimpleNamespace, code: int) -> None:
        """Reject the frame with ``code`` once its remaining bytes are swallowed (DRAIN)."""
        m.d.sync += [s.status.eq(code), s.idle.eq(0)]
        m.next = "DRAIN"

    def _receive_states(self, m: Module, s: SimpleNamespace) -> None:
        """IDLE, HEADER, CHECK, PAYLOAD (into the staging buffer) and CRC: the request's bytes."""
        byte, got, crc = self.rx.payload, self.rx.valid, s.crc
        with m.State("IDLE"):
            with m.If(got & (byte == proto.REQ_SYNC)):
                m.d.sync += [crc.eq(0), s.count.eq(0), s.idle.eq(0)]
                m.next = "HEADER"
        with m.State("HEADER"):
            with m.If(got):
                m.d.sync += [s.hdr.eq(Cat(s.hdr[8:], byte)), crc.eq(crc8_step(crc, byte)),
                             s.count.eq(s.count + 1)]
                with m.If(s.count == proto.HEADER_BYTES - 1):
                    m.next = "CHECK"
            self._count_idle(m, s, "REPLY")
        with m.State("CHECK"):
            self._check_request(m, s)
        with m.State("PAYLOAD"):
            with m.If(got):
                m.d.sync += [crc.eq(crc8_step(crc, byte)), s.wreg.eq(Cat(s.wreg[8:], byte)),
                             s.lane.eq(s.lane + 1)]
                with m.If(s.lane == self._bus_bytes - 1):
                    m.d.comb += [s.stage_w.addr.eq(s.word),
                                 s.stage_w.data.eq(Cat(s.wreg[8:], byte)), s.stage_w.en.eq(1)]
                    m.d.sync += [s.lane.eq(0), s.word.eq(s.word + 1)]
                    with m.If(s.word == s.length - 1):
                        m.next = "CRC"
            self._count_idle(m, s, "REPLY")
        with m.State("CRC"):
            with m.If(got):
                with m.If(byte != crc):
                    self._error(m, s, proto.Status.BAD_CRC)
                with m.Else():
                    m.next = "EXEC"
            self._count_idle(m, s, "REPLY")

    def _check_request(self, m: Module, s: SimpleNamespace) -> None:
        """The CHECK state: the header's command and range, before any payload byte."""
        length, end = s.length, s.end
        m.d.comb += self.rx.ready.eq(0)   # the next byte waits a cycle for the checks
        m.d.sync += [s.word.eq(0), s.lane.eq(0), s.idle.eq(0)]
        with m.Switch(s.cmd):
            with m.Case(proto.Cmd.WRITE):
                with m.If((length == 0) | (length > self._stage_words)
                          | (end > self._mem_words)):
                    self._error(m, s, proto.Status.BAD_LENGTH)
                with m.Else():
                    m.next = "PAYLOAD"
            with m.Case(proto.Cmd.READ):
                with m.If((length == 0) | (end > self._mem_words)):
                    self._error(m, s, proto.Status.BAD_LENGTH)
                with m.Else():
                    m.next = "CRC"
            with m.Case(proto.Cmd.MARKS):
                with m.If((length == 0) | (end > self._mark_depth)):  # 0: no log
                    self._error(m, s, proto.Status.BAD_LENGTH)
                with m.Else():
                    m.next = "CRC"
            with m.Case(proto.Cmd.START, proto.Cmd.STATUS, proto.Cmd.INFO):
                m.next = "CRC"
            with m.Default():
                self._error(m, s, proto.Status.UNKNOWN_CMD)

    def _execute_states(self, m: Module, s: SimpleNamespace) -> None:
        """EXEC, the WRITE copy from the staging buffer to memory, and DRAIN (a bad frame)."""
        word = s.word
        with m.State("EXEC"):
            self._execute(m, s)
        with m.State("COPY_READ"):
            m.d.comb += s.stage_r.addr.eq(word)
            m.next = "COPY_WRITE"
        with m.State("COPY_WRITE"):
            m.d.comb += [self.mem_addr.eq(s.addr + word), self.mem_wdata.eq(s.stage_r.data),
                         self.mem_we.eq(1)]
            m.d.sync += word.eq(word + 1)
            with m.If(word == s.length - 1):
                m.next = "REPLY"
            with m.Else():
                m.next = "COPY_READ"
        with m.State("DRAIN"):   # swallow the rest of a bad frame, then reply the error
            with m.If(self.rx.valid):
                m.d.sync += s.idle.eq(0)
            with m.Elif(s.idle == self._timeout):
                m.d.sync += [s.idle.eq(0), s.has_payload.eq(0)]
                m.next = "REPLY"
            with m.Else():
                m.d.sync += s.idle.eq(s.idle + 1)

    def _execute(self, m: Module, s: SimpleNamespace) -> None:
        """The EXEC state: run a checked request (BUSY while the core runs, for the commands
        that touch memory or start it) and choose its reply payload."""
        cmd, status, has_payload, src = s.cmd, s.status, s.has_payload, s.src
        m.d.sync += [s.word.eq(0), status.eq(proto.Status.OK), has_payload.eq(0),
                     src.eq(_SRC_WORD), s.pos.eq(0)]
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
                    m.d.sync += [has_payload.eq(1), s.src_mem.eq(1)]
                    m.next = "REPLY"
                with m.Case(proto.Cmd.MARKS):
                    m.d.sync += [has_payload.eq(1), s.src_mem.eq(0)]
                    m.next = "REPLY"
                with m.Case(proto.Cmd.START):
                    m.d.comb += [self.start.eq(1), s.clear_marks.eq(1)]
                    m.next = "REPLY"
                with m.Case(proto.Cmd.STATUS):
                    m.d.sync += [has_payload.eq(1), src.eq(_SRC_STATUS),
                                 s.last.eq(proto.STATUS_BYTES - 1), s.snap.eq(self.cycles)]
                    m.next = "REPLY"
                with m.Case(proto.Cmd.INFO):
                    m.d.sync += [has_payload.eq(1), src.eq(_SRC_INFO),
                                 s.last.eq(proto.INFO_BYTES - 1)]
                    m.next = "REPLY"

    def _reply_states(self, m: Module, s: SimpleNamespace) -> None:
        """The reply: sync, status, the payload (memory words and mark entries fetched one
        word at a time) and the CRC."""
        tx, status, crc, pos, word = self.tx, s.status, s.crc, s.pos, s.word
        with m.State("REPLY"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(proto.RSP_SYNC)]
            with m.If(tx.ready):
                m.next = "REPLY_STATUS"
        with m.State("REPLY_STATUS"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(status)]
            with m.If(tx.ready):
                m.d.sync += crc.eq(crc8_step(Const(0, 8), status))
                with m.If(s.has_payload & (status == proto.Status.OK)):
                    with m.If(s.src == _SRC_WORD):
                        m.next = "FETCH"
                    with m.Else():
                        m.next = "REPLY_PAYLOAD"
                with m.Else():
                    m.next = "REPLY_CRC"
        with m.State("FETCH"):
            with m.If(s.src_mem):
                m.d.comb += [self.mem_addr.eq(s.addr + word), self.mem_re.eq(1)]
            if self._mark_depth:
                with m.Else():
                    m.d.comb += s.mark_r.addr.eq(s.addr + word)
            m.next = "LOAD"
        with m.State("LOAD"):
            m.d.sync += pos.eq(0)
            with m.If(s.src_mem):
                m.d.sync += [s.rword.eq(self.mem_rdata), s.last.eq(self._bus_bytes - 1)]
            if self._mark_depth:
                with m.Else():
                    m.d.sync += [s.rword.eq(s.mark_r.data), s.last.eq(proto.MARK_BYTES - 1)]
            m.next = "REPLY_PAYLOAD"
        with m.State("REPLY_PAYLOAD"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(s.out_byte)]
            with m.If(tx.ready):
                m.d.sync += [pos.eq(pos + 1), crc.eq(crc8_step(crc, s.out_byte))]
                with m.If(pos == s.last):
                    with m.If((s.src != _SRC_WORD) | (word == s.length - 1)):
                        m.next = "REPLY_CRC"
                    with m.Else():
                        m.d.sync += word.eq(word + 1)
                        m.next = "FETCH"
        with m.State("REPLY_CRC"):
            m.d.comb += [tx.valid.eq(1), tx.payload.eq(crc)]
            with m.If(tx.ready):
                m.next = "IDLE"
