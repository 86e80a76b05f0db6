"""Verilog generation of the core (module ``shiftbook_core``)."""

from __future__ import annotations

from amaranth.back import verilog as _verilog

from shiftbook.config import CoreConfig

from .core import Core

__all__ = ["generate_verilog", "TOP_NAME"]

TOP_NAME = "shiftbook_core"


def generate_verilog(cfg: CoreConfig, *, name: str = TOP_NAME) -> str:
    """Verilog of ``Core(cfg)``: clock ``clk``, synchronous active-high reset ``rst`` and the
    flat ports of docs/isa.md. Deterministic: the same config gives the same text."""
    core = Core(cfg)
    text = _verilog.convert(core, name=name, emit_src=False)
    header = f"// shiftbook_core for CoreConfig {cfg.hash} ({cfg.name})\n"
    return header + text
