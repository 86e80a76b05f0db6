"""The accelerator's coarse-grained ISA: one definition for the compiler, the functional
simulator and the gateware (which builds its decoder layouts from ``FIELDS``).

Every instruction is 128 bits, stored little-endian as 16 bytes in external memory; the
program starts at external word address 0. Field positions are LSB-first. See docs/isa.md
for the semantics of each instruction; this module only defines encodings.
"""

from __future__ import annotations

import enum
import operator
from dataclasses import dataclass, field

__all__ = [
    "INSN_BITS", "INSN_BYTES", "Opcode", "Buf", "Reg", "Mode", "SyncMask", "Flag",
    "WFMT_RAW", "WFMT_CODEBOOK",
    "FIELDS", "Insn", "encode", "decode", "encode_program", "decode_program", "IsaError",
]

INSN_BITS = 128
INSN_BYTES = INSN_BITS // 8


class IsaError(ValueError):
    """An instruction that cannot be encoded or decoded."""


class Opcode(enum.IntEnum):
    NOP = 0
    SET = 1       # write a layer register
    LOAD = 2      # DMA: external memory -> on-chip buffer (2-D)
    STORE = 3     # DMA: output buffer -> external memory (2-D)
    COMPUTE = 4   # one tile: reduction over the current layer registers, optional drain
    SYNC = 5      # wait until the units named in the mask are idle
    MARK = 6      # report (id, cycle counter) on the mark port; no other effect
    END = 7       # wait for every unit, then stop and raise `done`


class Buf(enum.IntEnum):
    """Targets of LOAD (ACT, WGT, BIAS, RES) and the source of STORE (OUT)."""
    ACT = 0
    WGT = 1
    BIAS = 2
    RES = 3
    OUT = 4
    CB = 5    # codebook: CB_K * CB_D code bytes into every decoder lane (docs/decoder.md)


class Reg(enum.IntEnum):
    """Layer registers written by SET and latched by every COMPUTE (see docs/isa.md)."""
    IN_H = 0       # input height: rows outside [0, IN_H) are padding
    IN_W = 1       # input width: columns outside [0, IN_W) are padding
    A_PITCH = 2    # ACT bytes between input rows
    A_PLANE = 3    # ACT bytes between input channels
    A_WRAP = 4     # ACT address step from the last pixel of an output row to the next row's first
    OUT_W = 5      # output width: the raster walk of a tile's pixels wraps here
    STRIDE_Y = 6
    STRIDE_X = 7
    PAD_L = 8      # padding columns left of the input (input column of output column 0 is -PAD_L)
    KH = 10
    KW = 11
    NCH = 12       # input channels in this reduction
    O_WRAP = 13    # OUT/RES address step at an output-row wrap (O_PITCH - (OUT_W - 1))
    MODE = 17      # Mode
    FLAGS = 18     # Flag bits
    WFMT = 19      # weight format: WFMT_RAW or WFMT_CODEBOOK
    CB_D = 20      # codebook block size d (codes per codeword), 1..max_d
    CB_K = 21      # codebook size k, 1..max_k; an index >= CB_K stops the core with `error`
    IDX_BITS = 22  # bits per index, ceil(log2 CB_K) (at least 1)
    IDX_PER_ROW = 23  # index rows per WGT row: floor(8 * wbuf_row_bytes / (cols * IDX_BITS))


WFMT_RAW = 0        # WGT row byte j = column j's shift code
WFMT_CODEBOOK = 1   # WGT rows hold packed index rows decoded through the codebook


class Mode(enum.IntEnum):
    MAC = 0   # acc += w * x   (w a shift code: a shift and an optional negation)
    MAX = 1   # acc = max(acc, x) over in-bounds window positions (max pooling)
    SUM = 2   # acc += x over in-bounds window positions (average pooling numerator)


class Flag(enum.IntFlag):
    RELU = 1
    RESIDUAL = 2


class SyncMask(enum.IntFlag):
    DMA = 1
    COMPUTE = 2
    ALL = 3


# name -> (lsb, width); the opcode occupies bits [3:0] of every instruction.
FIELDS: dict[Opcode, dict[str, tuple[int, int]]] = {
    Opcode.NOP: {},
    Opcode.SET: {"reg": (4, 8), "value": (12, 32)},
    Opcode.LOAD: {
        "buf": (4, 4), "ext_addr": (8, 28), "buf_addr": (36, 22), "words": (58, 16),
        "runs": (74, 16), "ext_stride": (90, 20), "buf_stride": (110, 18),
    },
    Opcode.COMPUTE: {
        "clear": (4, 1), "drain": (5, 1), "ox0": (6, 12), "iy0": (18, 12), "ix0": (30, 12),
        "npix": (42, 7), "col0": (49, 6), "ncols": (55, 7), "act_base": (62, 22),
        "o_off": (84, 18), "wgt_base": (102, 16), "bias_row": (118, 10),
    },
    Opcode.SYNC: {"mask": (4, 2)},
    Opcode.MARK: {"id": (4, 16)},
    Opcode.END: {},
}
FIELDS[Opcode.STORE] = FIELDS[Opcode.LOAD]

# SET values are 32-bit two's complement; these registers are read as signed.
SIGNED_REGS = frozenset({Reg.A_WRAP, Reg.O_WRAP})
# COMPUTE fields read as two's complement of their width.
SIGNED_FIELDS = frozenset({"iy0", "ix0", "act_base"})


@dataclass(frozen=True)
class Insn:
    op: Opcode
    args: dict[str, int] = field(default_factory=dict)

    def __getattr__(self, name: str) -> int:
        try:
            return self.args[name]
        except KeyError:
            raise AttributeError(name) from None

    def __str__(self) -> str:
        if self.op == Opcode.SET:
            return f"SET {Reg(self.args['reg']).name}={self.args['value']}"
        parts = []
        for k, v in self.args.items():
            if k == "buf":
                v = Buf(v).name
            elif k == "mask":
                v = SyncMask(v).name or str(v)
            parts.append(f"{k}={v}")
        return " ".join([self.op.name, *parts])


def _signed(reg: int) -> bool:
    return reg in SIGNED_REGS


def encode(insn: Insn) -> int:
    """Pack an instruction into a 128-bit integer."""
    fields = FIELDS[insn.op]
    extra = set(insn.args) - set(fields)
    if extra:
        raise IsaError(f"{insn.op.name} has no field {sorted(extra)[0]!r}")
    missing = [name for name in fields if name not in insn.args]
    if missing:
        raise IsaError(f"{insn.op.name} lacks field {missing[0]!r} (every field of "
                       f"{insn.op.name} must be given: {', '.join(fields)})")
    word = int(insn.op)
    for name, (lsb, width) in fields.items():
        v = insn.args[name]
        if isinstance(v, bool) or not hasattr(type(v), "__index__"):
            raise IsaError(f"{insn.op.name}.{name}={v!r} is not an integer")
        v = operator.index(v)
        if insn.op == Opcode.SET and name == "value":
            lo = -(1 << 31) if _signed(insn.args.get("reg", -1)) else 0
            hi = (1 << 31) - 1 if _signed(insn.args.get("reg", -1)) else (1 << 32) - 1
            if not lo <= v <= hi:
                raise IsaError(f"SET {Reg(insn.args['reg']).name}={v} does not fit 32 bits")
            v &= (1 << 32) - 1
        elif insn.op == Opcode.COMPUTE and name in SIGNED_FIELDS:
            if not -(1 << (width - 1)) <= v < (1 << (width - 1)):
                raise IsaError(f"{insn.op.name}.{name}={v} does not fit {width} signed bits")
            v &= (1 << width) - 1
        elif not 0 <= v < (1 << width):
            raise IsaError(f"{insn.op.name}.{name}={v} does not fit {width} bits")
        word |= v << lsb
    return word


def decode(word: int) -> Insn:
    """Unpack a 128-bit integer; unknown opcodes raise IsaError."""
    try:
        op = Opcode(word & 0xF)
    except ValueError:
        raise IsaError(f"unknown opcode {word & 0xF}") from None
    args = {}
    for name, (lsb, width) in FIELDS[op].items():
        args[name] = (word >> lsb) & ((1 << width) - 1)
    if op == Opcode.COMPUTE:
        for name in SIGNED_FIELDS:
            width = FIELDS[op][name][1]
            if args[name] >= 1 << (width - 1):
                args[name] -= 1 << width
    if op == Opcode.SET:
        try:
            reg = Reg(args["reg"])
        except ValueError:
            raise IsaError(f"SET of unknown register {args['reg']}") from None
        if _signed(reg) and args["value"] >= 1 << 31:
            args["value"] -= 1 << 32
    return Insn(op, args)


def encode_program(insns: list[Insn]) -> bytes:
    return b"".join(encode(i).to_bytes(INSN_BYTES, "little") for i in insns)


def decode_program(blob: bytes, *, stop_at_end: bool = True) -> list[Insn]:
    if len(blob) % INSN_BYTES:
        raise IsaError(f"program of {len(blob)} bytes is not a multiple of {INSN_BYTES}")
    out = []
    for off in range(0, len(blob), INSN_BYTES):
        insn = decode(int.from_bytes(blob[off:off + INSN_BYTES], "little"))
        out.append(insn)
        if stop_at_end and insn.op == Opcode.END:
            break
    return out
