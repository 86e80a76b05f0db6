"""The widths in which the core latches each COMPUTE field and layer register.

The ISA (docs/isa.md) gives every field a fixed width that fits the largest core; a given
CoreConfig uses far fewer bits (buffer addresses, array shape, codebook limits). The gateware
latches each field at the width derived here (``hw/compute.py``, ``hw/controller.py``), and
the compiler checks every emitted value against the same table (:func:`check_fields`), so a
value never silently wraps. Pure Python (no Amaranth): the compiler imports it too. It lives in
``hw/`` because it shapes the gateware (the RTL build cache hashes ``hw/*.py``).

Two kinds of field:

``"value"`` / ``"signed"``
    A count, coordinate, selector or codebook parameter: the value must fit the width (unsigned
    or two's complement); :func:`check_fields` refuses one that does not.
``"mod"``
    A buffer address or address step (``act_base``, ``A_PITCH``, ...): the core's address
    arithmetic is modulo the buffer size, so only the buffer's address bits matter and any
    value is legal (the functional simulator wraps the same way).
"""

from __future__ import annotations

from collections.abc import Iterable

from shiftbook.config import CoreConfig
from shiftbook.isa import FIELDS, Insn, Opcode, Reg

__all__ = ["FieldBits", "field_bits", "dim_bits", "coord_bits", "check_fields"]

FieldBits = tuple[int, str]   # (width, kind)


def _log2(v: int) -> int:
    return v.bit_length() - 1


def dim_bits(cfg: CoreConfig) -> int:
    """Bits of a dimension (IN_H, IN_W, OUT_W, KH, KW, NCH, strides, PAD_L, ``ox0``): every
    in-bounds input row, output row, channel plane and kernel tap of one reduction lies in a
    buffer, so dimensions stay below twice the larger of ACT and a column's OUT bank."""
    return max(_log2(cfg.abuf_bytes), _log2(cfg.obuf_bytes)) + 1


def coord_bits(cfg: CoreConfig) -> int:
    """Signed width of the pixel walker's input coordinates (a dimension plus a window's
    reach either side)."""
    return dim_bits(cfg) + 2


def field_bits(cfg: CoreConfig) -> dict[str, FieldBits]:
    """``{name: (bits, kind)}`` for every COMPUTE field and every layer register (as
    ``reg_<name>``, lower case); never wider than the ISA field."""
    AW, OB, WB = _log2(cfg.abuf_bytes), _log2(cfg.obuf_bytes), _log2(cfg.wbuf_rows)
    BB = max(1, _log2(cfg.bbuf_rows))
    DB = dim_bits(cfg)
    row_bits = 8 * cfg.wbuf_row_bytes
    out: dict[str, FieldBits] = {
        "clear": (1, "value"), "drain": (1, "value"),
        "ox0": (DB, "value"), "iy0": (DB + 1, "signed"), "ix0": (DB + 1, "signed"),
        "npix": (max(1, cfg.rows.bit_length()), "value"),
        "col0": (max(1, (cfg.cols - 1).bit_length()), "value"),
        "ncols": (max(1, cfg.cols.bit_length()), "value"),
        "act_base": (AW, "mod"), "o_off": (OB, "mod"), "wgt_base": (WB, "mod"),
        "bias_row": (BB, "mod"),
    }
    regs: dict[Reg, FieldBits] = {
        Reg.IN_H: (DB, "value"), Reg.IN_W: (DB, "value"), Reg.OUT_W: (DB, "value"),
        Reg.A_PITCH: (AW, "mod"), Reg.A_PLANE: (AW, "mod"), Reg.A_WRAP: (AW, "mod"),
        Reg.O_WRAP: (OB, "mod"),
        Reg.STRIDE_Y: (DB, "value"), Reg.STRIDE_X: (DB, "value"), Reg.PAD_L: (DB, "value"),
        Reg.KH: (DB, "value"), Reg.KW: (DB, "value"), Reg.NCH: (DB, "value"),
        Reg.MODE: (2, "value"), Reg.FLAGS: (2, "value"), Reg.WFMT: (1, "value"),
        Reg.CB_D: (cfg.max_d.bit_length(), "value"),
        Reg.CB_K: (cfg.max_k.bit_length(), "value"),
        Reg.IDX_BITS: (cfg.index_bits_max.bit_length(), "value"),
        Reg.IDX_PER_ROW: (row_bits.bit_length(), "value"),
    }
    missing = set(Reg) - set(regs)
    if missing:   # a register added to the ISA must get a width here
        raise AssertionError(f"no latch width for {sorted(r.name for r in missing)}")
    for reg, fb in regs.items():
        out[f"reg_{reg.name.lower()}"] = (min(fb[0], 32), fb[1])
    for name, (_, width) in FIELDS[Opcode.COMPUTE].items():
        bits, kind = out[name]
        out[name] = (min(bits, width), kind)
    return out


def _fits(v: int, bits: int, kind: str) -> bool:
    if kind == "signed":
        return -(1 << (bits - 1)) <= v < (1 << (bits - 1))
    return 0 <= v < (1 << bits)


def check_fields(insns: Iterable[Insn], cfg: CoreConfig) -> str | None:
    """The first COMPUTE field or SET value that the core would truncate, as a one-line
    message; None when every value fits (:func:`field_bits`)."""
    fb = field_bits(cfg)
    for pc, insn in enumerate(insns):
        if insn.op == Opcode.COMPUTE:
            items = [(name, f"COMPUTE.{name}", v) for name, v in insn.args.items()]
        elif insn.op == Opcode.SET:
            reg = Reg(insn.args["reg"])
            items = [(f"reg_{reg.name.lower()}", f"SET {reg.name}", insn.args["value"])]
        else:
            continue
        for key, what, v in items:
            bits, kind = fb[key]
            if kind != "mod" and not _fits(int(v), bits, kind):
                return (f"instruction {pc}: {what}={v} does not fit the {bits} "
                        f"{'signed ' if kind == 'signed' else ''}bits that core config "
                        f"{cfg.name!r} latches for it (buffers or array too small for "
                        f"this layer)")
    return None
