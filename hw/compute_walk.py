"""The compute unit's pixel walker: a tile's output pixels in raster order, two PE rows per
cycle, with adders only (docs/isa.md COMPUTE, step 1)."""

from __future__ import annotations

from amaranth.hdl import Module, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.fields import coord_bits, dim_bits

from .buffers import log2
from .layouts import compute_insn_layout

__all__ = ["PixelWalker", "WALK_REGS"]

#: The layer registers the walk reads (``reg_<name>`` of ``compute_insn_layout``).
WALK_REGS = ("out_w", "stride_x", "stride_y", "pad_l", "a_wrap", "o_wrap")


def _wrap(v: int, bits: int, *, signed_: bool = False) -> int:
    v &= (1 << bits) - 1
    return v - (1 << bits) if signed_ and v >> (bits - 1) else v


class PixelWalker(wiring.Component):
    """Fills the next-tile slot's staging chain: for PE row ``r`` the input coordinates
    ``(iy, ix)`` of its output pixel's window corner, its ACT base address ``ab`` and its OUT
    byte address ``oo``.

    A walk starts (``load``) at pixel ``(ox0, iy0, ix0, ab0, oo0)``; each ``step`` cycle walks
    two pixels into the top of a shift chain of ``R`` rounded up to even entries, so after
    :attr:`steps` steps row 0 holds the first pixel and row ``r`` the ``r``-th one after it.
    The raster step (``ox + 1 < out_w``: next column, else the next output row) adds the
    strides and wrap offsets of the layer registers; these must hold still during a walk.

    Parameters
    ----------
    cfg : CoreConfig
        Rows, and the widths of coordinates, dimensions and ACT/OUT addresses.

    Members
    -------
    load : In(1)
        Start a walk at ``ox0 .. oo0`` (wins over ``step``).
    ox0 : In(dim_bits), iy0, ix0 : In(signed(coord_bits)), ab0 : In(ACT bits), oo0 : In(OUT bits)
    step : In(1)
        Walk two pixels.
    out_w, stride_x, stride_y, pad_l, a_wrap, o_wrap : In
        The layer registers (``WALK_REGS``), at their ``compute_insn_layout`` shapes.
    iy, ix, ab, oo : Out(...).array(rows)
        The staging chain, row 0 first.

    Latency: a walk is done :attr:`steps` ``= ceil(rows / 2)`` step cycles after its load;
    :meth:`model` gives the chain it leaves.
    """

    def __init__(self, cfg: CoreConfig) -> None:
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"PixelWalker needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        R = cfg.rows
        self._db, self._cw = dim_bits(cfg), coord_bits(cfg)
        self._aw, self._ob = log2(cfg.abuf_bytes), log2(cfg.obuf_bytes)
        layout = compute_insn_layout(cfg)
        self._reg_shapes = {n: layout[f"reg_{n}"].shape for n in WALK_REGS}
        cw = signed(self._cw)
        super().__init__({
            "load": In(1), "ox0": In(self._db), "iy0": In(cw), "ix0": In(cw),
            "ab0": In(self._aw), "oo0": In(self._ob), "step": In(1),
            **{n: In(s) for n, s in self._reg_shapes.items()},
            "iy": Out(cw).array(R), "ix": Out(cw).array(R),
            "ab": Out(self._aw).array(R), "oo": Out(self._ob).array(R),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    @property
    def steps(self) -> int:
        """Step cycles of one walk: ``ceil(rows / 2)``."""
        return (self._cfg.rows + 1) // 2

    def model(self, *, ox0: int, iy0: int, ix0: int, ab0: int, oo0: int, out_w: int,
              stride_x: int, stride_y: int, pad_l: int, a_wrap: int,
              o_wrap: int) -> list[tuple[int, int, int, int]]:
        """The chain after a walk: ``(iy, ix, ab, oo)`` of rows ``0 .. rows-1``, at the
        gateware's widths (coordinates wrap in ``coord_bits`` signed bits, addresses in their
        buffer's bits)."""
        db, cw, aw, ob = self._db, self._cw, self._aw, self._ob
        ox, iy, ix = _wrap(ox0, db), _wrap(iy0, cw, signed_=True), _wrap(ix0, cw, signed_=True)
        ab, oo = _wrap(ab0, aw), _wrap(oo0, ob)
        rows = []
        for _ in range(self._cfg.rows):
            rows.append((iy, ix, ab, oo))
            if ox + 1 < out_w:
                ox, ix = _wrap(ox + 1, db), _wrap(ix + stride_x, cw, signed_=True)
                ab, oo = _wrap(ab + _wrap(stride_x, aw), aw), _wrap(oo + 1, ob)
            else:
                ox, iy = 0, _wrap(iy + stride_y, cw, signed_=True)
                ix = _wrap(-pad_l, cw, signed_=True)
                ab, oo = _wrap(ab + _wrap(a_wrap, aw), aw), _wrap(oo + _wrap(o_wrap, ob), ob)
        return rows

    def _position(self, name: str) -> tuple[Signal, ...]:
        cw = signed(self._cw)
        return (Signal(self._db, name=f"{name}_ox"), Signal(cw, name=f"{name}_iy"),
                Signal(cw, name=f"{name}_ix"), Signal(self._aw, name=f"{name}_ab"),
                Signal(self._ob, name=f"{name}_oo"))

    def _raster_step(self, m: Module, p, q) -> None:
        """q = the pixel after p in raster order (docs/isa.md COMPUTE step 1)."""
        ox, iy, ix, ab, oo = p
        AW, OB = self._aw, self._ob
        with m.If(ox + 1 < self.out_w):
            m.d.comb += [q[0].eq(ox + 1), q[1].eq(iy), q[2].eq(ix + self.stride_x),
                         q[3].eq(ab + self.stride_x[:AW]), q[4].eq(oo + 1)]
        with m.Else():
            m.d.comb += [q[0].eq(0), q[1].eq(iy + self.stride_y), q[2].eq(-self.pad_l),
                         q[3].eq(ab + self.a_wrap[:AW]), q[4].eq(oo + self.o_wrap[:OB])]

    def elaborate(self, platform):
        m = Module()
        R = self._cfg.rows
        L = R + (R % 2)
        cw = signed(self._cw)
        chains = ([Signal(cw, name=f"st_iy_{r}") for r in range(L)],
                  [Signal(cw, name=f"st_ix_{r}") for r in range(L)],
                  [Signal(self._aw, name=f"st_ab_{r}") for r in range(L)],
                  [Signal(self._ob, name=f"st_oo_{r}") for r in range(L)])
        w = self._position("w")        # the walk's next row
        n1 = self._position("w1")
        n2 = self._position("w2")
        self._raster_step(m, w, n1)
        self._raster_step(m, n1, n2)
        with m.If(self.load):
            m.d.sync += [w[0].eq(self.ox0), w[1].eq(self.iy0), w[2].eq(self.ix0),
                         w[3].eq(self.ab0), w[4].eq(self.oo0)]
        with m.Elif(self.step):
            for chain, k in zip(chains, (1, 2, 3, 4), strict=True):
                m.d.sync += [chain[L - 2].eq(w[k]), chain[L - 1].eq(n1[k])]
                for r in range(L - 2):
                    m.d.sync += chain[r].eq(chain[r + 2])
            m.d.sync += [dst.eq(src) for dst, src in zip(w, n2, strict=True)]
        for port, chain in zip((self.iy, self.ix, self.ab, self.oo), chains, strict=True):
            m.d.comb += [port[r].eq(chain[r]) for r in range(R)]
        return m
