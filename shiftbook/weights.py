"""Weight formats the accelerator reads: raw shift codes, and codebook indices + codebooks.

Pure numpy (no torch, no Amaranth), so the compiler, the simulators and the bundle checker
can all use it. See docs/decoder.md for the hardware side.

Formats
-------
- **raw** (``WFMT = 0``): one shift code per weight, stored one byte per code (a WGT buffer
  byte, docs/isa.md).
- **codebook** (``WFMT = 1``): a codebook of ``k`` codewords, each a vector of ``d`` shift
  codes, and one index per block of ``d`` weights. ``d = 1`` is scalar weight sharing
  (k-means); ``d = 4, 8, 9, 18`` product quantization. Indices are packed densely at
  ``index_bits(k) = ceil(log2 k)`` bits; codeword codes are stored one byte per code.

Block layout
------------
A layer's weight ``(O, I, KH, KW)`` (a linear layer ``(O, I)`` is ``(O, I, 1, 1)``) is viewed
per output channel as a reduction vector of ``R = I*KH*KW`` codes in the accelerator's
reduction order ``r = (c*KH + ky)*KW + kx`` (kx fastest, docs/isa.md COMPUTE). Block ``b`` of
output channel ``o`` is the ``d`` consecutive reduction steps ``[b*d, (b+1)*d)``, so a PE
column decodes one index every ``d`` steps. ``d`` must either cover whole kernels
(``d % (KH*KW) == 0``: ``d = 9`` is one 3x3 kernel of one (out, in) pair, ``d = 18`` two
in-channels, and for 1x1 convs and linear layers ``d`` consecutive in-channels) or tile one
kernel exactly (``(KH*KW) % d == 0``, e.g. ``d = 1``); a block then never straddles a channel
chunk of the compiler's tiling as long as chunks hold a multiple of
:func:`channels_per_block` channels.

Padding rule: when ``d`` does not divide ``R`` (the in-channel count is not a multiple of
``d // (KH*KW)``), each output channel's reduction vector is padded at its end with zero codes
up to ``nblocks * d`` (``nblocks = ceil(R / d)``); the codeword of the last block carries those
zero codes. The hardware never multiplies them in: the decoder's ``flush`` drops the rest of
the last codeword when the reduction ends (docs/decoder.md). A decoded layer ignores them.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shiftbook import numerics as nx

__all__ = [
    "WeightFormatError", "WFMT_RAW", "WFMT_CODEBOOK", "CODEBOOK_CODE_BYTES",
    "index_bits", "block_layout", "channels_per_block", "as_4d", "to_blocks", "from_blocks",
    "pack_bits", "unpack_bits", "Footprint", "RawWeights", "CodebookWeights",
    "encode_exact", "encode_nearest", "index_rows_per_wgt_row", "pack_index_rows",
    "unpack_index_rows",
]

#: Values of the WFMT layer register (docs/decoder.md proposes them for docs/isa.md).
WFMT_RAW = 0
WFMT_CODEBOOK = 1
#: Bytes per codeword code in memory (the CODEBOOK load target takes one code per byte).
CODEBOOK_CODE_BYTES = 1


class WeightFormatError(ValueError):
    """An inconsistent weight format; the message is one line naming the problem."""


def index_bits(k: int) -> int:
    """Bits of one packed index into a codebook of ``k`` codewords: ``ceil(log2 k)``, >= 1."""
    if not isinstance(k, (int, np.integer)) or isinstance(k, bool) or k < 1:
        raise WeightFormatError(f"codebook size k={k!r} must be a positive integer")
    return max(1, math.ceil(math.log2(int(k))))


def block_layout(kh: int, kw: int, d: int) -> str:
    """Name of the block layout of ``d`` for a ``kh x kw`` kernel, or a WeightFormatError.

    ``"scalar"`` (d = 1), ``"sub-kernel"`` (d divides the kernel), ``"kernel"`` (d = KH*KW,
    one (out, in) kernel), ``"channels"`` (d = m*KH*KW: m consecutive in-channels; for 1x1
    convs and linear layers this is d consecutive in-channels).
    """
    if not isinstance(d, (int, np.integer)) or d < 1:
        raise WeightFormatError(f"block size d={d!r} must be a positive integer")
    ks = kh * kw
    if d == 1:
        return "scalar"
    if d % ks == 0:
        return "kernel" if d == ks else "channels"
    if ks % d == 0:
        return "sub-kernel"
    raise WeightFormatError(f"d={d} does not fit the {kh}x{kw} kernel layout: d must be a "
                            f"multiple or a divisor of KH*KW={ks}")


def channels_per_block(kh: int, kw: int, d: int) -> int:
    """In-channels one block spans (>= 1): the compiler's channel chunks must hold a multiple
    of it (except the last chunk of a layer, whose last block may be padded)."""
    block_layout(kh, kw, d)
    return max(1, d // (kh * kw))


def as_4d(shape: tuple[int, ...]) -> tuple[int, int, int, int]:
    """``(O, I, KH, KW)`` of a conv or linear weight shape."""
    shape = tuple(int(s) for s in shape)
    if len(shape) == 2:
        return (shape[0], shape[1], 1, 1)
    if len(shape) == 4:
        return shape  # type: ignore[return-value]
    raise WeightFormatError(f"weight shape {shape} is neither (O, I) nor (O, I, KH, KW)")


def _check_codes(codes: np.ndarray, exp_bits: int, what: str) -> None:
    top = (1 << (exp_bits + 2)) - 1
    if codes.size and (int(codes.min()) < 0 or int(codes.max()) > top):
        bad = codes[(codes < 0) | (codes > top)].flat[0]
        raise WeightFormatError(f"{what}: shift code {int(bad)} is outside [0, {top}] "
                                f"(exp_bits={exp_bits})")


def to_blocks(codes: Any, d: int, exp_bits: int) -> np.ndarray:
    """``(O, nblocks, d)`` blocks of a layer's shift codes in reduction order, the last block
    of each output channel padded with zero codes (see the module's padding rule)."""
    codes = np.asarray(codes, dtype=np.int64)
    o, i, kh, kw = as_4d(codes.shape)
    block_layout(kh, kw, d)
    flat = codes.reshape(o, i * kh * kw)
    nblocks = -(-flat.shape[1] // d)
    pad = nblocks * d - flat.shape[1]
    if pad:
        flat = np.concatenate([flat, np.full((o, pad), nx.zero_code(exp_bits), np.int64)], 1)
    return flat.reshape(o, nblocks, d)


def from_blocks(blocks: Any, shape: tuple[int, ...]) -> np.ndarray:
    """Inverse of :func:`to_blocks`: drop the padding, restore ``shape``."""
    blocks = np.asarray(blocks, dtype=np.int64)
    o, i, kh, kw = as_4d(shape)
    r = i * kh * kw
    flat = blocks.reshape(blocks.shape[0], -1)
    if flat.shape[0] != o or flat.shape[1] < r:
        raise WeightFormatError(f"blocks {blocks.shape} do not cover weight shape {shape}")
    return flat[:, :r].reshape(tuple(int(s) for s in shape))


# ---------------------------------------------------------------- bit packing
def pack_bits(values: Any, width: int) -> bytes:
    """Pack unsigned ``values`` densely at ``width`` bits each, LSB first (value 0 at bit 0 of
    byte 0), into ``ceil(n*width/8)`` bytes."""
    v = np.asarray(values, dtype=np.int64).reshape(-1)
    if width < 1 or width > 32:
        raise WeightFormatError(f"pack width {width} outside [1, 32]")
    if v.size and (int(v.min()) < 0 or int(v.max()) >= 1 << width):
        raise WeightFormatError(f"value {int(v[(v < 0) | (v >= 1 << width)][0])} does not "
                                f"fit {width} bits")
    bits = ((v[:, None] >> np.arange(width)) & 1).astype(np.uint8).reshape(-1)
    return np.packbits(bits, bitorder="little").tobytes()


def unpack_bits(data: bytes, width: int, count: int) -> np.ndarray:
    """Inverse of :func:`pack_bits`: the first ``count`` values of ``width`` bits."""
    need = -(-count * width // 8)
    if len(data) < need:
        raise WeightFormatError(f"{len(data)} bytes hold fewer than {count} values of "
                                f"{width} bits")
    bits = np.unpackbits(np.frombuffer(bytes(data[:need]), dtype=np.uint8), bitorder="little")
    bits = bits[:count * width].reshape(count, width).astype(np.int64)
    return (bits << np.arange(width)).sum(axis=1)


# ---------------------------------------------------------------- footprints
@dataclass(frozen=True)
class Footprint:
    """A layer's weight storage: packed index bits, codebook bits, raw code bits."""

    index_bits: int = 0
    codebook_bits: int = 0
    raw_bits: int = 0

    @property
    def bits(self) -> int:
        return self.index_bits + self.codebook_bits + self.raw_bits

    @property
    def bytes(self) -> int:
        """Bytes with each part packed on its own (indices, codebook, raw codes)."""
        return sum(-(-b // 8) for b in (self.index_bits, self.codebook_bits, self.raw_bits))

    def to_dict(self) -> dict[str, int]:
        return {"index_bits": self.index_bits, "codebook_bits": self.codebook_bits,
                "raw_bits": self.raw_bits, "bits": self.bits, "bytes": self.bytes}


@dataclass(frozen=True)
class RawWeights:
    """Raw shift codes, one per weight (``WFMT = 0``), stored one byte per code; two-term
    weights (``codes2``, shaped like ``codes``) store a second byte per weight."""

    codes: np.ndarray
    exp_bits: int
    codes2: np.ndarray | None = None
    wfmt: int = field(default=WFMT_RAW, init=False)

    def __post_init__(self) -> None:
        codes = np.asarray(self.codes, dtype=np.int64)
        as_4d(codes.shape)
        _check_codes(codes, self.exp_bits, "raw weights")
        object.__setattr__(self, "codes", codes)
        if self.codes2 is not None:
            c2 = np.asarray(self.codes2, dtype=np.int64)
            if c2.shape != codes.shape:
                raise WeightFormatError(f"second-term codes have shape {c2.shape}, the first "
                                        f"{codes.shape}")
            _check_codes(c2, self.exp_bits, "raw weights (second term)")
            object.__setattr__(self, "codes2", c2)

    @property
    def terms(self) -> int:
        return 1 if self.codes2 is None else 2

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.codes.shape)

    def decode(self) -> np.ndarray:
        return self.codes.copy()

    def footprint(self) -> Footprint:
        return Footprint(raw_bits=8 * int(self.codes.size) * self.terms)


@dataclass(frozen=True)
class CodebookWeights:
    """A layer stored as codebook indices (``WFMT = 1``).

    Members
    -------
    shape: the weight's shape, ``(O, I, KH, KW)`` or ``(O, I)``.
    k, d: codebook size (codewords) and block size (codes per codeword).
    exp_bits: exponent field width of the codes (``code_bits = exp_bits + 2``).
    codebook: int64 ``(k, d)`` shift codes.
    indices: int64 ``(O, nblocks)``, ``nblocks = ceil(R / d)``: block ``b`` of output channel
        ``o`` covers reduction steps ``[b*d, (b+1)*d)`` (zero-padded past ``R``).
    """

    shape: tuple[int, ...]
    k: int
    d: int
    exp_bits: int
    codebook: np.ndarray
    indices: np.ndarray
    wfmt: int = field(default=WFMT_CODEBOOK, init=False)

    def __post_init__(self) -> None:
        shape = tuple(int(s) for s in self.shape)
        o, i, kh, kw = as_4d(shape)
        k, d = int(self.k), int(self.d)
        index_bits(k)
        block_layout(kh, kw, d)
        cb = np.asarray(self.codebook, dtype=np.int64)
        idx = np.asarray(self.indices, dtype=np.int64)
        if cb.shape != (k, d):
            raise WeightFormatError(f"codebook shape {cb.shape} is not (k, d) = ({k}, {d})")
        _check_codes(cb, self.exp_bits, "codebook")
        nblocks = -(-(i * kh * kw) // d)
        if idx.shape != (o, nblocks):
            raise WeightFormatError(f"indices shape {idx.shape} is not (O, ceil(R/d)) = "
                                    f"({o}, {nblocks}) for weight shape {shape} and d={d}")
        bad = (idx < 0) | (idx >= k)
        if bad.any():
            oo, bb = (int(x[0]) for x in np.nonzero(bad))
            raise WeightFormatError(f"index {int(idx[oo, bb])} of output channel {oo}, block "
                                    f"{bb} is past the codebook (k={k})")
        for name, v in (("shape", shape), ("k", k), ("d", d), ("codebook", cb),
                        ("indices", idx)):
            object.__setattr__(self, name, v)

    @property
    def nblocks(self) -> int:
        return int(self.indices.shape[1])

    @property
    def index_bits(self) -> int:
        return index_bits(self.k)

    @property
    def layout(self) -> str:
        _, _, kh, kw = as_4d(self.shape)
        return block_layout(kh, kw, self.d)

    @property
    def padding(self) -> int:
        """Zero codes appended to each output channel's reduction vector."""
        _, i, kh, kw = as_4d(self.shape)
        return self.nblocks * self.d - i * kh * kw

    def decode(self) -> np.ndarray:
        """The layer's shift codes, ``shape``."""
        return from_blocks(self.codebook[self.indices], self.shape)

    def footprint(self) -> Footprint:
        """Indices packed at ``index_bits`` each, codebook one byte per code."""
        return Footprint(index_bits=int(self.indices.size) * self.index_bits,
                         codebook_bits=8 * CODEBOOK_CODE_BYTES * self.k * self.d)

    def pack_indices(self) -> bytes:
        """All indices, ``(O, nblocks)`` row-major, packed densely."""
        return pack_bits(self.indices, self.index_bits)

    def pack_codebook(self) -> bytes:
        """The CODEBOOK load image: ``k*d`` bytes, codeword by codeword, one code per byte."""
        return self.codebook.astype(np.uint8).tobytes()

    def check_config(self, max_k: int, max_d: int, exp_bits: int, what: str = "layer") -> None:
        """Refuse a format the hardware (CoreConfig's limits) cannot decode."""
        if self.k > max_k:
            raise WeightFormatError(f"{what}: codebook of k={self.k} codewords exceeds "
                                    f"max_k={max_k}")
        if self.d > max_d:
            raise WeightFormatError(f"{what}: block size d={self.d} exceeds max_d={max_d}")
        if self.exp_bits != exp_bits:
            raise WeightFormatError(f"{what}: codes have exp_bits={self.exp_bits}, the core "
                                    f"{exp_bits}")

    @classmethod
    def from_record(cls, rec: Any) -> CodebookWeights:
        """From any record with ``shape, k, d, exp_bits, codebook, indices`` attributes (e.g.
        ``sw/models/formats.CodebookFormat``; torch tensors are converted, not imported)."""
        def arr(v: Any) -> np.ndarray:
            return np.asarray(v.numpy() if hasattr(v, "numpy") else v, dtype=np.int64)
        try:
            return cls(tuple(rec.shape), int(rec.k), int(rec.d), int(rec.exp_bits),
                       arr(rec.codebook), arr(rec.indices))
        except AttributeError as e:
            raise WeightFormatError(f"not a codebook format record: {e}") from None

    @classmethod
    def from_packed(cls, shape: tuple[int, ...], k: int, d: int, exp_bits: int,
                    index_blob: bytes, codebook_blob: bytes) -> CodebookWeights:
        """Rebuild from :meth:`pack_indices` / :meth:`pack_codebook` output (validated)."""
        o, i, kh, kw = as_4d(shape)
        nblocks = -(-(i * kh * kw) // d)
        if len(codebook_blob) != k * d:
            raise WeightFormatError(f"codebook of {len(codebook_blob)} bytes does not match "
                                    f"k*d = {k}*{d} = {k * d} codes")
        idx = unpack_bits(index_blob, index_bits(k), o * nblocks).reshape(o, nblocks)
        cb = np.frombuffer(bytes(codebook_blob), dtype=np.uint8).astype(np.int64)
        return cls(shape, k, d, exp_bits, cb.reshape(k, d), idx)


# ---------------------------------------------------------------- encoders
def encode_exact(codes: Any, d: int, exp_bits: int, k: int | None = None) -> CodebookWeights:
    """Lossless codebook of a layer's codes: the distinct blocks, in order of first use.

    ``k`` defaults to the number of distinct blocks; a larger ``k`` pads the codebook with
    zero codewords; a smaller one is an error.
    """
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, exp_bits, "weights")
    blocks = to_blocks(codes, d, exp_bits)
    o, nb, _ = blocks.shape
    uniq, first, inv = np.unique(blocks.reshape(-1, d), axis=0, return_index=True,
                                 return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty_like(order)
    rank[order] = np.arange(order.size)
    n = uniq.shape[0]
    k = n if k is None else int(k)
    if n > k:
        raise WeightFormatError(f"the layer has {n} distinct blocks of d={d}, more than k={k}")
    cb = np.full((k, d), nx.zero_code(exp_bits), dtype=np.int64)
    cb[:n] = uniq[order]
    idx = rank[inv.reshape(-1)].reshape(o, nb)
    return CodebookWeights(codes.shape, k, d, exp_bits, cb, idx)


def encode_nearest(codes: Any, codebook: Any, exp_bits: int) -> CodebookWeights:
    """Assign each block of ``codes`` to the nearest codeword (squared error of the integer
    weight values; ties to the lowest index). ``codebook`` is ``(k, d)`` shift codes."""
    cb = np.asarray(codebook, dtype=np.int64)
    if cb.ndim != 2:
        raise WeightFormatError(f"codebook shape {cb.shape} is not (k, d)")
    k, d = cb.shape
    codes = np.asarray(codes, dtype=np.int64)
    _check_codes(codes, exp_bits, "weights")
    _check_codes(cb, exp_bits, "codebook")
    blocks = to_blocks(codes, d, exp_bits)
    o, nb, _ = blocks.shape
    x = nx.decode_shift(blocks.reshape(-1, d), exp_bits).astype(np.float64)
    c = nx.decode_shift(cb, exp_bits).astype(np.float64)
    dist = (x * x).sum(1)[:, None] - 2 * x @ c.T + (c * c).sum(1)[None, :]
    idx = np.argmin(dist, axis=1).reshape(o, nb)
    return CodebookWeights(codes.shape, k, d, exp_bits, cb, idx)


# ---------------------------------------------------------------- WGT buffer index rows
def index_rows_per_wgt_row(cols: int, ib: int, row_bytes: int) -> int:
    """Index rows (``cols`` indices of ``ib`` bits, one per PE column) that one WGT buffer row
    of ``row_bytes`` holds; index rows never straddle WGT rows."""
    per = (8 * row_bytes) // (cols * ib)
    if per < 1:
        raise WeightFormatError(f"an index row of {cols} columns x {ib} bits does not fit a "
                                f"WGT row of {row_bytes} bytes")
    return per


def pack_index_rows(tile_indices: Any, ib: int, cols: int, row_bytes: int) -> bytes:
    """WGT buffer image of one tile's indices (the layout docs/decoder.md proposes).

    ``tile_indices`` is ``(ncols, nblocks)`` (``ncols <= cols`` output channels of the tile;
    missing columns get index 0). Index row ``b`` holds block ``b`` of every column, column
    ``j`` at bits ``[j*ib, (j+1)*ib)``; ``per = index_rows_per_wgt_row(...)`` index rows share
    one WGT row, row ``b`` at bit ``(b % per) * cols * ib`` of WGT row ``b // per``. Returns
    ``ceil(nblocks / per) * row_bytes`` bytes.
    """
    idx = np.asarray(tile_indices, dtype=np.int64)
    if idx.ndim != 2 or idx.shape[0] > cols:
        raise WeightFormatError(f"tile indices {idx.shape} are not (ncols <= {cols}, nblocks)")
    ncols, nblocks = idx.shape
    per = index_rows_per_wgt_row(cols, ib, row_bytes)
    full = np.zeros((cols, nblocks), dtype=np.int64)
    full[:ncols] = idx
    nrows = -(-nblocks // per)
    out = bytearray()
    for r in range(nrows):
        chunk = full[:, r * per:(r + 1) * per].T  # (<= per, cols), block-major
        blob = pack_bits(chunk.reshape(-1), ib)
        out += blob + bytes(row_bytes - len(blob))
    return bytes(out)


def unpack_index_rows(blob: bytes, ib: int, cols: int, row_bytes: int,
                      nblocks: int) -> np.ndarray:
    """Inverse of :func:`pack_index_rows`: ``(cols, nblocks)`` indices."""
    per = index_rows_per_wgt_row(cols, ib, row_bytes)
    out = np.zeros((cols, nblocks), dtype=np.int64)
    for b in range(nblocks):
        r, s = divmod(b, per)
        row = blob[r * row_bytes:(r + 1) * row_bytes]
        vals = unpack_bits(row, ib, (s + 1) * cols)[s * cols:]
        out[:, b] = vals
    return out
