"""Compiler: integer IR + CoreConfig -> program, external memory image and metadata.

Never imports Amaranth. Entry point: :func:`compile_graph`.
"""

from shiftbook.placement import MemoryImage, Placement, pack_tensor, unpack_tensor
from shiftbook.sw.compiler.program import CompiledProgram, CompileError, compile_graph

__all__ = ["compile_graph", "CompiledProgram", "CompileError", "Placement", "MemoryImage",
           "pack_tensor", "unpack_tensor"]
