"""Instruction payload layouts, built from ``shiftbook.isa.FIELDS`` (never by hand)."""

from __future__ import annotations

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from shiftbook.config import CoreConfig
from shiftbook.fields import field_bits
from shiftbook.isa import FIELDS, SIGNED_FIELDS, Opcode

__all__ = ["compute_insn_layout", "dma_insn_layout", "field_slice"]


def field_slice(word, op: Opcode, name: str):
    """The bits of field ``name`` of ``op`` in the 128-bit instruction ``word``."""
    lsb, width = FIELDS[op][name]
    v = word[lsb:lsb + width]
    if op == Opcode.COMPUTE and name in SIGNED_FIELDS:
        return v.as_signed()
    return v


def dma_insn_layout() -> data.StructLayout:
    """LOAD/STORE fields plus ``store`` (1 = STORE)."""
    fields = {name: width for name, (_, width) in FIELDS[Opcode.LOAD].items()}
    fields["store"] = 1
    return data.StructLayout(fields)


def compute_insn_layout(cfg: CoreConfig) -> data.StructLayout:
    """A COMPUTE as issued to the unit: its fields and every layer register (``reg_<name>``)
    at the width the config can use (``shiftbook.fields.field_bits``: buffer
    address bits, array shape, codebook limits), not the ISA's. The controller's layer
    registers and the unit's next-tile slot hold this layout; the compiler refuses any value
    that would not fit it."""
    fields = {}
    for name, (bits, kind) in field_bits(cfg).items():
        fields[name] = signed(bits) if kind == "signed" else unsigned(bits)
    return data.StructLayout(fields)
