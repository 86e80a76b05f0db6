"""Instruction payload layouts, built from ``shiftbook.isa.FIELDS`` (never by hand)."""

from __future__ import annotations

from amaranth.hdl import signed
from amaranth.lib import data

from shiftbook.isa import FIELDS, SIGNED_FIELDS, SIGNED_REGS, Opcode, Reg

__all__ = ["dma_insn_layout", "compute_insn_layout", "REG_WIDTH", "field_slice"]

REG_WIDTH = 32


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


def compute_insn_layout() -> data.StructLayout:
    """COMPUTE fields plus every layer register (as ``reg_<name>``, 32 bits), copied at issue."""
    fields = {}
    for name, (_, width) in FIELDS[Opcode.COMPUTE].items():
        fields[name] = signed(width) if name in SIGNED_FIELDS else width
    for reg in Reg:
        fields[f"reg_{reg.name.lower()}"] = signed(REG_WIDTH) if reg in SIGNED_REGS \
            else REG_WIDTH
    return data.StructLayout(fields)
