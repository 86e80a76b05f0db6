"""Codebook-indexed weight decoder: codebook indices in, one shift code per cycle out.

A compressed layer stores its weights as indices into a small codebook of ``k`` codewords,
each codeword a block of ``d`` shift codes (``d = 1``: scalar weight sharing; ``d = 4, 8, 9,
18``: product quantization). One decoder lane feeds one PE column: it takes one index per
block and emits the block's ``d`` codes, one per cycle, with no bubbles in steady state for
every ``(k, d)`` including ``d = 1`` (the next codeword is read while the current one is
being shifted out). See docs/decoder.md for how the core uses it.

No multipliers: each codeword is one memory row of ``max_d`` codes, so an index is a row
address as it is (no ``index * d``), and the code of a row is picked by a ``max_d``-way mux
on a position counter.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from amaranth.hdl import Cat, Elaboratable, Module, Mux, Signal, Value, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out
from amaranth.utils import ceil_log2

__all__ = ["DecoderLane", "DecoderArray", "decode_model", "index_bits"]


def index_bits(k: int) -> int:
    """Bits of one index into a codebook of ``k`` codewords: ``ceil(log2 k)``, at least 1."""
    if not isinstance(k, int) or k < 1:
        raise ValueError(f"codebook size k must be a positive integer, not {k!r}")
    return max(1, ceil_log2(k))


def decode_model(indices: Iterable[int], codebook: Sequence[Sequence[int]], d: int) -> list[int]:
    """The codes a lane emits for ``indices``: codeword ``codebook[i][:d]`` for each index.

    Indices past the codebook raise ``IndexError`` (the hardware flags them on ``oob``).
    """
    out: list[int] = []
    for i in indices:
        i = int(i)
        if not 0 <= i < len(codebook):
            raise IndexError(f"index {i} is past the codebook (k={len(codebook)})")
        row = codebook[i]
        if len(row) < d:
            raise ValueError(f"codeword {i} has {len(row)} codes, fewer than d={d}")
        out.extend(int(c) for c in row[:d])
    return out


def _check_params(max_k: int, max_d: int, code_bits: int) -> None:
    if not isinstance(max_k, int) or max_k < 2 or max_k & (max_k - 1):
        raise ValueError(f"max_k must be a power of two >= 2, not {max_k!r}")
    if not isinstance(max_d, int) or not 1 <= max_d <= 64:
        raise ValueError(f"max_d must be an integer in [1, 64], not {max_d!r}")
    if not isinstance(code_bits, int) or not 1 <= code_bits <= 16:
        raise ValueError(f"code_bits must be an integer in [1, 16], not {code_bits!r}")


class _DecoderBase(wiring.Component):
    """Shared parameters, the codebook write port, ``latency`` and ``model()``."""

    #: Cycles from an index's transfer on ``i`` to its first code being valid on ``o`` (when
    #: ``o`` is not stalled). A run of ``n`` codes with no gaps on ``i`` and no back-pressure on
    #: ``o`` transfers its last code ``n - 1 + latency`` cycles after its first index.
    latency = 2

    def __init__(self, sig: dict, *, max_k: int, max_d: int, code_bits: int) -> None:
        _check_params(max_k, max_d, code_bits)
        self._max_k = max_k
        self._max_d = max_d
        self._code_bits = code_bits
        self._idx_bits = index_bits(max_k)
        row = data.ArrayLayout(unsigned(code_bits), max_d)
        super().__init__({
            **sig,
            "k": In(range(1, max_k + 1), init=max_k),
            "d": In(range(1, max_d + 1), init=max_d),
            "flush": In(1),
            "oob": Out(1),
            "cb_addr": In(self._idx_bits),
            "cb_data": In(row),
            "cb_en": In(max_d),
        })

    @property
    def max_k(self) -> int:
        return self._max_k

    @property
    def max_d(self) -> int:
        return self._max_d

    @property
    def code_bits(self) -> int:
        return self._code_bits

    @property
    def idx_bits(self) -> int:
        return self._idx_bits

    def model(self, indices: Iterable[int], codebook: Sequence[Sequence[int]],
              d: int) -> list[int]:
        """Bit-exact output of one lane (see :func:`decode_model`)."""
        if not 1 <= d <= self._max_d:
            raise ValueError(f"d={d} is outside [1, {self._max_d}]")
        if len(codebook) > self._max_k:
            raise ValueError(f"codebook of {len(codebook)} codewords exceeds max_k={self._max_k}")
        mask = (1 << self._code_bits) - 1
        return [c & mask for c in decode_model(indices, codebook, d)]

    def _control(self, m: Module, in_valid, out_ready):
        """The lane handshake, identical in every lane.

        Returns ``(advance, take, pos, row_valid, out_valid)``: ``advance`` reads the next
        codeword (the index stream's ``ready``), ``take`` moves code ``pos`` of the current
        codeword into the output register.
        """
        pos = Signal(range(self._max_d), name="pos")
        row_valid = Signal(name="row_valid")
        out_valid = Signal(name="out_valid")
        load_out = Signal(name="load_out")
        take = Signal(name="take")
        last = Signal(name="last")
        advance = Signal(name="advance")

        m.d.comb += [
            load_out.eq(~out_valid | out_ready),
            take.eq(row_valid & load_out),
            # `d` outside [1, max_d] behaves as max_d (a codeword never runs past its row).
            last.eq((pos + 1 == self.d) | (pos == self._max_d - 1)),
            # No index is taken in a flush cycle (it would be dropped).
            advance.eq(~self.flush & (~row_valid | (take & last))),
        ]
        with m.If(load_out):
            m.d.sync += out_valid.eq(row_valid)
        with m.If(advance):
            m.d.sync += [row_valid.eq(in_valid), pos.eq(0)]
        with m.Elif(take):
            m.d.sync += pos.eq(pos + 1)
        with m.If(self.flush):
            m.d.sync += [row_valid.eq(0), out_valid.eq(0), pos.eq(0)]
        return advance, take, pos, row_valid, out_valid

    def _lane_datapath(self, m: Module, name: str, index, advance, take, pos, out_code):
        """One codebook memory, its read port and the code mux of one lane."""
        row = data.ArrayLayout(unsigned(self._code_bits), self._max_d)
        mem = Memory(shape=row, depth=self._max_k, init=[])
        m.submodules[name] = mem
        wr = mem.write_port(granularity=1)
        rd = mem.read_port(domain="sync", transparent_for=())
        m.d.comb += [
            wr.addr.eq(self.cb_addr),
            wr.data.eq(self.cb_data),
            wr.en.eq(self.cb_en),
            # The read port holds its data while `en` is low: its output *is* the current
            # codeword, so the lane needs no extra row register.
            rd.en.eq(advance),
            rd.addr.eq(index),
        ]
        with m.If(take):
            m.d.sync += out_code.eq(_mux_tree([rd.data[j] for j in range(self._max_d)], pos))
        oob = Signal(name=f"{name}_oob")
        m.d.comb += oob.eq(index >= self.k)
        return oob


def _mux_tree(items: list, sel) -> Value:
    """``items[sel]`` as a binary tree of 2:1 muxes on the bits of ``sel`` (LSB first);
    out-of-range ``sel`` gives an item of the last pair."""
    level = [Value.cast(v) for v in items]
    bit = 0
    while len(level) > 1:
        level = [Mux(sel[bit], level[i + 1], level[i]) if i + 1 < len(level) else level[i]
                 for i in range(0, len(level), 2)]
        bit += 1
    return level[0]


class DecoderLane(_DecoderBase):
    """One PE column's codebook decoder.

    Parameters
    ----------
    max_k : int
        Codebook depth (a power of two); indices are ``ceil(log2 max_k)`` bits.
    max_d : int
        Largest block size: each codebook row holds ``max_d`` codes.
    code_bits : int
        Bits of one shift code (``CoreConfig.code_bits``).

    Members
    -------
    i : ``In(stream.Signature(idx_bits))``
        Codebook indices, one per block of ``d`` codes.
    o : ``Out(stream.Signature(code_bits))``
        Shift codes, one per cycle. Payload and ``valid`` are registered; ``i.ready`` depends
        combinationally on ``o.ready`` (never on ``i.valid``).
    k : ``In(range(1, max_k + 1))``
        Actual codebook size; an index ``>= k`` accepted on ``i`` sets the sticky ``oob``.
    d : ``In(range(1, max_d + 1))``
        Actual block size: codes ``0 .. d-1`` of each codeword are emitted. ``k`` and ``d``
        must only change while the lane is idle (or together with ``flush``).
    flush : ``In(1)``
        Drops the current codeword and the output register (the end of a reduction whose
        last block was padded). Takes effect at the next clock edge; ``i.ready`` is low
        meanwhile.
    oob : ``Out(1)``
        Sticky: an index ``>= k`` was accepted. Cleared only by reset.
    cb_addr, cb_data, cb_en : ``In``
        Codebook write port: row ``cb_addr`` gets code ``j`` of ``cb_data`` where bit ``j``
        of ``cb_en`` is set (a whole codeword per cycle, or one code per cycle).
    latency : int
        2 (see :attr:`_DecoderBase.latency`).
    """

    def __init__(self, *, max_k: int, max_d: int, code_bits: int) -> None:
        idx_bits = index_bits(max_k)
        super().__init__({
            "i": In(stream.Signature(unsigned(idx_bits))),
            "o": Out(stream.Signature(unsigned(code_bits))),
        }, max_k=max_k, max_d=max_d, code_bits=code_bits)

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        advance, take, pos, _row_valid, out_valid = self._control(m, self.i.valid, self.o.ready)
        m.d.comb += [self.i.ready.eq(advance), self.o.valid.eq(out_valid)]
        oob = self._lane_datapath(m, "codebook", self.i.payload, advance, take, pos,
                                  self.o.payload)
        with m.If(self.i.valid & advance & oob):
            m.d.sync += self.oob.eq(1)
        return m


class DecoderArray(_DecoderBase):
    """``lanes`` decoder lanes in lockstep: one index per lane in, one code per lane out.

    Every lane holds its own copy of the same codebook (one write port broadcasts to all);
    one handshake controls all lanes, so the array streams one row of ``lanes`` codes per
    cycle with the latency and throughput of one :class:`DecoderLane`.

    Parameters
    ----------
    lanes : int
        Number of lanes (PE columns).
    max_k, max_d, code_bits : int
        As for :class:`DecoderLane`.

    Members
    -------
    i : ``In(stream.Signature(ArrayLayout(idx_bits, lanes)))``
        One index per lane (an index row of the WGT buffer).
    o : ``Out(stream.Signature(ArrayLayout(code_bits, lanes)))``
        One code per lane per cycle.
    k, d, flush, oob, cb_addr, cb_data, cb_en :
        As for :class:`DecoderLane`; ``oob`` is set by any lane.
    """

    def __init__(self, *, lanes: int, max_k: int, max_d: int, code_bits: int) -> None:
        if not isinstance(lanes, int) or lanes < 1:
            raise ValueError(f"lanes must be a positive integer, not {lanes!r}")
        self._lanes = lanes
        idx_bits = index_bits(max_k)
        super().__init__({
            "i": In(stream.Signature(data.ArrayLayout(unsigned(idx_bits), lanes))),
            "o": Out(stream.Signature(data.ArrayLayout(unsigned(code_bits), lanes))),
        }, max_k=max_k, max_d=max_d, code_bits=code_bits)

    @property
    def lanes(self) -> int:
        return self._lanes

    def model(self, indices: Iterable[Sequence[int]], codebook: Sequence[Sequence[int]],
              d: int) -> list[list[int]]:
        """Rows of ``lanes`` codes for a sequence of index rows (one index per lane)."""
        rows = [list(r) for r in indices]
        for r in rows:
            if len(r) != self._lanes:
                raise ValueError(f"index row of {len(r)} indices for {self._lanes} lanes")
        per_lane = [super(DecoderArray, self).model([r[j] for r in rows], codebook, d)
                    for j in range(self._lanes)]
        return [list(t) for t in zip(*per_lane, strict=True)] if per_lane else []

    def elaborate(self, platform) -> Elaboratable:
        m = Module()
        advance, take, pos, _row_valid, out_valid = self._control(m, self.i.valid, self.o.ready)
        m.d.comb += [self.i.ready.eq(advance), self.o.valid.eq(out_valid)]
        oobs = [self._lane_datapath(m, f"codebook_{j}", self.i.payload[j], advance, take, pos,
                                    self.o.payload[j]) for j in range(self._lanes)]
        any_oob = Cat(*oobs).any()
        with m.If(self.i.valid & advance & any_oob):
            m.d.sync += self.oob.eq(1)
        return m

