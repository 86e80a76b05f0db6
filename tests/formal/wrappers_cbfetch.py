"""Test-only wrapper: the codebook index fetcher pushes exactly its tile's blocks, under any
decoder back-pressure and any shared-port pattern, and flags every index past the codebook.

One codebook tile (arbitrary ``CB_D``, ``KH``, ``KW``, ``NCH``, ``IDX_BITS``, ``IDX_PER_ROW``,
``CB_K``, ``WGT_BASE`` within small bounds) is offered from cycle 0 until claimed; ``idx.ready``
and ``raw_rd`` are free every cycle and the WGT rows hold arbitrary data. Asserted: the tile
pushes no more than ``ceil(NCH*KH*KW / CB_D)`` index rows and exactly that many once it is
done (none dropped or repeated); ``error`` rises exactly when a pushed index is ``>= CB_K``.
"""

from __future__ import annotations

from amaranth.hdl import Assert, Assume, Elaboratable, Module, ResetSignal, Signal

from shiftbook.config import PRESETS
from shiftbook.hw.compute_cbfetch import FETCH_FIELDS, IndexFetcher

__all__ = ["FetchSpec", "BrokenIndexFetcher"]


class BrokenIndexFetcher(IndexFetcher):
    """A deliberately broken fetcher (test-only mutation): it pushes while the decoder is not
    ready (``idx.ready`` is ignored), so an index row is dropped."""

    def _walk(self, m, f):
        super()._walk(m, f)
        m.d.comb += f.push.eq(self.idx.valid)


class FetchSpec(Elaboratable):
    """A fetcher on the ``tiny`` config and the assertions above."""

    def __init__(self, *, broken: bool = False, max_dim: int = 2, max_d: int = 3) -> None:
        self.cfg = PRESETS["tiny"]
        self.dut = (BrokenIndexFetcher if broken else IndexFetcher)(self.cfg)
        self.max_dim, self.max_d = max_dim, max_d
        self.inputs = {n: Signal.like(getattr(self.dut, n), name=f"in_{n}")
                       for n in (*FETCH_FIELDS, "wgt_base", "wgt_data")}
        self.inputs.update(idx_ready=Signal(), raw_rd=Signal())

    @property
    def ports(self) -> list[Signal]:
        return list(self.inputs.values())

    def _tile(self, m: Module, armed) -> None:
        """The offered tile: fixed, within bounds, and a valid index layout."""
        i, cfg = self.inputs, self.cfg
        W = 8 * cfg.wbuf_row_bytes
        for n in (*FETCH_FIELDS, "wgt_base"):
            held = Signal.like(i[n], name=f"held_{n}")
            m.d.sync += held.eq(i[n])
            with m.If(armed):
                m.d.comb += Assume(i[n] == held)
        m.d.comb += [Assume((i[n] >= 1) & (i[n] <= self.max_dim)) for n in ("kh", "kw", "nch")]
        m.d.comb += [Assume((i["cb_d"] >= 1) & (i["cb_d"] <= self.max_d)),
                     Assume((i["idx_bits"] >= 1) & (i["idx_bits"] <= cfg.index_bits_max)),
                     Assume((i["cb_k"] >= 1) & (i["cb_k"] <= (1 << i["idx_bits"]))),
                     Assume((i["idx_per_row"] >= 1) & (i["idx_per_row"] * cfg.cols * i["idx_bits"]
                                                       <= W))]

    def elaborate(self, platform):
        m = Module()
        m.submodules.dut = dut = self.dut
        i = self.inputs
        m.d.comb += Assume(~ResetSignal())
        armed = Signal()
        m.d.sync += armed.eq(1)
        self._tile(m, armed)
        claimed = Signal()
        with m.If(dut.claim):
            m.d.sync += claimed.eq(1)
        m.d.comb += [dut.offer.eq(~claimed), dut.active_cb.eq(0), dut.clear_error.eq(~armed),
                     dut.raw_rd.eq(i["raw_rd"]), dut.wgt_data.eq(i["wgt_data"]),
                     dut.idx.ready.eq(i["idx_ready"]), dut.wgt_base.eq(i["wgt_base"])]
        m.d.comb += [getattr(dut, n).eq(i[n]) for n in FETCH_FIELDS]
        steps = Signal(8)
        m.d.comb += steps.eq(i["nch"] * i["kh"] * i["kw"])
        pushes = Signal(8)
        push = Signal()
        m.d.comb += push.eq(dut.idx.valid & dut.idx.ready)
        with m.If(push):
            m.d.sync += pushes.eq(pushes + 1)
            # never more rows than the tile has blocks
            m.d.comb += Assert(pushes * i["cb_d"] < steps)
        with m.If(claimed & ~dut.active & ~dut.claim):
            m.d.comb += Assert(pushes * i["cb_d"] >= steps)
        self._error(m, push)
        return m

    def _error(self, m: Module, push) -> None:
        """``error`` is set exactly after a pushed index row holds an index ``>= CB_K``."""
        dut, i, cfg = self.dut, self.inputs, self.cfg
        seen = Signal()
        bad = Signal()
        m.d.comb += bad.eq(sum(((dut.idx.payload[j] >= i["cb_k"]) for j in range(cfg.cols)),
                               start=0) != 0)
        armed2 = Signal()
        m.d.sync += armed2.eq(1)
        with m.If(push & bad):
            m.d.sync += seen.eq(1)
        with m.If(armed2):
            m.d.comb += Assert(dut.error == seen)
