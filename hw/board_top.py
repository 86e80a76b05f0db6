"""The board-level design: the core, its external memory on chip, and the UART host link.

``BoardSystem`` is the platform-independent part (simulated in tests); ``BoardTop`` puts it on
an amaranth-boards platform (clock, UART pins, status LEDs). The board memory is the core's
external memory: the core's ``cmd``/``rsp`` port is served from an on-chip
``amaranth.lib.memory.Memory`` with the configured ``mem_latency``, and the host fills and
reads the same memory over the link (only while the core is not busy).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from amaranth.hdl import ClockSignal, Const, Elaboratable, Instance, Module, Mux, Signal, unsigned
from amaranth.lib import io, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig

from .ports import MemPortSignature, flat_port
from .uart import UARTRx, UARTTx
from .uart_link import LinkEngine

__all__ = ["BoardMemory", "BoardSystem", "BoardTop", "default_core"]


def default_core(cfg: CoreConfig) -> wiring.Component:
    """The accelerator core (``hw/core.py``) for ``cfg``."""
    from .core import Core  # imported late: the board files must not need it to import
    return Core(cfg)


class BoardMemory(wiring.Component):
    """On-chip memory that serves the core's external memory port and the host link.

    Parameters
    ----------
    bus_bytes : int
        Word width in bytes.
    depth : int
        Words.
    latency : int
        Cycles from an accepted core read to ``rsp_valid`` (>= 1, the core's ``mem_latency``).
    init : sequence of int
        Initial words (not with ``spram``).
    spram : bool
        On an iCE40 UltraPlus platform, build the memory from ``SB_SPRAM256KA`` single-port
        RAMs (16K x 16 bits each, one per 16 bits of word) instead of block RAM; the host and
        core share their one port exactly as above. Simulation (no platform) always uses
        ``Memory``.

    Members
    -------
    cmd_valid, cmd_ready, cmd_addr, cmd_we, cmd_wdata, rsp_valid, rsp_data
        The core's memory port (docs/isa.md "Core ports"), from the memory's side: the
        members of ``MemPortSignature(data_bits=8*bus_bytes).flip()`` (:attr:`mem_signature`).
        ``cmd_addr`` bits above the depth are ignored.
    host_addr, host_we, host_wdata, host_re, host_rdata
        The host link's port: it has priority (``cmd_ready`` is low while it is used);
        ``host_rdata`` is the word of the address given with ``host_re`` one cycle later.
    """

    def __init__(self, *, bus_bytes: int, depth: int, latency: int = 1,
                 init: Sequence[int] = (), spram: bool = False) -> None:
        if spram and (bus_bytes % 2 or depth > 16384 or init):
            raise ValueError("an SPRAM board memory needs whole 16-bit lanes, at most 16384 "
                             "words and no initial contents")
        if latency < 1:
            raise ValueError(f"BoardMemory latency must be >= 1, not {latency}")
        if depth < 2:
            raise ValueError(f"BoardMemory depth must be >= 2, not {depth}")
        self._bus_bytes = bus_bytes
        self._depth = depth
        self._latency = latency
        self._init = list(init)
        self._spram = spram
        W = 8 * bus_bytes
        super().__init__({
            **self.mem_signature.members,
            "host_addr": In(range(depth)), "host_we": In(1), "host_wdata": In(W),
            "host_re": In(1), "host_rdata": Out(W),
        })

    @property
    def latency(self) -> int:
        return self._latency

    @property
    def mem_signature(self) -> wiring.Signature:
        """The memory side of the core's port (``MemPortSignature`` flipped)."""
        return MemPortSignature(data_bits=8 * self._bus_bytes).flip()

    @property
    def depth(self) -> int:
        return self._depth

    def elaborate(self, platform) -> Module:
        m = Module()
        W = 8 * self._bus_bytes
        host = Signal()
        m.d.comb += [host.eq(self.host_we | self.host_re), self.cmd_ready.eq(~host)]
        accept = self.cmd_valid & self.cmd_ready
        addr = Signal(range(self._depth))
        m.d.comb += addr.eq(Mux(host, self.host_addr, self.cmd_addr[:len(addr)]))
        wdata = Mux(host, self.host_wdata, self.cmd_wdata)
        wen = Mux(host, self.host_we, accept & self.cmd_we)
        if self._spram and platform is not None:
            port = _SPRAMPort(self._depth, W)
            m.submodules.spram = _SPRAM(port)
            m.d.comb += [port.addr.eq(addr), port.data.eq(wdata), port.en.eq(wen)]
            rdata = port.rdata
        else:
            m.submodules.mem = mem = Memory(shape=unsigned(W), depth=self._depth,
                                            init=self._init)
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [rp.addr.eq(addr), wp.addr.eq(addr), wp.data.eq(wdata), wp.en.eq(wen)]
            rdata = rp.data
        m.d.comb += self.host_rdata.eq(rdata)
        # The read port gives the data one cycle after the request; delay the rest.
        valid = Signal()
        m.d.sync += valid.eq(accept & ~self.cmd_we)
        data = rdata
        for i in range(self._latency - 1):
            v_next = Signal(name=f"rsp_valid_{i}")
            d_next = Signal(W, name=f"rsp_data_{i}")
            m.d.sync += [v_next.eq(valid), d_next.eq(data)]
            valid, data = v_next, d_next
        m.d.comb += [self.rsp_valid.eq(valid), self.rsp_data.eq(data)]
        return m


class _SPRAMPort:
    """Signals of a single-port RAM with the names of a Memory read plus write port."""

    def __init__(self, depth: int, width: int) -> None:
        self.addr = Signal(14)
        self.data = Signal(width)      # write data
        self.en = Signal()             # write enable
        self.rdata = Signal(width)


class _SPRAM(Elaboratable):
    def __init__(self, port: _SPRAMPort) -> None:
        self._port = port

    def elaborate(self, platform) -> Module:
        m = Module()
        p = self._port
        for lane in range(len(p.data) // 16):
            m.submodules[f"spram_{lane}"] = Instance(
                "SB_SPRAM256KA",
                i_ADDRESS=p.addr, i_DATAIN=p.data[16 * lane:16 * lane + 16],
                i_MASKWREN=Const(0xF, 4), i_WREN=p.en, i_CHIPSELECT=Const(1, 1),
                i_CLOCK=ClockSignal("sync"), i_STANDBY=Const(0, 1), i_SLEEP=Const(0, 1),
                i_POWEROFF=Const(1, 1), o_DATAOUT=p.rdata[16 * lane:16 * lane + 16])
        return m


class BoardSystem(wiring.Component):
    """Core + board memory + link engine, with or without the UART PHY.

    Parameters
    ----------
    cfg : CoreConfig
        The core's configuration; the board memory has ``cfg.mem_words`` words of
        ``cfg.bus_bytes`` bytes and ``cfg.mem_latency`` read latency.
    core : callable
        ``core(cfg)`` returns the core component (default: ``hw/core.py``'s ``Core``).
        It must have the flat ports of docs/isa.md "Core ports".
    divisor : int or None
        UART clock cycles per bit; ``None`` leaves the PHY out and exposes byte streams.
    stage_words, mark_depth, timeout
        Link engine parameters (see ``LinkEngine``).
    init : sequence of int
        Initial board memory words (tests).
    spram : bool
        Board memory in iCE40 UltraPlus SPRAM (see ``BoardMemory``).

    Members
    -------
    rx : In(1), tx : Out(1)
        Serial lines, with a PHY; otherwise ``rx: In(stream.Signature(8))`` and
        ``tx: Out(stream.Signature(8))``.
    busy, done, error : Out(1)
        The core's status (for LEDs).
    """

    def __init__(self, cfg: CoreConfig, *,
                 core: Callable[[CoreConfig], wiring.Component] | None = None,
                 divisor: int | None = None, stage_words: int = 32, mark_depth: int = 64,
                 timeout: int = 1000, init: Sequence[int] = (), spram: bool = False) -> None:
        self._cfg = cfg
        self._spram = spram
        self._core_factory = core or default_core
        self._divisor = divisor
        self._stage_words = stage_words
        self._mark_depth = mark_depth
        self._timeout = timeout
        self._init = list(init)
        if divisor is None:
            ports = {"rx": In(stream.Signature(8)), "tx": Out(stream.Signature(8))}
        else:
            ports = {"rx": In(1, init=1), "tx": Out(1, init=1)}
        super().__init__({**ports, "busy": Out(1), "done": Out(1), "error": Out(1)})

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def link_engine(self) -> LinkEngine:
        cfg = self._cfg
        return LinkEngine(bus_bytes=cfg.bus_bytes, mem_words=cfg.mem_words,
                          stage_words=self._stage_words, mark_depth=self._mark_depth,
                          timeout=self._timeout, config_hash=cfg.hash)

    def elaborate(self, platform) -> Module:
        m = Module()
        cfg = self._cfg
        m.submodules.core = core = self._core_factory(cfg)
        m.submodules.memory = mem = BoardMemory(bus_bytes=cfg.bus_bytes, depth=cfg.mem_words,
                                                latency=cfg.mem_latency, init=self._init,
                                                spram=self._spram)
        m.submodules.link = link = self.link_engine()

        # (any core with the flat ports of docs/isa.md, e.g. a test's stand-in)
        wiring.connect(m, flat_port(core, MemPortSignature(data_bits=8 * cfg.bus_bytes)),
                       flat_port(mem, mem.mem_signature))
        m.d.comb += [
            mem.host_addr.eq(link.mem_addr), mem.host_we.eq(link.mem_we),
            mem.host_wdata.eq(link.mem_wdata), mem.host_re.eq(link.mem_re),
            link.mem_rdata.eq(mem.host_rdata),
            core.start.eq(link.start),
            link.core_busy.eq(core.busy), link.core_done.eq(core.done),
            link.core_error.eq(core.error), link.cycles.eq(core.cycles),
            link.mark_valid.eq(core.mark_valid), link.mark_id.eq(core.mark_id),
            self.busy.eq(core.busy), self.done.eq(core.done), self.error.eq(core.error),
        ]
        if self._divisor is None:
            wiring.connect(m, wiring.flipped(self.rx), link.rx)
            wiring.connect(m, link.tx, wiring.flipped(self.tx))
        else:
            m.submodules.uart_rx = urx = UARTRx(divisor=self._divisor)
            m.submodules.uart_tx = utx = UARTTx(divisor=self._divisor)
            m.d.comb += [urx.rx.eq(self.rx), self.tx.eq(utx.tx)]
            wiring.connect(m, urx.bytes, link.rx)
            wiring.connect(m, link.tx, utx.bytes)
        return m


class BoardTop(wiring.Component):
    """A ``BoardSystem`` on an amaranth-boards platform.

    Parameters
    ----------
    system : BoardSystem
        Built with the UART PHY (``divisor`` set for the platform's clock).
    leds : int
        Status LEDs to drive (0 busy, 1 done, 2 error), if the platform has them.

    Members
    -------
    None: everything goes to platform resources (``uart`` 0, ``led`` 0..).
    """

    def __init__(self, system: BoardSystem, *, leds: int = 3) -> None:
        self._system = system
        self._leds = leds
        super().__init__({})

    def elaborate(self, platform) -> Module:
        m = Module()
        m.submodules.system = sysm = self._system
        if platform is None:
            return m
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx_buf = rx_buf = io.Buffer("i", uart.rx)
        m.submodules.uart_tx_buf = tx_buf = io.Buffer("o", uart.tx)
        m.d.comb += [sysm.rx.eq(rx_buf.i), tx_buf.o.eq(sysm.tx)]
        for i, sig in enumerate((sysm.busy, sysm.done, sysm.error)[:self._leds]):
            m.submodules[f"led_{i}_buf"] = led = io.Buffer("o", platform.request("led", i,
                                                                                dir="-"))
            m.d.comb += led.o.eq(sig)
        return m
