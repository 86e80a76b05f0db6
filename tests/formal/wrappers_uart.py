"""Test-only wrapper: the UART link engine never writes memory for a malformed frame.

The environment sends one request frame from cycle 0 (its sync byte first), then any bytes
with any gaps (so the line may time out anywhere), and nothing once the reply has begun;
the core's ``busy`` is free. The wrapper decodes the frame on its own from the byte positions
(header, payload, CRC-8 over everything after the sync byte, as ``shiftbook.protocol``
defines it) and asserts: a memory write happens only for a complete WRITE frame whose length
is in ``[1, stage_words]``, whose range fits ``mem_words`` and whose CRC byte matched, and it
writes exactly the frame's word ``n`` to ``addr + n``.
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Cat, Const, Elaboratable, Module, ResetSignal, Signal

from shiftbook import protocol as proto
from shiftbook.hw.uart_link import LinkEngine, crc8_step

__all__ = ["LinkSpec", "BrokenLinkEngine"]


class BrokenLinkEngine(LinkEngine):
    """A deliberately broken engine (test-only mutation): a frame whose CRC byte does not
    match is executed anyway."""

    def _error(self, m, s, code):
        if code == proto.Status.BAD_CRC:
            m.next = "EXEC"
        else:
            super()._error(m, s, code)


class LinkSpec(Elaboratable):
    """A link engine (``bus_bytes=1``) and the no-write-for-a-bad-frame assertions."""

    def __init__(self, *, mem_words: int = 4, stage_words: int = 2, timeout: int = 2,
                 broken: bool = False) -> None:
        cls = BrokenLinkEngine if broken else LinkEngine
        self.dut = cls(bus_bytes=1, mem_words=mem_words, stage_words=stage_words, mark_depth=0,
                       timeout=timeout)
        self.mem_words, self.stage_words = mem_words, stage_words
        self.inputs = dict(rx_valid=Signal(), rx_byte=Signal(8), tx_ready=Signal(),
                           core_busy=Signal())

    @property
    def ports(self) -> list[Signal]:
        return list(self.inputs.values())

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        i = self.inputs
        m.d.comb += [dut.rx.valid.eq(i["rx_valid"]), dut.rx.payload.eq(i["rx_byte"]),
                     dut.tx.ready.eq(i["tx_ready"]), dut.core_busy.eq(i["core_busy"]),
                     Assume(~ResetSignal())]
        got = Signal()
        m.d.comb += got.eq(dut.rx.valid & dut.rx.ready)
        n = Signal(range(64))                   # bytes of the frame so far
        replied = Signal()
        with m.If(dut.tx.valid):
            m.d.sync += replied.eq(1)
        m.d.comb += Assume(~(i["rx_valid"] & (replied | dut.tx.valid)))
        with m.If(got & (n == 0)):
            m.d.comb += Assume(i["rx_byte"] == proto.REQ_SYNC)
        with m.If(got & (n != 63)):
            m.d.sync += n.eq(n + 1)
        # the frame as the wrapper decodes it: header bytes 1..7, payload, CRC byte
        hdr = Signal(8 * proto.HEADER_BYTES)
        payload = Signal(8 * self.stage_words)
        crc = Signal(8)
        cmd, addr, length = hdr[:8], hdr[8:40], hdr[40:56]
        crc_pos = Signal(range(64))
        m.d.comb += crc_pos.eq(proto.HEADER_BYTES + 1 + length)
        crc_ok = Signal()
        with m.If(got & (n != 0)):
            m.d.sync += crc.eq(crc8_step(crc, i["rx_byte"]))
            with m.If(n <= proto.HEADER_BYTES):
                m.d.sync += hdr.eq(Cat(hdr[8:], i["rx_byte"]))
            for w in range(self.stage_words):
                with m.If(n == proto.HEADER_BYTES + 1 + w):
                    m.d.sync += payload[8 * w:8 * w + 8].eq(i["rx_byte"])
            with m.If((n > proto.HEADER_BYTES) & (n == crc_pos) & (i["rx_byte"] == crc)):
                m.d.sync += crc_ok.eq(1)
        end = Signal(34)
        m.d.comb += end.eq(addr + length)
        good = Signal()
        m.d.comb += good.eq(crc_ok & (cmd == proto.Cmd.WRITE) & (length >= 1)
                            & (length <= self.stage_words) & (end <= self.mem_words))
        off = Signal(34)
        m.d.comb += off.eq(dut.mem_addr - addr)
        with m.If(dut.mem_we):
            m.d.comb += [Assert(good), Assert(dut.mem_addr >= addr), Assert(off < length),
                         Assert(dut.mem_wdata == payload.word_select(off[:4], 8))]
        m.d.comb += [dut.mark_valid.eq(0), dut.core_done.eq(0), dut.core_error.eq(0),
                     dut.cycles.eq(Const(0, 48)), dut.mem_rdata.eq(0)]
        return m
