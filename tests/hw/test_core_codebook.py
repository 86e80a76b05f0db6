"""Whole core under amaranth.sim with codebook weights (WFMT=1): hand-assembled conv programs
with LOAD CB and index rows in WGT, checked against sw/numerics computed here and byte for
byte against the functional simulator; the same layers with raw codes for the cycle count."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from shiftbook import numerics
from shiftbook.config import PRESETS, CoreConfig
from shiftbook.isa import WFMT_CODEBOOK, WFMT_RAW, Buf, Insn, Mode, Opcode, Reg, encode_program
from shiftbook.weights import index_bits, index_rows_per_wgt_row, pack_index_rows

from .helpers import run_core

TINY = dataclasses.replace(PRESETS["tiny"], abuf_bytes=512, wbuf_rows=64, bbuf_rows=4,
                           obuf_bytes=64, mem_words=4096, max_k=16, max_d=9)


def _set(reg: Reg, v: int) -> Insn:
    return Insn(Opcode.SET, {"reg": reg, "value": v})


def _load(buf: Buf, ext: int, words: int, buf_addr: int = 0, runs: int = 1, ext_stride: int = 0,
          buf_stride: int = 0) -> Insn:
    return Insn(Opcode.LOAD, dict(buf=buf, ext_addr=ext, buf_addr=buf_addr, words=words,
                                  runs=runs, ext_stride=ext_stride, buf_stride=buf_stride))


def codebook_conv(cfg: CoreConfig, *, cin: int, cout: int, h: int, w: int, kk: int, pad: int,
                  k: int = 16, d: int = 9, stride: int = 1, split: int = 1, raw: bool = False,
                  oob: bool = False, seed: int = 0, passes: list[dict] | None = None):
    """A conv whose weights are a codebook of ``k`` codewords of ``d`` codes and one index per
    block of ``d`` steps of each COMPUTE's reduction (``split`` channel chunks, the last block
    of a chunk cut short when ``d`` does not divide it). ``raw``: the same layer with the
    decoded codes as raw WGT rows. ``oob``: one index is ``k`` (past the codebook).
    ``passes``: several layers over the same input, one after the other in one program, each
    ``dict(k=, d=, raw=)`` with its own codebook, indices and OUT region.

    Returns (image, expected {byte address: int8}, info)."""
    rng = np.random.default_rng(seed)
    passes = passes or [dict(k=k, d=d, raw=raw)]
    B = cfg.bus_bytes
    oh = (h + 2 * pad - kk) // stride + 1
    ow = (w + 2 * pad - kk) // stride + 1
    npix_total = oh * ow
    pitch = -(-w // B) * B
    plane = h * pitch
    chunk = cin // split
    assert chunk * split == cin and cout <= cfg.cols
    steps = chunk * kk * kk                       # reduction steps per COMPUTE
    wrow = cfg.wbuf_row_bytes
    obank_words = cfg.obuf_bytes // B
    brow_words = cfg.bbuf_row_bytes // B
    out_pitch = -(-npix_total // B)
    assert len(passes) * out_pitch <= obank_words
    x = rng.integers(-128, 128, size=(cin, h, w))
    bias = rng.integers(-2000, 2000, size=cout)
    shift = rng.integers(0, 10, size=cout)
    xp = np.zeros((cin, h + 2 * pad, w + 2 * pad), dtype=np.int64)
    xp[:, pad:pad + h, pad:pad + w] = x

    n_insns = 17 + len(passes) * (12 + split * -(-npix_total // cfg.rows)) + 4
    base = -(-n_insns * 16 // B) + 4                 # data after the program
    act_w = base
    act_words = cin * plane // B
    bias_w = act_w + act_words + 2
    top = bias_w + brow_words + 2
    blobs: list[tuple[int, bytes]] = [
        (act_w, np.pad(x, ((0, 0), (0, 0), (0, pitch - w))).astype(np.int8).tobytes())]
    brow = bytearray(brow_words * B)
    for o in range(cout):
        brow[8 * o:8 * o + 4] = int(bias[o]).to_bytes(4, "little", signed=True)
        brow[8 * o + 4] = int(shift[o])
    blobs.append((bias_w, bytes(brow)))
    prog = [
        _set(Reg.IN_H, h), _set(Reg.IN_W, w), _set(Reg.A_PITCH, pitch),
        _set(Reg.A_PLANE, plane), _set(Reg.A_WRAP, stride * pitch - (ow - 1) * stride),
        _set(Reg.OUT_W, ow), _set(Reg.STRIDE_Y, stride), _set(Reg.STRIDE_X, stride),
        _set(Reg.PAD_L, pad), _set(Reg.KH, kk), _set(Reg.KW, kk), _set(Reg.NCH, chunk),
        _set(Reg.O_WRAP, 1), _set(Reg.MODE, 0), _set(Reg.FLAGS, 1),
        _load(Buf.ACT, act_w, act_words),
        _load(Buf.BIAS, bias_w, brow_words, buf_addr=brow_words),
    ]
    outs = []
    for pi, ps in enumerate(passes):
        pk, pd, praw = ps["k"], ps["d"], ps.get("raw", False)
        nblocks = -(-steps // pd)
        ib = index_bits(pk)
        per = index_rows_per_wgt_row(cfg.cols, ib, wrow)
        codebook = rng.integers(0, 1 << cfg.code_bits, size=(pk, pd))
        idx = rng.integers(0, pk, size=(split, cout, nblocks))
        if oob:
            idx[split - 1, cout - 1, nblocks - 1] = pk
        # codes (cout, cin, kk, kk): chunk s's reduction vector is its blocks' codewords, cut
        codes = np.zeros((cout, cin, kk, kk), dtype=np.int64)
        for s in range(split):
            vec = codebook[np.minimum(idx[s], pk - 1)].reshape(cout, nblocks * pd)[:, :steps]
            codes[:, s * chunk:(s + 1) * chunk] = vec.reshape(cout, chunk, kk, kk)
        acc = np.zeros((cout, oh, ow), dtype=np.int64)
        for oy in range(oh):
            for ox in range(ow):
                win = xp[:, oy * stride:oy * stride + kk, ox * stride:ox * stride + kk]
                for o in range(cout):
                    acc[o, oy, ox] = int(numerics.shift_product(win, codes[o],
                                                                cfg.exp_bits).sum())
        outs.append(numerics.requantize(acc, bias[:, None, None], shift[:, None, None],
                                        relu=True))
        if praw:
            wimg = np.zeros((split * steps, wrow), dtype=np.uint8)
            for s in range(split):
                for o in range(cout):
                    wimg[s * steps:(s + 1) * steps, o] = \
                        codes[o, s * chunk:(s + 1) * chunk].reshape(-1)
            wbytes = wimg.tobytes()
            rows_per_chunk = steps
        else:
            rows_per_chunk = -(-nblocks // per)
            wbytes = b"".join(pack_index_rows(idx[s], ib, cfg.cols, wrow) for s in range(split))
        cb_w = top
        cb_words = -(-(pk * pd) // B)
        wgt_w = cb_w + cb_words + 2
        top = wgt_w + len(wbytes) // B + 2
        blobs += [(cb_w, codebook.astype(np.uint8).tobytes()), (wgt_w, wbytes)]
        # a new codebook waits for the previous layer's COMPUTEs; WGT is rewritten
        prog += [Insn(Opcode.SYNC, {"mask": 2}),
                 _set(Reg.WFMT, WFMT_RAW if praw else WFMT_CODEBOOK),
                 _set(Reg.CB_D, pd), _set(Reg.CB_K, pk), _set(Reg.IDX_BITS, ib),
                 _set(Reg.IDX_PER_ROW, per)]
        if not praw:
            prog.append(_load(Buf.CB, cb_w, cb_words))
        prog += [_load(Buf.WGT, wgt_w, len(wbytes) // B), Insn(Opcode.SYNC, {"mask": 1}),
                 Insn(Opcode.MARK, {"id": 1 + 10 * pi})]
        for p0 in range(0, npix_total, cfg.rows):
            oy, ox = divmod(p0, ow)
            iy0, ix0 = oy * stride - pad, ox * stride - pad
            for s in range(split):
                prog.append(Insn(Opcode.COMPUTE, dict(
                    clear=int(s == 0), drain=int(s == split - 1), ox0=ox, iy0=iy0, ix0=ix0,
                    npix=min(cfg.rows, npix_total - p0), col0=0, ncols=cout,
                    act_base=s * chunk * plane + iy0 * pitch + ix0,
                    o_off=p0 + pi * out_pitch * B, wgt_base=s * rows_per_chunk, bias_row=1)))
        prog += [Insn(Opcode.SYNC, {"mask": 2}), Insn(Opcode.MARK, {"id": 2 + 10 * pi})]
    out_w = top
    words = out_w + len(passes) * cout * out_pitch + 8
    prog += [
        Insn(Opcode.STORE, dict(buf=Buf.OUT, ext_addr=out_w, buf_addr=0,
                                words=len(passes) * out_pitch, runs=cout,
                                ext_stride=len(passes) * out_pitch, buf_stride=obank_words)),
        Insn(Opcode.SYNC, {"mask": 3}),
        Insn(Opcode.MARK, {"id": 7}),
        Insn(Opcode.END),
    ]
    img = bytearray(words * B)
    for wd, blob in blobs:
        img[wd * B:wd * B + len(blob)] = blob
    blob = encode_program(prog)
    assert len(blob) <= base * B, "program overlaps data"
    img[:len(blob)] = blob
    expected = {}
    for pi, out in enumerate(outs):
        for o in range(cout):
            for p in range(npix_total):
                a = (out_w + o * len(passes) * out_pitch + pi * out_pitch) * B + p
                expected[a] = int(out[o].reshape(-1)[p])
    info = dict(steps=steps * split * -(-npix_total // cfg.rows),
                tiles=-(-npix_total // cfg.rows))
    return bytes(img), expected, info




def _functional():
    functional = pytest.importorskip("shiftbook.sim.functional")
    if not hasattr(functional.FunctionalSim, "_load_cb"):
        pytest.skip("the functional simulator has no LOAD CB yet")
    return functional


def _check(cfg: CoreConfig, *, stall=None, **kw):
    image, expected, info = codebook_conv(cfg, **kw)
    mem, res = run_core(cfg, image, stall=stall)
    assert res["done"] == 1 and res["error"] == 0, res
    assert [m[0] for m in res["marks"]][-1] == 7
    got = {a: (mem.mem[a] ^ 0x80) - 0x80 for a in expected}
    bad = [(a, got[a], v) for a, v in expected.items() if got[a] != v]
    assert not bad, f"{len(bad)} wrong bytes, first (addr, got, want) {bad[:4]}"
    return mem, res, image, info


@pytest.mark.parametrize("kw", [
    # d = 9: one 3x3 kernel per block, no cut blocks
    dict(cin=3, cout=2, h=4, w=4, kk=3, pad=1, k=16, d=9, seed=1),
    # d = 1: scalar sharing, one index per step (index rows every cycle)
    dict(cin=2, cout=2, h=3, w=4, kk=3, pad=1, k=5, d=1, seed=2),
    # d = 4 on a 1x1 conv of 6 channels: the last block of every tile is cut (flush)
    dict(cin=6, cout=2, h=3, w=3, kk=1, pad=0, k=7, d=4, seed=3),
    # d = 3 sub-kernel blocks, stride 2, two channel chunks
    dict(cin=4, cout=1, h=5, w=5, kk=3, pad=1, k=2, d=3, stride=2, split=2, seed=4),
])
def test_core_codebook_conv(kw):
    _check(TINY, **kw)


def test_core_codebook_wide_indices_bus1():
    # k = 2048 (11-bit indices): one index row per 8-byte WGT row on a 1-byte bus
    cfg = dataclasses.replace(TINY, max_k=2048, max_d=4, bus_bytes=1, mem_latency=2)
    assert index_rows_per_wgt_row(cfg.cols, 11, cfg.wbuf_row_bytes) == 1
    _check(cfg, cin=5, cout=2, h=3, w=3, kk=1, pad=0, k=2048, d=4, seed=5)


def test_core_codebook_memory_stalls_and_wide_bus():
    import random

    rng = random.Random(7)
    stalls = [rng.random() < 0.3 for _ in range(4096)]
    cfg = dataclasses.replace(TINY, rows=3, cols=3, bus_bytes=16, mem_latency=3)
    _check(cfg, stall=lambda c: stalls[c % len(stalls)], cin=2, cout=3, h=4, w=3, kk=3, pad=1,
           k=11, d=9, seed=6)


@pytest.mark.parametrize("kw", [
    dict(cin=3, cout=2, h=4, w=4, kk=3, pad=1, k=16, d=9, seed=11),
    dict(cin=6, cout=2, h=3, w=3, kk=1, pad=0, k=7, d=4, seed=12),
])
def test_core_codebook_matches_functional_simulator(kw):
    functional = _functional()
    mem, res, image, info = _check(TINY, **kw)
    ref = functional.run_program(TINY, image)
    n = len(image)
    assert bytes(mem.mem[:n]) == bytes(ref.memory[:n])


def test_core_codebook_index_past_codebook_stops_with_error():
    image, expected, info = codebook_conv(TINY, cin=2, cout=2, h=3, w=3, kk=3, pad=1, k=6, d=9,
                                          oob=True, seed=8)
    mem, res = run_core(TINY, image)
    assert res["error"] == 1 and res["done"] == 0
    assert [m[0] for m in res["marks"]] == [1]


def test_core_codebook_costs_no_throughput():
    # 8 tiles x 36 steps back to back, d = 9 (no cut block) and d = 4 (a cut block per tile):
    # the compute section takes no more cycles than with raw codes (+ the first index fetch
    # and, for cut blocks, the decoder's restart per tile)
    cfg = dataclasses.replace(TINY, rows=2, cols=2)
    kw = dict(cin=4, cout=2, h=4, w=4, kk=3, pad=1, seed=30)
    spans = {}
    for name, extra in (("raw", dict(raw=True, k=16, d=9)), ("d9", dict(k=16, d=9)),
                        ("d4", dict(k=16, d=4))):
        _, res, _, info = _check(cfg, **kw, **extra)
        marks = dict(res["marks"])
        spans[name] = marks[2] - marks[1]
    steps = info["steps"]
    assert steps <= spans["raw"] <= steps + 20, spans
    assert spans["d9"] <= spans["raw"] + 3, spans
    assert spans["d4"] <= spans["raw"] + 3 * info["tiles"] + 3, spans


def test_core_codebook_layer_sequence():
    # codebook (d=9) -> codebook (d=4, another k) -> raw -> codebook (d=1) in one program:
    # each layer's codebook load and the decoder's (k, d) switch between layers
    passes = [dict(k=16, d=9), dict(k=7, d=4), dict(k=16, d=9, raw=True), dict(k=3, d=1)]
    cfg = dataclasses.replace(TINY, obuf_bytes=128)
    _, res, _, _ = _check(cfg, cin=2, cout=2, h=3, w=4, kk=3, pad=1, passes=passes, seed=9)
    assert [m[0] for m in res["marks"]] == [1, 2, 11, 12, 21, 22, 31, 32, 7]


def test_core_load_past_cb_is_illegal():
    blob = encode_program([Insn(Opcode.MARK, {"id": 1}),
                           _load(Buf.CB, 64, 1), Insn(Opcode.MARK, {"id": 2}),
                           Insn(Opcode.LOAD, dict(buf=6, ext_addr=64, buf_addr=0, words=1, runs=1,
                                                  ext_stride=0, buf_stride=0)),
                           Insn(Opcode.MARK, {"id": 3}), Insn(Opcode.END)])
    mem, res = run_core(TINY, blob, max_cycles=300)
    assert res["error"] == 1 and res["done"] == 0
    assert [m[0] for m in res["marks"]] == [1, 2]


def test_core_pooling_ignores_wfmt():
    # MAX/SUM read no weights: with WFMT=1 left set (and WGT bytes that would be indices past
    # CB_K=1) a pooling layer neither waits for the decoder nor stops with an error
    from .convprog import conv_case

    for mode in (Mode.MAX, Mode.SUM):
        image, expected, info = conv_case(TINY, cin=1, cout=2, h=4, w=4, k=2, pad=0, stride=2,
                                          mode=mode, relu=False, seed=3)
        prog = [_set(Reg.WFMT, WFMT_CODEBOOK) if i.op == Opcode.SET and i.reg == Reg.WFMT
                else i for i in info["prog"]]
        prog = [_set(Reg.CB_K, 1), _set(Reg.CB_D, 1), _set(Reg.IDX_BITS, 1),
                _set(Reg.IDX_PER_ROW, 1), *prog]
        blob = encode_program(prog)
        assert len(blob) <= 1024
        image = blob + image[len(blob):]
        mem, res = run_core(TINY, image)
        assert res["done"] == 1 and res["error"] == 0, res
        got = {a: (mem.mem[a] ^ 0x80) - 0x80 for a in expected}
        assert got == expected
