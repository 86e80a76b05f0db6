"""A tiny hand-written conv program generator for whole-core tests (independent of the
compiler in sw/): one channel group (cout <= cols), whole input in ACT, raster pixel tiles."""

from __future__ import annotations

import numpy as np

from shiftbook import numerics
from shiftbook.config import CoreConfig
from shiftbook.isa import Buf, Insn, Mode, Opcode, Reg, encode_program


def _set(reg, v):
    return Insn(Opcode.SET, {"reg": reg, "value": v})


def conv_case(cfg: CoreConfig, *, cin: int, cout: int, h: int, w: int, k: int, pad: int,
              stride: int = 1, mode: Mode = Mode.MAC, relu: bool = True,
              residual: bool = False, seed: int = 0, split: int = 1):
    """Returns (image bytes, expected {byte address: value}, out_base_word, info).

    ``split`` > 1 splits the reduction into channel chunks (clear on the first COMPUTE of a
    tile, drain on the last).
    """
    rng = np.random.default_rng(seed)
    B = cfg.bus_bytes
    assert cout <= cfg.cols
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    pitch = -(-w // B) * B
    plane = h * pitch
    x = rng.integers(-128, 128, size=(cin, h, w))
    codes = rng.integers(0, 1 << cfg.code_bits, size=(cout, cin, k, k))
    if cfg.pe == "mult":
        codes = rng.integers(-128, 128, size=(cout, cin, k, k))
    bias = rng.integers(-2000, 2000, size=cout)
    shift = rng.integers(0, 10, size=cout)
    res_shift = rng.integers(-3, 4, size=cout)
    res = rng.integers(-128, 128, size=(cout, oh, ow))
    # expected accumulators
    xp = np.zeros((cin, h + 2 * pad, w + 2 * pad), dtype=np.int64)
    xp[:, pad:pad + h, pad:pad + w] = x
    valid = np.zeros((h + 2 * pad, w + 2 * pad), dtype=bool)
    valid[pad:pad + h, pad:pad + w] = True
    acc = np.zeros((cout, oh, ow), dtype=np.int64)
    for o in range(cout):
        for oy in range(oh):
            for ox in range(ow):
                win = xp[:, oy * stride:oy * stride + k, ox * stride:ox * stride + k]
                vwin = valid[oy * stride:oy * stride + k, ox * stride:ox * stride + k]
                if mode == Mode.MAC:
                    if cfg.pe == "mult":
                        p = win * codes[o]
                    else:
                        p = numerics.shift_product(win, codes[o], cfg.exp_bits)
                    acc[o, oy, ox] = int((p * vwin).sum())
                elif mode == Mode.SUM:
                    acc[o, oy, ox] = int((win * vwin).sum())
                else:
                    vals = win[:, vwin]
                    acc[o, oy, ox] = int(vals.max()) if vals.size else -(1 << (cfg.acc_bits - 1))
    out = numerics.requantize(acc, bias[:, None, None], shift[:, None, None], relu=relu,
                              residual=res if residual else None,
                              res_shift=res_shift[:, None, None])

    # memory layout (word addresses)
    obank_words = cfg.obuf_bytes // B
    wrow_words = cfg.wbuf_row_bytes // B
    brow_words = cfg.bbuf_row_bytes // B
    nsteps = cin * k * k
    act_words = cin * plane // B
    res_pitch_words = -(-(oh * ow) // B)
    base = 1024 // B if B < 64 else 32
    act_w = base
    wgt_w = act_w + act_words + 4
    bias_w = wgt_w + nsteps * wrow_words + 4
    res_w = bias_w + brow_words + 4
    out_w = res_w + cout * res_pitch_words + 4
    words = out_w + cout * res_pitch_words + 8
    img = bytearray(words * B)

    def put(word, data: bytes):
        img[word * B:word * B + len(data)] = data

    put(act_w, bytes(np.pad(x, ((0, 0), (0, 0), (0, pitch - w))).astype(np.int8).tobytes()))
    wrows = np.zeros((nsteps, wrow_words * B), dtype=np.uint8)
    for o in range(cout):
        wrows[:, o] = (codes[o].reshape(-1) & 0xFF).astype(np.uint8)
    put(wgt_w, wrows.tobytes())
    brow = bytearray(brow_words * B)
    for o in range(cout):
        brow[8 * o:8 * o + 4] = int(bias[o]).to_bytes(4, "little", signed=True)
        brow[8 * o + 4] = int(shift[o])
        brow[8 * o + 5] = int(res_shift[o]) & 0xFF
    put(bias_w, bytes(brow))
    for o in range(cout):
        put(res_w + o * res_pitch_words, res[o].reshape(-1).astype(np.int8).tobytes())

    prog = [
        _set(Reg.IN_H, h), _set(Reg.IN_W, w), _set(Reg.A_PITCH, pitch),
        _set(Reg.A_PLANE, plane), _set(Reg.A_WRAP, stride * pitch - (ow - 1) * stride),
        _set(Reg.OUT_W, ow), _set(Reg.STRIDE_Y, stride), _set(Reg.STRIDE_X, stride),
        _set(Reg.PAD_L, pad), _set(Reg.KH, k), _set(Reg.KW, k), _set(Reg.NCH, cin // split),
        _set(Reg.O_WRAP, 1), _set(Reg.MODE, int(mode)),
        _set(Reg.FLAGS, (1 if relu else 0) | (2 if residual else 0)), _set(Reg.WFMT, 0),
        Insn(Opcode.LOAD, dict(buf=Buf.ACT, ext_addr=act_w, buf_addr=0, words=act_words,
                               runs=1, ext_stride=0, buf_stride=0)),
        Insn(Opcode.LOAD, dict(buf=Buf.WGT, ext_addr=wgt_w, buf_addr=0,
                               words=nsteps * wrow_words, runs=1, ext_stride=0, buf_stride=0)),
        Insn(Opcode.LOAD, dict(buf=Buf.BIAS, ext_addr=bias_w, buf_addr=brow_words,
                               words=brow_words, runs=1, ext_stride=0, buf_stride=0)),
        Insn(Opcode.LOAD, dict(buf=Buf.RES, ext_addr=res_w, buf_addr=0, words=res_pitch_words,
                               runs=cout, ext_stride=res_pitch_words,
                               buf_stride=obank_words)),
        Insn(Opcode.SYNC, {"mask": 1}),
        Insn(Opcode.MARK, {"id": 1}),
    ]
    npix_total = oh * ow
    chunk = cin // split
    assert chunk * split == cin
    for p0 in range(0, npix_total, cfg.rows):
        oy, ox = divmod(p0, ow)
        iy0, ix0 = oy * stride - pad, ox * stride - pad
        for s in range(split):
            prog.append(Insn(Opcode.COMPUTE, dict(
                clear=int(s == 0), drain=int(s == split - 1), ox0=ox, iy0=iy0, ix0=ix0,
                npix=min(cfg.rows, npix_total - p0), col0=0, ncols=cout,
                act_base=s * chunk * plane + iy0 * pitch + ix0, o_off=p0,
                wgt_base=s * chunk * k * k, bias_row=1)))
    prog += [
        Insn(Opcode.SYNC, {"mask": 2}),
        Insn(Opcode.MARK, {"id": 2}),
        Insn(Opcode.STORE, dict(buf=Buf.OUT, ext_addr=out_w, buf_addr=0, words=res_pitch_words,
                                runs=cout, ext_stride=res_pitch_words, buf_stride=obank_words)),
        Insn(Opcode.SYNC, {"mask": 3}),
        Insn(Opcode.MARK, {"id": 7}),
        Insn(Opcode.END),
    ]
    blob = encode_program(prog)
    assert len(blob) <= base * B, "program overlaps data"
    img[:len(blob)] = blob
    expected = {}
    for o in range(cout):
        for p in range(npix_total):
            expected[(out_w + o * res_pitch_words) * B + p] = int(out[o].reshape(-1)[p])
    info = dict(out_word=out_w, words=words, ideal_steps=nsteps * -(-npix_total // cfg.rows),
                prog=prog, acc=acc, out=out)
    return bytes(img), expected, info
