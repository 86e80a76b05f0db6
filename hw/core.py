"""The accelerator core: controller, arbiter, DMA and compute unit behind one memory port."""

from __future__ import annotations

from amaranth.hdl import Module
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig

from .compute import ComputeUnit
from .controller import Arbiter, Controller
from .dma import DMA

__all__ = ["Core"]


class Core(wiring.Component):
    """Top level with the flat ports of docs/isa.md ("Core ports").

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
    """

    def __init__(self, cfg: CoreConfig):
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"Core needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        w = 8 * cfg.bus_bytes
        super().__init__({
            "start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
            "cmd_valid": Out(1), "cmd_ready": In(1), "cmd_addr": Out(28), "cmd_we": Out(1),
            "cmd_wdata": Out(w), "rsp_valid": In(1), "rsp_data": In(w),
            "mark_valid": Out(1), "mark_id": Out(16), "cycles": Out(48),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        ctrl = m.submodules.controller = Controller(cfg)
        dma = m.submodules.dma = DMA(cfg)
        cu = m.submodules.compute = ComputeUnit(cfg)
        arb = m.submodules.arbiter = Arbiter(bus_bytes=cfg.bus_bytes,
                                             depth=ctrl.fetch_depth + dma.inflight_depth)
        m.d.comb += [
            ctrl.start.eq(self.start), self.busy.eq(ctrl.busy), self.done.eq(ctrl.done),
            self.error.eq(ctrl.error), self.mark_valid.eq(ctrl.mark_valid),
            self.mark_id.eq(ctrl.mark_id), self.cycles.eq(ctrl.cycles),
            # issue
            dma.insn_valid.eq(ctrl.dma_valid), ctrl.dma_ready.eq(dma.insn_ready),
            dma.insn.eq(ctrl.dma_insn), ctrl.dma_busy.eq(dma.busy),
            cu.insn_valid.eq(ctrl.cu_valid), ctrl.cu_ready.eq(cu.insn_ready),
            cu.insn.eq(ctrl.cu_insn), ctrl.cu_busy.eq(cu.busy),
            # DMA <-> buffers
            cu.wr_en.eq(dma.wr_en), cu.wr_buf.eq(dma.wr_buf), cu.wr_addr.eq(dma.wr_addr),
            cu.wr_data.eq(dma.wr_data), cu.out_r_en.eq(dma.out_r_en),
            cu.out_r_addr.eq(dma.out_r_addr), dma.out_r_data.eq(cu.out_r_data),
            # LOAD CB: the DMA writes the decoder's codebook; an index past it stops the run
            dma.cb_d.eq(ctrl.cu_insn.reg_cb_d), dma.cb_k.eq(ctrl.cu_insn.reg_cb_k),
            cu.cb_addr.eq(dma.cb_addr), cu.cb_data.eq(dma.cb_data), cu.cb_en.eq(dma.cb_en),
            ctrl.cu_error.eq(cu.error), cu.clear_error.eq(ctrl.cu_clear),
            # memory port
            arb.f_cmd_valid.eq(ctrl.f_cmd_valid), ctrl.f_cmd_ready.eq(arb.f_cmd_ready),
            arb.f_cmd_addr.eq(ctrl.f_cmd_addr), ctrl.f_rsp_valid.eq(arb.f_rsp_valid),
            ctrl.f_rsp_data.eq(arb.f_rsp_data),
            arb.d_cmd_valid.eq(dma.cmd_valid), dma.cmd_ready.eq(arb.d_cmd_ready),
            arb.d_cmd_addr.eq(dma.cmd_addr), arb.d_cmd_we.eq(dma.cmd_we),
            arb.d_cmd_wdata.eq(dma.cmd_wdata), dma.rsp_valid.eq(arb.d_rsp_valid),
            dma.rsp_data.eq(arb.d_rsp_data),
            self.cmd_valid.eq(arb.cmd_valid), arb.cmd_ready.eq(self.cmd_ready),
            self.cmd_addr.eq(arb.cmd_addr), self.cmd_we.eq(arb.cmd_we),
            self.cmd_wdata.eq(arb.cmd_wdata), arb.rsp_valid.eq(self.rsp_valid),
            arb.rsp_data.eq(self.rsp_data),
        ]
        return m
