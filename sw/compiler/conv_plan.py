"""Tiling of one convolution (Linear is a 1x1 convolution on a 1x1 input) onto the core's
buffers (see docs/bundle.md for the metadata it records):

- output channels in *groups* of ``cols`` (the last one partial, weight columns padded with the
  zero code);
- output rows in *bands* that fit half of OUT (double buffer; all of it if one band does not
  fit half), input rows of a band loaded into ACT (a band's rows are the input rows its
  output rows need);
- output pixels of a band in raster *tiles* of ``rows`` pixels (wrapping across output rows);
- the reduction in channel *chunks* when a group's weights do not fit half of WGT or a band's
  channels do not fit ACT (``clear`` on the first chunk, ``drain`` on the last), and in
  kernel-row chunks (one channel each) when one channel's kernel does not fit WGT;
- groups in *blocks* of ``group_block`` (the outermost loop, :meth:`ConvPlan.blocked`): with
  several bands and more weights than WGT holds, a block whose weights all stay in WGT reads
  each weight row once per inference, and the input once per block instead.

ACT, WGT and BIAS are cut into equal slots (``n_act``, ``n_wgt``, ``n_bias``), OUT into two
(one if a band does not fit half); ``conv_schedule.py`` fills them.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from shiftbook import weights
from shiftbook.config import CoreConfig
from shiftbook.placement import Placement
from shiftbook.sw.compiler.tiling import CompileError, input_bands, out_band_limit, round_up
from shiftbook.sw.ir import Conv2d
from shiftbook.weights import CodebookWeights

__all__ = ["ConvPlan", "plan_conv", "conv_candidates", "check_codebook", "weight_terms"]


def weight_terms(op: Conv2d, cfg: CoreConfig) -> int:
    """Reductions a layer runs per weight: 2 for two-term weights on the shift PE (each term a
    one-term reduction over the same activations), else 1 (the multiplier PE takes the summed
    value as one int8)."""
    return op.terms if cfg.pe == "shift" else 1


@dataclass
class ConvPlan:
    name: str
    C: int
    H: int
    W: int
    O: int
    KH: int
    KW: int
    sy: int
    sx: int
    pad: tuple[int, int, int, int]
    OH: int
    OW: int
    groups: int
    bands: list[tuple[int, int]]        # output rows [oy0, oy1)
    band_in: list[tuple[int, int]]      # input rows [iy_lo, iy_hi) held in ACT
    chunks: list[tuple[int, int, int, int]]  # (c0, c1, ky0, ky1) per reduction step
    act_ranges: list[tuple[int, int]]   # input channels per ACT resource
    a_plane: int
    act_slot_bytes: int
    n_act: int
    wgt_slot_rows: int
    n_wgt: int
    n_bias: int
    out_slot_bytes: int
    n_out: int
    # Codebook layers (WFMT = 1): the format, index rows per WGT row, and per chunk its
    # (first WGT row within a group's rows, WGT rows) in the layer's weight blob.
    fmt: CodebookWeights | None = None
    idx_per_row: int = 0
    chunk_wrows: list[tuple[int, int]] | None = None
    # Output groups per block (the schedule's outermost loop); 0 when constructed: all groups.
    group_block: int = 0
    # Two-term layers: 2, and ``chunks`` in pairs over the same channels, ``chunk_terms[k]``
    # the term chunk k reduces (its WGT rows follow the first term's in each group's rows).
    terms: int = 1
    chunk_terms: list[int] | None = None

    def __post_init__(self) -> None:
        if self.group_block <= 0:
            self.group_block = self.groups

    @property
    def group_blocks(self) -> list[tuple[int, int]]:
        """Groups ``[g0, g1)`` of each block, in schedule order."""
        gb = self.group_block
        return [(g0, min(self.groups, g0 + gb)) for g0 in range(0, self.groups, gb)]

    @property
    def resident_groups(self) -> int:
        """Most groups whose weights (every chunk) the WGT slots hold at once (0: not one)."""
        return min(self.groups, self.n_wgt // len(self.chunks))

    def blocked(self) -> ConvPlan | None:
        """This plan with groups in blocks whose weights stay in WGT, or None where that
        changes nothing (one band, all weights resident, or not even one group resident).
        The blocks are as few as the largest resident block gives, and as equal as possible
        (spare WGT slots for the next block's weights while the last band computes)."""
        fit = self.resident_groups
        if len(self.bands) < 2 or fit >= self.groups or fit == 0:
            return None
        nblocks = -(-self.groups // fit)
        return replace(self, group_block=-(-self.groups // nblocks))

    @property
    def group_wrows(self) -> int:
        """WGT rows of one group in a codebook layer's weight blob."""
        assert self.chunk_wrows is not None
        return sum(n for _, n in self.chunk_wrows)

    def chunk_blocks(self, k: int) -> tuple[int, int]:
        """Blocks ``[b0, b1)`` (of every output channel) that codebook chunk ``k`` reduces."""
        assert self.fmt is not None
        c0, c1, _, _ = self.chunks[k]
        return c0 * self.kk // self.fmt.d, -(-c1 * self.kk // self.fmt.d)

    @property
    def kk(self) -> int:
        return self.KH * self.KW

    def wgt_rows(self, g: int, k: int) -> tuple[int, int]:
        """(first row in the layer's weight blob, row count) of group g, chunk k."""
        c0, c1, k0, k1 = self.chunks[k]
        if self.fmt is None:
            t = self.chunk_terms[k] if self.chunk_terms else 0
            return ((g * self.terms + t) * self.C * self.kk + c0 * self.kk + k0 * self.KW,
                    (c1 - c0) * (k1 - k0) * self.KW)
        assert self.chunk_wrows is not None
        off, n = self.chunk_wrows[k]
        return g * self.group_wrows + off, n

    def tiles(self, band: int, rows: int) -> list[int]:
        oy0, oy1 = self.bands[band]
        return list(range(oy0 * self.OW, oy1 * self.OW, rows))


def plan_conv(op: Conv2d, x: Placement, y: Placement, cfg: CoreConfig, *,
              double_act: bool = False, balanced: bool = False) -> ConvPlan:
    """Tile ``op``. With several input bands, ``double_act`` makes bands small enough for two
    ACT slots (the next band loads while one computes; more, smaller bands). ``balanced``
    cuts a raw layer that needs channel chunks into equal chunks of at most a quarter of WGT
    (ResNet-18's 512-channel 3x3 on ``base``: 4 x 128 channels instead of 455 + 57): four WGT
    slots or more, so the next chunks' weights load while one computes."""
    C, H, W = x.shape
    O, OH, OW = y.shape
    KH, KW = op.kernel
    sy, sx = op.stride
    pt, pl, pb, pr = op.padding
    B = cfg.bus_bytes
    groups = -(-O // cfg.cols)

    n_out, bo_max = out_band_limit(op.name, y, cfg)

    def in_rows(bo: int) -> int:
        return min(H, (bo - 1) * sy + KH)

    bo = min(OH, bo_max)
    while bo > 1 and C * in_rows(bo) * x.pitch > cfg.abuf_bytes:
        bo -= 1
    if bo < OH and double_act:
        # Bands small enough for two ACT slots (as long as a band still fills one tile).
        bo2 = bo
        while bo2 > 1 and 2 * C * in_rows(bo2) * x.pitch > cfg.abuf_bytes:
            bo2 -= 1
        if 2 * C * in_rows(bo2) * x.pitch <= cfg.abuf_bytes and bo2 * OW >= cfg.rows:
            bo = bo2
    bands = [(o0, min(OH, o0 + bo)) for o0 in range(0, OH, bo)]
    band_in = input_bands(bands, H, KH, sy, pt)
    max_rows = max(1, max(hi - lo for lo, hi in band_in))
    a_plane = max_rows * x.pitch
    act_ch = cfg.abuf_bytes // a_plane
    if act_ch == 0:
        raise CompileError(f"layer {op.name!r}: {max_rows} input rows of {x.pitch} bytes do "
                           f"not fit the {cfg.abuf_bytes}-byte activation buffer")
    kk = KH * KW
    fmt = op.weight_format
    if fmt is not None:
        return _plan_codebook(op, fmt, cfg, C, H, W, O, OH, OW, KH, KW, sy, sx,
                              (pt, pl, pb, pr), groups, bands, band_in, a_plane, act_ch, y, bo,
                              n_out)
    w_ch = (cfg.wbuf_rows // 2) // kk or cfg.wbuf_rows // kk
    if w_ch:
        nch = min(C, w_ch, act_ch)
        if balanced and nch < C:
            # at most a quarter of WGT per chunk (four slots or more), all chunks equal
            nch = min(nch, max(1, (cfg.wbuf_rows // 4) // kk))
            nch = -(-C // -(-C // nch))
        chunks = [(c0, min(C, c0 + nch), 0, KH) for c0 in range(0, C, nch)]
        wgt_slot = nch * kk
    else:
        # Not even one channel's kernel fits: split the kernel into row groups (one channel
        # per COMPUTE, KH set per COMPUTE, iy0 and act_base moved down by the first row).
        kh_per = (cfg.wbuf_rows // 2) // KW or cfg.wbuf_rows // KW
        if kh_per == 0:
            raise CompileError(f"layer {op.name!r}: one {KW}-wide kernel row needs {KW} weight "
                               f"rows, the weight buffer has {cfg.wbuf_rows}")
        nch = 1
        chunks = [(c0, c0 + 1, k0, min(KH, k0 + kh_per)) for c0 in range(C)
                  for k0 in range(0, KH, kh_per)]
        wgt_slot = kh_per * KW
    terms = weight_terms(op, cfg)
    chunk_terms = None
    if terms > 1:   # each chunk once per term, both terms of a chunk back to back
        chunks = [c for c in chunks for _ in range(terms)]
        chunk_terms = list(range(terms)) * (len(chunks) // terms)
    act_ranges = [(0, C)] if act_ch >= C else [(c0, min(C, c0 + nch)) for c0 in range(0, C, nch)]
    act_slot = round_up(max(c1 - c0 for c0, c1 in act_ranges) * a_plane, B)
    n_act = max(1, min(cfg.abuf_bytes // act_slot, len(bands) * len(act_ranges)))
    n_wgt = max(1, min(cfg.wbuf_rows // wgt_slot, groups * len(chunks)))
    n_bias = max(1, min(cfg.bbuf_rows, groups))
    out_slot = round_up(bo * y.pitch, B)
    return ConvPlan(op.name, C, H, W, O, KH, KW, sy, sx, (pt, pl, pb, pr), OH, OW, groups,
                    bands, band_in, chunks, act_ranges, a_plane, act_slot, n_act, wgt_slot,
                    n_wgt, n_bias, out_slot, n_out, terms=terms, chunk_terms=chunk_terms)


def conv_candidates(op: Conv2d, x: Placement, y: Placement, cfg: CoreConfig) -> list[ConvPlan]:
    """The tilings the compiler times for a layer (``program._choose_plan``), plain first: the
    plain plan, the double-buffered ACT plan where its bands differ, each followed by its
    balanced-chunk variant where its chunks differ, each of those followed by its blocked
    variant (:meth:`ConvPlan.blocked`) where that changes something. All of them have
    the same parameter blobs and layer registers; the blocked variants the same COMPUTEs."""
    plan = plan_conv(op, x, y, cfg)
    alt = plan_conv(op, x, y, cfg, double_act=True)
    out = []
    for dbl, p in [(False, plan)] if alt.bands == plan.bands else [(False, plan), (True, alt)]:
        even = plan_conv(op, x, y, cfg, double_act=dbl, balanced=True)
        for q in [p] if even.chunks == p.chunks else [p, even]:
            out.append(q)
            b = q.blocked()
            if b is not None:
                out.append(b)
    return out


def check_codebook(op: Conv2d, cfg: CoreConfig) -> CodebookWeights:
    """The layer's codebook format, refused with one line if the core cannot decode it."""
    fmt = op.weight_format
    assert fmt is not None
    if cfg.pe != "shift":
        raise CompileError(f"layer {op.name!r}: codebook weights need the shift PE, the core "
                           f"has pe={cfg.pe!r}")
    try:
        fmt.check_config(cfg.max_k, cfg.max_d, cfg.exp_bits, what=f"layer {op.name!r}")
        weights.index_rows_per_wgt_row(cfg.cols, fmt.index_bits, cfg.wbuf_row_bytes)
    except weights.WeightFormatError as e:
        raise CompileError(str(e)) from None
    return fmt


def _plan_codebook(op: Conv2d, fmt: CodebookWeights, cfg: CoreConfig, C: int, H: int, W: int,
                   O: int, OH: int, OW: int, KH: int, KW: int, sy: int, sx: int,
                   pad: tuple[int, int, int, int], groups: int, bands: list[tuple[int, int]],
                   band_in: list[tuple[int, int]], a_plane: int, act_ch: int, y: Placement,
                   bo: int, n_out: int) -> ConvPlan:
    """Channel chunks of a codebook layer: multiples of ``channels_per_block`` channels (a
    block never straddles two chunks; only the layer's last chunk may end inside one) whose
    index rows fit half of WGT (all of it if half holds none). Each chunk's index rows start
    a WGT row of the weight blob (:func:`codebook_weight_bytes`)."""
    check_codebook(op, cfg)
    kk, d, B = KH * KW, fmt.d, cfg.bus_bytes
    per = weights.index_rows_per_wgt_row(cfg.cols, fmt.index_bits, cfg.wbuf_row_bytes)
    gran = weights.channels_per_block(KH, KW, d)

    def wrows(nch: int) -> int:
        nblocks = -(-nch * kk // d)
        return -(-nblocks // per)

    half = cfg.wbuf_rows // 2
    cap = half if wrows(min(C, gran)) <= half else cfg.wbuf_rows
    if C <= act_ch and wrows(C) <= cap:
        nch = C
    else:
        nch = min(C, act_ch)
        nch -= nch % gran
        while nch > 0 and wrows(nch) > cap:
            nch -= gran
        if nch <= 0:
            raise CompileError(f"layer {op.name!r}: a codebook chunk of {gran} channels (whole "
                               f"blocks of d={d}) does not fit ACT ({act_ch} channels) or WGT "
                               f"({cap} rows)")
    chunks = [(c0, min(C, c0 + nch), 0, KH) for c0 in range(0, C, nch)]
    chunk_wrows, off = [], 0
    for c0, c1, _, _ in chunks:
        chunk_wrows.append((off, wrows(c1 - c0)))
        off += wrows(c1 - c0)
    act_ranges = [(0, C)] if act_ch >= C else [(c0, min(C, c0 + nch)) for c0 in range(0, C, nch)]
    act_slot = round_up(max(c1 - c0 for c0, c1 in act_ranges) * a_plane, B)
    n_act = max(1, min(cfg.abuf_bytes // act_slot, len(bands) * len(act_ranges)))
    wgt_slot = wrows(nch)
    n_wgt = max(1, min(cfg.wbuf_rows // wgt_slot, groups * len(chunks)))
    n_bias = max(1, min(cfg.bbuf_rows, groups))
    out_slot = round_up(bo * y.pitch, B)
    return ConvPlan(op.name, C, H, W, O, KH, KW, sy, sx, pad, OH, OW, groups, bands, band_in,
                    chunks, act_ranges, a_plane, act_slot, n_act, wgt_slot, n_wgt, n_bias,
                    out_slot, n_out, fmt, per, chunk_wrows)
