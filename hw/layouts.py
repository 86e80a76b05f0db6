"""Instruction payload layouts, built from ``shiftbook.isa.FIELDS`` (never by hand)."""

from __future__ import annotations

from amaranth.lib import data

from shiftbook.isa import FIELDS, SIGNED_FIELDS, Opcode

__all__ = ["dma_insn_layout", "field_slice"]


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
