"""The compute unit's drain: a finished tile's accumulators through the requantization lanes
into OUT, one PE row per cycle, while the next tile reduces."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook import numerics
from shiftbook.config import CoreConfig
from shiftbook.fields import field_bits

from .buffers import log2
from .requant import RequantLane

__all__ = ["Drain"]


def _signed(v: int, bits: int) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if v >> (bits - 1) else v


class Drain(wiring.Component):
    """Drains one tile at a time: its job (OUT byte address per PE row, pixel count, column
    range, ReLU/residual flags, BIAS row) waits in a pending slot while the array's drain
    registers load, then the unit shifts the rows through the lanes (SHIFT: RES read, then
    one row per cycle into the ``cols`` requantization lanes) and lets the lanes' pipeline
    empty (FLUSH). A job is accepted while the previous one has at most 4 rows left to shift,
    so its last shift is no later than the next load.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    req : In(1)
        A tile's last step is emitted this cycle and the tile drains (taken when ``free``).
    oo : In(OUT bits).array(rows), npix, col0, ncols : In, relu, resid : In(1), bias_row : In
        The job: each row's OUT byte address, the pixel count, the columns written, the flags
        and the BIAS row.
    free : Out(1)
        A job can be accepted this cycle.
    idle : Out(1)
        Nothing pending, shifting or in the lanes.
    shift : Out(1)
        Shift the array's drain chains one row (row 0 is on ``acc``).
    acc : In(signed(acc_bits)).array(cols)
        The array's row-0 drain registers.
    bias_addr : Out, bias_data : In(8 * bbuf_row_bytes)
        BIAS row read (latency 1); column ``c`` reads bits ``64c ..``: bias (low 32), shift
        (bits 32..39), residual shift (bits 40..47).
    res_addr : Out(OUT bits), res_data : In(signed(8)).array(cols)
        RES byte read (latency 1), one byte per column.
    out_addr : Out(OUT bits), out_data : Out(8).array(cols), out_en : Out(cols)
        OUT byte writes.

    Latency: :attr:`latency`: a job accepted at cycle t with the unit idle writes row ``r`` to
    OUT at t + 8 + r (the array's drain registers load at the end of t+3, the first SHIFT is
    t+4, the RES read and the lanes take 1 + 3 cycles). :meth:`model` gives the bytes.
    """

    #: Cycles from accepting a job (drain idle) to row 0's OUT write.
    latency = 4 + 1 + RequantLane.latency

    def __init__(self, cfg: CoreConfig) -> None:
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"Drain needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        R, C = cfg.rows, cfg.cols
        fb = field_bits(cfg)
        OB = log2(cfg.obuf_bytes)
        self._bias_bits = min(cfg.acc_bits, 32)
        super().__init__({
            "req": In(1), "oo": In(OB).array(R),
            "npix": In(fb["npix"][0]), "col0": In(fb["col0"][0]), "ncols": In(fb["ncols"][0]),
            "relu": In(1), "resid": In(1), "bias_row": In(max(1, log2(cfg.bbuf_rows))),
            "free": Out(1), "idle": Out(1), "shift": Out(1),
            "acc": In(signed(cfg.acc_bits)).array(C),
            "bias_addr": Out(max(1, log2(cfg.bbuf_rows))), "bias_data": In(8 * cfg.bbuf_row_bytes),
            "res_addr": Out(OB), "res_data": In(signed(8)).array(C),
            "out_addr": Out(OB), "out_data": Out(8).array(C), "out_en": Out(C),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def model(self, *, oo: Sequence[int], npix: int, col0: int, ncols: int, relu: bool,
              resid: bool, accs: Sequence[Sequence[int]], bias_data: int,
              res: Callable[[int, int], int]) -> list[tuple[int, int, int]]:
        """The OUT writes of one job, in order: ``(byte address, column, int8 as a byte)``
        for rows ``0 .. npix-1`` (``accs[r][c]``: row ``r``'s accumulator) and columns
        ``col0 .. col0+ncols-1``; ``res(addr, c)`` is the RES byte (signed)."""
        writes = []
        for r in range(npix):
            for c in range(col0, min(col0 + ncols, self._cfg.cols)):
                e = bias_data >> (64 * c)
                v = numerics.requantize(accs[r][c], _signed(e, self._bias_bits),
                                        (e >> 32) & 0xFF, relu=relu,
                                        residual=res(oo[r], c) if resid else None,
                                        res_shift=_signed(e >> 40, 8))
                writes.append((oo[r], c, int(v) & 0xFF))
        return writes

    def elaborate(self, platform):
        m = Module()
        job = self._control(m)
        self._lanes(m, job)
        m.d.comb += self.shift.eq(job.shift)
        return m

    def _control(self, m: Module) -> SimpleNamespace:
        """The pending slot and the IDLE/SHIFT/FLUSH machine; returns the running job's
        registers (``oo``, ``shift``, ``relu``, ``resid``, ``col0``, ``ncols``)."""
        cfg = self._cfg
        R = cfg.rows
        lat = 1 + RequantLane.latency   # RES read + lanes
        OB, NP = len(self.oo[0]), len(self.npix)
        C0, NC, BB = len(self.col0), len(self.ncols), len(self.bias_row)
        d_oo = [Signal(OB, name=f"d_oo_{r}") for r in range(R)]
        d_cnt = Signal(8)
        d_npix, d_col0, d_ncols = Signal(NP), Signal(C0), Signal(NC)
        d_relu, d_resid = Signal(), Signal()
        d_bias_row = Signal(BB)
        d_shift = Signal()
        p_valid = Signal()
        p_wait = Signal(2)
        p_oo = [Signal(OB, name=f"p_oo_{r}") for r in range(R)]
        p_npix, p_col0, p_ncols = Signal(NP), Signal(C0), Signal(NC)
        p_relu, p_resid = Signal(), Signal()
        p_bias_row = Signal(BB)
        m.d.comb += self.bias_addr.eq(d_bias_row)
        shifting = Signal()
        left = Signal(9)
        m.d.comb += left.eq(d_npix - d_cnt)
        m.d.comb += self.free.eq(~p_valid & (~shifting | (left <= 4)))
        d_accept = Signal()
        m.d.comb += d_accept.eq(self.free & self.req)
        with m.If(d_accept):
            m.d.sync += [p_valid.eq(1), p_wait.eq(2), p_npix.eq(self.npix),
                         p_col0.eq(self.col0), p_ncols.eq(self.ncols), p_relu.eq(self.relu),
                         p_resid.eq(self.resid), p_bias_row.eq(self.bias_row)]
            for r in range(R):
                m.d.sync += p_oo[r].eq(self.oo[r])
        with m.Elif(p_valid & (p_wait != 0)):
            m.d.sync += p_wait.eq(p_wait - 1)
        start_job = Signal()
        m.d.comb += start_job.eq(p_valid & (p_wait == 0))

        def start_next():
            # (last in every state, so it wins over that state's own updates)
            with m.If(start_job):
                m.d.sync += [p_valid.eq(0), d_cnt.eq(0), d_npix.eq(p_npix), d_col0.eq(p_col0),
                             d_ncols.eq(p_ncols), d_relu.eq(p_relu), d_resid.eq(p_resid),
                             d_bias_row.eq(p_bias_row)]
                for r in range(R):
                    m.d.sync += d_oo[r].eq(p_oo[r])
                with m.If(p_npix == 0):
                    m.next = "FLUSH"
                with m.Else():
                    m.next = "SHIFT"

        with m.FSM(name="drain"):
            with m.State("IDLE"):
                m.d.comb += self.idle.eq(~p_valid)
                start_next()
            with m.State("SHIFT"):
                m.d.comb += [d_shift.eq(1), shifting.eq(1)]
                m.d.sync += d_cnt.eq(d_cnt + 1)
                for r in range(R - 1):
                    m.d.sync += d_oo[r].eq(d_oo[r + 1])
                with m.If(d_cnt == d_npix - 1):
                    m.d.sync += d_cnt.eq(0)
                    m.next = "FLUSH"
                start_next()
            with m.State("FLUSH"):
                m.d.sync += d_cnt.eq(d_cnt + 1)
                with m.If(d_cnt == lat):
                    m.next = "IDLE"
                start_next()
        return SimpleNamespace(oo=d_oo, shift=d_shift, relu=d_relu, resid=d_resid,
                               col0=d_col0, ncols=d_ncols)

    def _lanes(self, m: Module, job: SimpleNamespace) -> None:
        """RES read in the SHIFT cycle; the lanes one cycle later; OUT writes after them."""
        cfg = self._cfg
        C = cfg.cols
        d_oo, d_shift, d_relu, d_resid = job.oo, job.shift, job.relu, job.resid
        d_col0, d_ncols = job.col0, job.ncols
        OB = len(d_oo[0])
        m.d.comb += self.res_addr.eq(d_oo[0])
        l_valid, l_relu, l_resid = Signal(), Signal(), Signal()
        l_oo = Signal(OB)
        l_acc = [Signal(signed(cfg.acc_bits), name=f"l_acc_{c}") for c in range(C)]
        m.d.sync += [l_valid.eq(d_shift), l_oo.eq(d_oo[0]), l_relu.eq(d_relu),
                     l_resid.eq(d_resid)]
        for c in range(C):
            m.d.sync += l_acc[c].eq(self.acc[c])
        # the lanes' output address
        oo_pipe = [l_oo]
        for i in range(RequantLane.latency):
            s = Signal(OB, name=f"oo_pipe_{i}")
            m.d.sync += s.eq(oo_pipe[-1])
            oo_pipe.append(s)
        m.d.comb += self.out_addr.eq(oo_pipe[-1])
        col_end = Signal(8)
        m.d.comb += col_end.eq(d_col0 + d_ncols)
        l_cols = Signal(C)
        m.d.sync += l_cols.eq(Cat(*[(c >= d_col0) & (c < col_end) for c in range(C)]))
        cols_pipe = [l_cols]
        for i in range(RequantLane.latency):
            s = Signal(C, name=f"cols_pipe_{i}")
            m.d.sync += s.eq(cols_pipe[-1])
            cols_pipe.append(s)
        for c in range(C):
            # (the compiler refuses a bias that does not fit the accumulator)
            lane = m.submodules[f"requant_{c}"] = RequantLane(acc_bits=cfg.acc_bits,
                                                              bias_bits=self._bias_bits)
            e = self.bias_data[64 * c:64 * c + 64]
            m.d.comb += [lane.i_valid.eq(l_valid), lane.acc.eq(l_acc[c]),
                         lane.bias.eq(e[0:lane.bias.shape().width]), lane.shift.eq(e[32:40]),
                         lane.res_shift.eq(e[40:48]), lane.res.eq(self.res_data[c]),
                         lane.relu.eq(l_relu), lane.residual.eq(l_resid),
                         self.out_data[c].eq(lane.out),
                         self.out_en[c].eq(lane.o_valid & cols_pipe[-1][c])]
