"""Hand-assembled whole-core programs for RTL tests and speed runs, with an independent numpy
reference of what they compute (a direct convolution, not the ISA's pixel walk).

One conv layer, one output-channel group (``cout <= cols``), the whole input in ACT:
``MARK 1; SET...; LOAD ACT, WGT, BIAS; SYNC; MARK 2; COMPUTE (clear, drain) per pixel tile
[x repeat]; SYNC; MARK 3; STORE OUT; SYNC; MARK 4; END``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shiftbook import numerics
from shiftbook.config import CoreConfig
from shiftbook.isa import INSN_BYTES, Buf, Flag, Insn, Mode, Opcode, Reg, encode_program


@dataclass
class ConvCase:
    image: bytes
    expected: bytes           # the whole memory image after the run
    out_base: int             # word address of the stored output
    out: np.ndarray           # (cout, oh, ow) int8 results
    computes: int             # COMPUTE instructions issued


def _set(reg: Reg, v: int) -> Insn:
    return Insn(Opcode.SET, {"reg": reg, "value": v})


def _align(n: int, b: int) -> int:
    return -(-n // b) * b


def conv_program(cfg: CoreConfig, *, cin: int, cout: int, h: int, w: int, k: int, pad: int,
                 stride: int = 1, relu: bool = True, seed: int = 0,
                 repeat: int = 1, max_exp: int | None = None) -> ConvCase:
    rng = np.random.default_rng(seed)
    B = cfg.bus_bytes
    assert 1 <= cout <= cfg.cols
    oh = (h + 2 * pad - k) // stride + 1
    ow = (w + 2 * pad - k) // stride + 1
    pitch = _align(w, B)
    plane = h * pitch
    o_pitch = ow + 1  # one unused byte per output row: exercises O_WRAP
    nk = cin * k * k
    assert cin * plane <= cfg.abuf_bytes and nk <= cfg.wbuf_rows
    assert oh * o_pitch <= cfg.obuf_bytes

    x = rng.integers(-128, 128, size=(cin, h, w))
    codes = rng.integers(0, 1 << cfg.code_bits, size=(cout, cin, k, k))
    if max_exp is not None:  # keep exponents small (big reductions stay in range)
        zero, sign, e = numerics.shift_fields(codes, cfg.exp_bits)
        codes = numerics.encode_shift(zero, sign, np.minimum(e, max_exp), cfg.exp_bits)
    bias = rng.integers(-3000, 3000, size=cout)
    shift = rng.integers(6, 14, size=cout)

    # ---- reference: direct convolution with the shared integer rules
    xp = np.zeros((cin, h + 2 * pad, w + 2 * pad), np.int64)
    xp[:, pad:pad + h, pad:pad + w] = x
    acc = np.zeros((cout, oh, ow), np.int64)
    for co in range(cout):
        for c in range(cin):
            for ky in range(k):
                for kx in range(k):
                    win = xp[c, ky:ky + stride * oh:stride, kx:kx + stride * ow:stride]
                    acc[co] += numerics.shift_product(win, int(codes[co, c, ky, kx]),
                                                      cfg.exp_bits)
    lo, hi = numerics.int_range(cfg.acc_bits)
    assert acc.min() >= lo and acc.max() <= hi
    out = numerics.requantize(acc, bias[:, None, None], shift[:, None, None], relu=relu)

    # ---- external memory layout (word addresses), after the program
    act = np.zeros(cin * plane, np.int64)
    for c in range(cin):
        for y in range(h):
            act[c * plane + y * pitch:c * plane + y * pitch + w] = x[c, y]
    wrow = cfg.wbuf_row_bytes
    wgt = np.zeros((nk, wrow), np.int64)
    for c in range(cin):
        for ky in range(k):
            for kx in range(k):
                wgt[(c * k + ky) * k + kx, :cout] = codes[:, c, ky, kx]
    brow = bytearray(cfg.bbuf_row_bytes)
    for j in range(cout):
        brow[8 * j:8 * j + 4] = int(bias[j]).to_bytes(4, "little", signed=True)
        brow[8 * j + 4] = int(shift[j])
    out_words = _align(oh * o_pitch, B) // B
    bank_words = cfg.obuf_bytes // B

    tiles = []
    npx = oh * ow
    for p0 in range(0, npx, cfg.rows):
        oy, ox = divmod(p0, ow)
        iy0, ix0 = oy * stride - pad, ox * stride - pad
        tiles.append(Insn(Opcode.COMPUTE, {
            "clear": 1, "drain": 1, "ox0": ox, "iy0": iy0, "ix0": ix0,
            "npix": min(cfg.rows, npx - p0), "col0": 0, "ncols": cout,
            "act_base": iy0 * pitch + ix0, "o_off": oy * o_pitch + ox,
            "wgt_base": 0, "bias_row": 0}))

    def program(a_base: int, w_base: int, b_base: int, o_base: int) -> list[Insn]:
        return [
            Insn(Opcode.MARK, {"id": 1}),
            _set(Reg.IN_H, h), _set(Reg.IN_W, w), _set(Reg.A_PITCH, pitch),
            _set(Reg.A_PLANE, plane), _set(Reg.A_WRAP, stride * pitch - (ow - 1) * stride),
            _set(Reg.OUT_W, ow), _set(Reg.STRIDE_Y, stride), _set(Reg.STRIDE_X, stride),
            _set(Reg.PAD_L, pad), _set(Reg.KH, k), _set(Reg.KW, k), _set(Reg.NCH, cin),
            _set(Reg.O_WRAP, o_pitch - (ow - 1)), _set(Reg.MODE, Mode.MAC),
            _set(Reg.FLAGS, int(Flag.RELU) if relu else 0), _set(Reg.WFMT, 0),
            Insn(Opcode.LOAD, {"buf": Buf.ACT, "ext_addr": a_base, "buf_addr": 0,
                               "words": cin * plane // B, "runs": 1,
                               "ext_stride": 0, "buf_stride": 0}),
            Insn(Opcode.LOAD, {"buf": Buf.WGT, "ext_addr": w_base, "buf_addr": 0,
                               "words": nk * wrow // B, "runs": 1,
                               "ext_stride": 0, "buf_stride": 0}),
            Insn(Opcode.LOAD, {"buf": Buf.BIAS, "ext_addr": b_base, "buf_addr": 0,
                               "words": cfg.bbuf_row_bytes // B, "runs": 1,
                               "ext_stride": 0, "buf_stride": 0}),
            Insn(Opcode.SYNC, {"mask": 1}),
            Insn(Opcode.MARK, {"id": 2}),
            *(tiles * repeat),
            Insn(Opcode.SYNC, {"mask": 3}),
            Insn(Opcode.MARK, {"id": 3}),
            Insn(Opcode.STORE, {"buf": Buf.OUT, "ext_addr": o_base, "buf_addr": 0,
                                "words": out_words, "runs": cout, "ext_stride": out_words,
                                "buf_stride": bank_words}),
            Insn(Opcode.SYNC, {"mask": 3}),
            Insn(Opcode.MARK, {"id": 4}),
            Insn(Opcode.END),
        ]

    n_insns = len(program(0, 0, 0, 0))
    a_base = _align(n_insns * INSN_BYTES, B) // B + 2
    w_base = a_base + cin * plane // B
    b_base = w_base + nk * wrow // B
    o_base = b_base + cfg.bbuf_row_bytes // B + 1
    code = encode_program(program(a_base, w_base, b_base, o_base))
    image = bytearray(code.ljust(a_base * B, b"\0"))
    image += (act & 0xFF).astype(np.uint8).tobytes()
    image += (wgt & 0xFF).astype(np.uint8).tobytes()
    image += bytes(brow)
    image = image.ljust(o_base * B, b"\xa5")  # a filler word before the output area

    expected = bytearray(image)
    banks = np.zeros((cout, out_words * B), np.uint8)
    for j in range(cout):
        for oy in range(oh):
            banks[j, oy * o_pitch:oy * o_pitch + ow] = out[j, oy] & 0xFF
    expected += banks.tobytes()
    return ConvCase(bytes(image), bytes(expected), o_base, out.astype(np.int64),
                    len(tiles) * repeat)
