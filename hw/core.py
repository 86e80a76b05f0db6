"""The accelerator core: controller, arbiter, DMA and compute unit behind one memory port."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring

from shiftbook.config import CoreConfig

from .compute import ComputeUnit
from .controller import Arbiter, Controller
from .dma import DMA
from .ports import ControlSignature, MemPortSignature, flat_port

__all__ = ["Core"]


class Core(wiring.Component):
    """Top level with the flat ports of docs/isa.md ("Core ports").

    The blocks are joined with ``wiring.connect`` (``hw.ports``): the controller's issue
    streams to the DMA and the compute unit, the DMA's buffer port into the compute unit, the
    fetch and DMA requesters into the arbiter, and the arbiter onto the core's memory port.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    start : In(1)
        Pulse: begin fetching at word 0 (``done``/``error`` clear at once; see docs/hw.md).
    busy, done, error : Out(1)
        Running; stopped at END (held until the next start); stopped on an illegal
        instruction or a codebook index ``>= CB_K`` (WFMT=1).
    cmd_valid : Out(1), cmd_ready : In(1), cmd_addr : Out(28), cmd_we : Out(1),
    cmd_wdata : Out(8*bus_bytes)
        Memory requests (a write has no response).
    rsp_valid : In(1), rsp_data : In(8*bus_bytes)
        Read data, in order, ``mem_latency`` cycles after the request was accepted.
    mark_valid : Out(1), mark_id : Out(16)
        One pulse per MARK.
    cycles : Out(48)
        Cycles since start.

    ``cmd_*``/``rsp_*`` are the members of ``MemPortSignature`` (:attr:`mem_signature`), the
    others those of ``ControlSignature``, flat so that the Verilog ports keep these names.
    """

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"Core needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        ctl = ControlSignature().members
        super().__init__({
            "start": ctl["start"], "busy": ctl["busy"], "done": ctl["done"],
            "error": ctl["error"],
            **self.mem_signature.members,
            "mark_valid": ctl["mark_valid"], "mark_id": ctl["mark_id"],
            "cycles": ctl["cycles"],
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def mem_signature(self) -> MemPortSignature:
        """The signature of the core's memory port (its ``cmd_*``/``rsp_*`` members)."""
        return MemPortSignature(data_bits=8 * self._cfg.bus_bytes)

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        ctrl = m.submodules.controller = Controller(cfg)
        dma = m.submodules.dma = DMA(cfg)
        cu = m.submodules.compute = ComputeUnit(cfg)
        arb = m.submodules.arbiter = Arbiter(bus_bytes=cfg.bus_bytes,
                                             depth=ctrl.fetch_depth + dma.inflight_depth)
        ctl = ControlSignature()
        wiring.connect(m, wiring.flipped(flat_port(self, ctl)), flat_port(ctrl, ctl))
        wiring.connect(m, ctrl.dma, dma.issue)
        wiring.connect(m, ctrl.cu, cu.issue)
        wiring.connect(m, dma.buf, cu.dma)
        wiring.connect(m, ctrl.mem, arb.fetch)
        wiring.connect(m, dma.mem, arb.dma)
        wiring.connect(m, arb.mem, wiring.flipped(flat_port(self, self.mem_signature)))
        m.d.comb += [
            # LOAD CB: the DMA writes the decoder's codebook; an index past it stops the run
            dma.cb_d.eq(ctrl.cu.insn.payload.reg_cb_d),
            dma.cb_k.eq(ctrl.cu.insn.payload.reg_cb_k),
            ctrl.cu_error.eq(cu.error), cu.clear_error.eq(ctrl.cu_clear),
        ]
        return m
