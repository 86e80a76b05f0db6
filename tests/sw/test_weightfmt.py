"""sw.weightfmt: block layouts, padding, packing, footprints and validation errors."""

from __future__ import annotations

import numpy as np
import pytest

from shiftbook import numerics as nx
from shiftbook import weights

EXP = 4
ZERO = nx.zero_code(EXP)


def rand_codes(rng, shape):
    return rng.integers(0, 1 << (EXP + 2), size=shape)


def test_block_layouts():
    assert weights.block_layout(3, 3, 9) == "kernel"
    assert weights.block_layout(3, 3, 18) == "channels"
    assert weights.block_layout(3, 3, 1) == "scalar"
    assert weights.block_layout(3, 3, 3) == "sub-kernel"
    assert weights.block_layout(1, 1, 4) == "channels"
    assert weights.block_layout(1, 1, 8) == "channels"
    assert [weights.channels_per_block(3, 3, d) for d in (1, 3, 9, 18)] == [1, 1, 1, 2]
    assert [weights.channels_per_block(1, 1, d) for d in (1, 4, 8)] == [1, 4, 8]
    with pytest.raises(weights.WeightFormatError, match=r"d=4 does not fit the 3x3 kernel"):
        weights.block_layout(3, 3, 4)
    with pytest.raises(weights.WeightFormatError, match="d=0"):
        weights.block_layout(1, 1, 0)


def test_blocks_follow_the_reduction_order():
    """Block b of output channel o is reduction steps [b*d, (b+1)*d), r = (c*KH+ky)*KW+kx."""
    o, i, kh, kw = 2, 4, 3, 3
    codes = np.arange(o * i * kh * kw).reshape(o, i, kh, kw) % 64
    blocks = weights.to_blocks(codes, 18, EXP)
    assert blocks.shape == (2, 2, 18)
    # d=18: block 1 of output channel 1 is in-channels 2 and 3 of that channel, kx fastest.
    assert blocks[1, 1].tolist() == codes[1, 2:4].reshape(-1).tolist()
    for c in range(i):
        for ky in range(kh):
            for kx in range(kw):
                r = (c * kh + ky) * kw + kx
                assert weights.to_blocks(codes, 9, EXP)[1, r // 9, r % 9] == codes[1, c, ky, kx]
    np.testing.assert_array_equal(weights.from_blocks(blocks, codes.shape), codes)


def test_padding_rule_zero_codes_at_the_end():
    """10 in-channels, d=4 (linear): 3 blocks per output channel, the last with 2 zero codes."""
    rng = np.random.default_rng(0)
    codes = rand_codes(rng, (5, 10))
    blocks = weights.to_blocks(codes, 4, EXP)
    assert blocks.shape == (5, 3, 4)
    assert (blocks[:, 2, 2:] == ZERO).all()
    assert (blocks[:, 2, :2] == codes[:, 8:10]).all()
    w = weights.encode_exact(codes, 4, EXP)
    assert w.padding == 2 and w.nblocks == 3
    np.testing.assert_array_equal(w.decode(), codes)
    # 3x3 with d=18 and 3 in-channels: 27 steps -> 2 blocks, 9 zero codes of padding.
    codes = rand_codes(rng, (2, 3, 3, 3))
    w = weights.encode_exact(codes, 18, EXP)
    assert (w.nblocks, w.padding) == (2, 9)
    assert (w.codebook[w.indices[:, 1], 9:] == ZERO).all()
    np.testing.assert_array_equal(w.decode(), codes)


@pytest.mark.parametrize("shape,d,k", [
    ((8, 6, 3, 3), 9, 256), ((8, 6, 3, 3), 18, 2048), ((16, 12, 1, 1), 4, 256),
    ((16, 24), 8, 2048), ((4, 5, 3, 3), 1, 2), ((7, 13), 4, 64),
])
def test_roundtrip_and_footprint(shape, d, k):
    rng = np.random.default_rng(sum(shape) + d)
    cb = rand_codes(rng, (k, d))
    o = shape[0]
    r = int(np.prod(shape[1:]))
    nblocks = -(-r // d)
    idx = rng.integers(0, k, size=(o, nblocks))
    w = weights.CodebookWeights(shape, k, d, EXP, cb, idx)
    codes = w.decode()
    assert codes.shape == shape
    # Every weight is its block's codeword code.
    flat = codes.reshape(o, r)
    for oo in range(o):
        for s in range(r):
            assert flat[oo, s] == cb[idx[oo, s // d], s % d]
    ib = weights.index_bits(k)
    fp = w.footprint()
    assert fp.index_bits == o * nblocks * ib
    assert fp.codebook_bits == 8 * k * d
    assert fp.bytes == -(-o * nblocks * ib // 8) + k * d
    # Packed images round-trip, and an exact re-encode decodes to the same codes.
    back = weights.CodebookWeights.from_packed(shape, k, d, EXP, w.pack_indices(),
                                               w.pack_codebook())
    np.testing.assert_array_equal(back.indices, idx)
    np.testing.assert_array_equal(back.codebook, cb)
    assert len(w.pack_indices()) == -(-o * nblocks * ib // 8)
    if d > 1 or k >= 64:
        np.testing.assert_array_equal(weights.encode_exact(codes, d, EXP, k=None).decode(), codes)


def test_index_bits_and_raw_footprint():
    assert [weights.index_bits(k) for k in (1, 2, 3, 4, 255, 256, 257, 2048)] == \
        [1, 1, 2, 2, 8, 8, 9, 11]
    raw = weights.RawWeights(np.zeros((4, 3, 3, 3), dtype=np.int64) + ZERO, EXP)
    assert raw.footprint().to_dict() == {"index_bits": 0, "codebook_bits": 0,
                                         "raw_bits": 8 * 108, "bits": 864, "bytes": 108}
    with pytest.raises(weights.WeightFormatError, match="shift code 64 is outside"):
        weights.RawWeights(np.full((2, 2), 64), EXP)


def test_pack_bits_layout():
    # 3-bit values 1, 2, 7: bits 0..8 = 100 010 111 (LSB first) -> 0b11010001, 0b1
    assert weights.pack_bits([1, 2, 7], 3) == bytes([0b11010001, 0b1])
    rng = np.random.default_rng(3)
    for width in (1, 4, 6, 8, 11, 16):
        v = rng.integers(0, 1 << width, size=37)
        blob = weights.pack_bits(v, width)
        assert len(blob) == -(-37 * width // 8)
        np.testing.assert_array_equal(weights.unpack_bits(blob, width, 37), v)
    with pytest.raises(weights.WeightFormatError, match="does not fit 3 bits"):
        weights.pack_bits([8], 3)


def test_validation_errors_are_one_clear_line():
    cb = np.full((4, 9), ZERO)
    idx = np.zeros((2, 3), dtype=np.int64)
    shape = (2, 3, 3, 3)
    weights.CodebookWeights(shape, 4, 9, EXP, cb, idx)
    bad = idx.copy()
    bad[1, 2] = 4
    with pytest.raises(weights.WeightFormatError,
                       match=r"^index 4 of output channel 1, block 2 is past the codebook "
                             r"\(k=4\)$"):
        weights.CodebookWeights(shape, 4, 9, EXP, cb, bad)
    with pytest.raises(weights.WeightFormatError,
                       match=r"codebook shape \(4, 9\) is not \(k, d\) = \(8, 9\)"):
        weights.CodebookWeights(shape, 8, 9, EXP, cb, idx)
    with pytest.raises(weights.WeightFormatError, match=r"is not \(k, d\) = \(4, 18\)"):
        weights.CodebookWeights(shape, 4, 18, EXP, cb, idx[:, :2])
    with pytest.raises(weights.WeightFormatError, match="d=4 does not fit the 3x3 kernel"):
        weights.CodebookWeights(shape, 4, 4, EXP, np.full((4, 4), ZERO), idx)
    with pytest.raises(weights.WeightFormatError, match=r"indices shape \(2, 2\) is not"):
        weights.CodebookWeights(shape, 4, 9, EXP, cb, idx[:, :2])
    with pytest.raises(weights.WeightFormatError, match="codebook: shift code 99"):
        weights.CodebookWeights(shape, 4, 9, EXP, np.full((4, 9), 99), idx)
    with pytest.raises(weights.WeightFormatError, match="k=0"):
        weights.CodebookWeights(shape, 0, 9, EXP, cb[:0], idx)
    with pytest.raises(weights.WeightFormatError, match="36 bytes does not match k\\*d = 8\\*9"):
        weights.CodebookWeights.from_packed(shape, 8, 9, EXP, bytes(6), bytes(36))
    w = weights.CodebookWeights(shape, 4, 9, EXP, cb, idx)
    w.check_config(max_k=256, max_d=9, exp_bits=EXP)
    with pytest.raises(weights.WeightFormatError, match="conv1: block size d=9 exceeds max_d=8"):
        w.check_config(max_k=256, max_d=8, exp_bits=EXP, what="conv1")
    for e in (weights.WeightFormatError,):
        assert issubclass(e, ValueError)


def test_encode_exact_and_nearest():
    rng = np.random.default_rng(5)
    cb = rand_codes(rng, (6, 4))
    idx = rng.integers(0, 6, size=(3, 5))
    codes = weights.CodebookWeights((3, 20), 6, 4, EXP, cb, idx).decode()
    w = weights.encode_exact(codes, 4, EXP, k=16)
    assert w.k == 16 and w.codebook.shape == (16, 4)
    np.testing.assert_array_equal(w.decode(), codes)
    with pytest.raises(weights.WeightFormatError, match="distinct blocks of d=4, more than k=2"):
        weights.encode_exact(codes, 4, EXP, k=2)
    # Nearest: with the exact codebook, every block maps back to an equal-valued codeword.
    near = weights.encode_nearest(codes, w.codebook, EXP)
    np.testing.assert_array_equal(nx.decode_shift(near.decode(), EXP),
                                  nx.decode_shift(codes, EXP))
    # A 2-codeword codebook {+1,...} / {-1,...}: blocks go to the sign that matches.
    one, neg = nx.encode_shift(0, 0, 0, EXP), nx.encode_shift(0, 1, 0, EXP)
    cb2 = np.array([[one] * 2, [neg] * 2])
    c = np.array([[one, one, neg, neg, nx.encode_shift(0, 1, 3, EXP), one]])
    assert weights.encode_nearest(c, cb2, EXP).indices.tolist() == [[0, 1, 1]]


@pytest.mark.parametrize("cols,ib,row_bytes,per", [
    (8, 8, 8, 1), (8, 4, 8, 2), (8, 11, 16, 1), (4, 5, 8, 3), (8, 1, 8, 8),
])
def test_index_rows(cols, ib, row_bytes, per):
    assert weights.index_rows_per_wgt_row(cols, ib, row_bytes) == per
    rng = np.random.default_rng(cols * ib)
    nblocks = 7
    tile = rng.integers(0, 1 << ib, size=(cols - 1, nblocks))
    blob = weights.pack_index_rows(tile, ib, cols, row_bytes)
    assert len(blob) == -(-nblocks // per) * row_bytes
    back = weights.unpack_index_rows(blob, ib, cols, row_bytes, nblocks)
    np.testing.assert_array_equal(back[:cols - 1], tile)
    assert (back[cols - 1] == 0).all()
    # Column j of block b sits at bit ((b % per) * cols + j) * ib of WGT row b // per.
    b, j = nblocks - 1, 1
    r, s = divmod(b, per)
    row = int.from_bytes(blob[r * row_bytes:(r + 1) * row_bytes], "little")
    assert (row >> ((s * cols + j) * ib)) & ((1 << ib) - 1) == tile[j, b]
    with pytest.raises(weights.WeightFormatError, match="does not fit a WGT row"):
        weights.index_rows_per_wgt_row(8, 11, 8)


def test_from_record():
    """Any object with the codebook record's attributes (sw/compress's CodebookFormat)."""
    from types import SimpleNamespace

    rng = np.random.default_rng(9)
    rec = SimpleNamespace(shape=(4, 2, 3, 3), k=8, d=9, exp_bits=EXP,
                          codebook=rand_codes(rng, (8, 9)), indices=rng.integers(0, 8, (4, 2)))
    w = weights.CodebookWeights.from_record(rec)
    assert w.decode()[3, 1, 2, 0] == rec.codebook[rec.indices[3, 1], 6]
    rec.indices[0, 0] = 8
    with pytest.raises(weights.WeightFormatError, match="past the codebook"):
        weights.CodebookWeights.from_record(rec)
    with pytest.raises(weights.WeightFormatError, match="not a codebook format record"):
        weights.CodebookWeights.from_record(SimpleNamespace(shape=(1, 1)))
