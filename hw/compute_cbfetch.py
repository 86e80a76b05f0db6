"""The compute unit's codebook index fetcher: index rows of a codebook tile (WFMT=1) from the
WGT buffer into the decoder array (docs/decoder.md)."""

from __future__ import annotations

from collections.abc import Sequence
from types import SimpleNamespace

from amaranth.hdl import Cat, Module, Mux, Signal, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from shiftbook.config import CoreConfig
from shiftbook.fields import dim_bits

from .buffers import log2
from .layouts import compute_insn_layout

__all__ = ["IndexFetcher", "FETCH_FIELDS"]

#: The fields of the offered tile the fetcher reads (``reg_<name>``, and ``wgt_base``).
FETCH_FIELDS = ("cb_d", "cb_k", "idx_bits", "idx_per_row", "kh", "kw", "nch")


class IndexFetcher(wiring.Component):
    """A mirror of the reduction walker (``c, ky, kx`` and the position in the block) that
    runs ahead of the active tile: at every block start it pushes the next index row into the
    decoder, so a tile pushes exactly ``ceil(NCH*KH*KW / CB_D)`` rows (no divider).

    Index rows are shifted out of the held WGT row (``IDX_PER_ROW`` of them per row); the next
    WGT row is read one cycle ahead. The fetcher claims the offered tile as soon as it is done
    with the current one (and, while a codebook tile is active, only one with the same
    ``CB_D`` and ``CB_K``), so blocks flow into the decoder without a bubble between tiles.
    The WGT read port is shared: a cycle with ``raw_rd`` (the compute pipeline's raw read)
    brings no data for the fetcher.

    Parameters
    ----------
    cfg : CoreConfig

    Members
    -------
    offer : In(1)
        A codebook tile waits in the next-tile slot, not yet claimed.
    cb_d, cb_k, idx_bits, idx_per_row, kh, kw, nch : In
        Its layer registers (``FETCH_FIELDS``, at their ``compute_insn_layout`` shapes).
    wgt_base : In
        Its first WGT row.
    active_cb : In(1)
        The active tile is a codebook tile (the decoder still serves its ``CB_D``/``CB_K``).
    claim : Out(1)
        The fetcher takes the offered tile this cycle.
    active : Out(1)
        Pushing a tile's index rows.
    raw_rd : In(1)
        The WGT read port serves another reader this cycle.
    wgt_addr : Out(WGT row bits), wgt_data : In(8 * wbuf_row_bytes)
        WGT row reads (data one cycle after the address).
    idx : Out(stream.Signature(ArrayLayout(index_bits_max, cols)))
        Index rows to the decoder array.
    d, k : Out
        ``CB_D`` and ``CB_K`` of the claimed tile (the decoder's ``d`` and ``k``).
    error : Out(1), clear_error : In(1)
        Sticky: an index ``>= CB_K`` was pushed; cleared by ``clear_error``.

    Latency: a claim at cycle t reads the tile's first WGT row at t, so its first index row is
    valid on ``idx`` at t+1 (with no ``raw_rd`` at t); :meth:`model` gives the rows.
    """

    def __init__(self, cfg: CoreConfig) -> None:
        if not isinstance(cfg, CoreConfig):
            raise TypeError(f"IndexFetcher needs a CoreConfig, not {type(cfg).__name__}")
        self._cfg = cfg
        layout = compute_insn_layout(cfg)
        self._ib = cfg.index_bits_max
        self._w = 8 * cfg.wbuf_row_bytes
        super().__init__({
            "offer": In(1),
            **{n: In(layout[f"reg_{n}"].shape) for n in FETCH_FIELDS},
            "wgt_base": In(layout["wgt_base"].shape),
            "active_cb": In(1), "claim": Out(1), "active": Out(1),
            "raw_rd": In(1), "wgt_addr": Out(log2(cfg.wbuf_rows)), "wgt_data": In(self._w),
            "idx": Out(stream.Signature(data.ArrayLayout(unsigned(self._ib), cfg.cols))),
            "d": Out(range(1, cfg.max_d + 1), init=cfg.max_d),
            "k": Out(range(1, cfg.max_k + 1), init=cfg.max_k),
            "error": Out(1), "clear_error": In(1),
        })

    @property
    def cfg(self) -> CoreConfig:
        return self._cfg

    def model(self, wgt: Sequence[int], *, wgt_base: int, idx_bits: int, idx_per_row: int,
              kh: int, kw: int, nch: int, cb_d: int) -> list[list[int]]:
        """The index rows one tile pushes: ``ceil(nch*kh*kw / cb_d)`` rows of ``cols``
        indices, row ``p`` from WGT row ``wgt_base + p // idx_per_row`` (``wgt`` is the WGT
        buffer, one int per row), bits ``(p % idx_per_row) * cols * idx_bits`` upwards."""
        C = self._cfg.cols
        steps = nch * kh * kw
        rows = []
        for p in range(-(-steps // cb_d)):
            word = wgt[(wgt_base + p // idx_per_row) % self._cfg.wbuf_rows]
            word >>= (p % idx_per_row) * C * idx_bits
            rows.append([(word >> (j * idx_bits)) & ((1 << idx_bits) - 1) for j in range(C)])
        return rows

    def elaborate(self, platform):
        m = Module()
        cfg = self._cfg
        W, DB = self._w, dim_bits(cfg)
        shapes = dict(ib=range(self._ib + 1), per1=range(W + 1), kh1=DB, kw1=DB, nch1=DB,
                      c=DB, ky=DB, kx=DB, pos=range(cfg.max_d), next=len(self.wgt_addr),
                      hold=W, hold_valid=1, sub=range(W + 1), rdat_ok=1, push=1)
        f = SimpleNamespace(**{k: Signal(v, name=f"f_{k}") for k, v in shapes.items()})
        f.idx = [Signal(self._ib, name=f"f_idx_{j}") for j in range(cfg.cols)]
        self._walk(m, f)
        self._rows(m, f)
        return m

    def _walk(self, m: Module, f: SimpleNamespace) -> None:
        """The claim, the handshake and the mirror of the reduction walker."""
        cfg = self._cfg
        f_active, f_d, f_k, claim = self.active, self.d, self.k, self.claim
        f_last, f_start, f_step = Signal(), Signal(), Signal()
        compat = Signal()
        m.d.comb += [
            compat.eq((self.cb_d == f_d) & (self.cb_k == f_k)),
            # (in the cycle of the active tile's last step at the latest)
            claim.eq(self.offer & (~f_active | (f_step & f_last)) &
                     (compat | ~self.active_cb)),
            f_last.eq((f.kx == f.kw1) & (f.ky == f.kh1) & (f.c == f.nch1)),
            f_start.eq(f.pos == 0),
            self.idx.valid.eq(f_active & f_start & (f.hold_valid | f.rdat_ok)),
            f.push.eq(self.idx.valid & self.idx.ready),
            f_step.eq(f_active & (~f_start | f.push)),
        ]
        with m.If(claim):
            m.d.sync += [f_active.eq(1), f_d.eq(self.cb_d), f_k.eq(self.cb_k),
                         f.ib.eq(self.idx_bits), f.per1.eq(self.idx_per_row - 1),
                         f.kh1.eq(self.kh - 1), f.kw1.eq(self.kw - 1), f.nch1.eq(self.nch - 1),
                         f.c.eq(0), f.ky.eq(0), f.kx.eq(0), f.pos.eq(0)]
        with m.Elif(f_step):
            with m.If(f_last):
                m.d.sync += f_active.eq(0)
            with m.Elif(f.kx != f.kw1):
                m.d.sync += f.kx.eq(f.kx + 1)
            with m.Elif(f.ky != f.kh1):
                m.d.sync += [f.kx.eq(0), f.ky.eq(f.ky + 1)]
            with m.Else():
                m.d.sync += [f.kx.eq(0), f.ky.eq(0), f.c.eq(f.c + 1)]
            m.d.sync += f.pos.eq(Mux((f.pos + 1 == f_d) | (f.pos == cfg.max_d - 1), 0,
                                     f.pos + 1))

    def _rows(self, m: Module, f: SimpleNamespace) -> None:
        """The held WGT row, the index row cut from it, the WGT address and the error."""
        C, IB, W = self._cfg.cols, self._ib, self._w
        claim, push, idx = self.claim, f.push, f.idx
        # The current WGT row: the held one, else the one the read port brings this cycle.
        src = Signal(W)
        m.d.comb += src.eq(Mux(f.hold_valid, f.hold, self.wgt_data))
        shifted = Signal(W)
        with m.Switch(f.ib):
            for v in range(1, IB + 1):
                with m.Case(v):
                    m.d.comb += [idx[j].eq(src[j * v:(j + 1) * v]) for j in range(C)]
                    m.d.comb += shifted.eq(src >> (C * v))
        m.d.comb += [self.idx.payload[j].eq(idx[j]) for j in range(C)]
        # the held WGT row: taken from the read port when none is held (`load`), shifted by
        # one index row per push, dropped after IDX_PER_ROW pushes
        load = Signal()
        cur_sub = Signal(range(W + 1))
        m.d.comb += [load.eq(self.active & ~f.hold_valid & f.rdat_ok),
                     cur_sub.eq(Mux(f.hold_valid, f.sub, 0))]
        with m.If(claim):
            m.d.sync += [f.hold_valid.eq(0), f.next.eq(self.wgt_base)]
        with m.Else():
            with m.If(load):
                m.d.sync += [f.hold.eq(src), f.hold_valid.eq(1), f.sub.eq(0),
                             f.next.eq(f.next + 1)]
            with m.If(push):
                m.d.sync += [f.hold.eq(shifted), f.sub.eq(cur_sub + 1)]
                with m.If(cur_sub == f.per1):
                    m.d.sync += f.hold_valid.eq(0)
        m.d.comb += self.wgt_addr.eq(Mux(claim, self.wgt_base, f.next + load))
        m.d.sync += f.rdat_ok.eq(~self.raw_rd & (claim | self.active))
        # an index past the codebook stops the core (sticky until the next run's start)
        oob = Signal()
        m.d.comb += oob.eq(Cat(*[i >= self.k for i in idx]).any())
        with m.If(self.clear_error):
            m.d.sync += self.error.eq(0)
        with m.Elif(push & oob):
            m.d.sync += self.error.eq(1)
