"""The compiler's memory layout from shapes alone, and the checks it allows before any weight is
quantized (``shiftbook compile`` runs them first, so a model too large for the config fails in
seconds, not after calibration).

:func:`param_sizes` is the one size rule of a layer's parameter blobs: ``program.py`` allocates
exactly these sizes (and refuses a packed blob of another size), so the early check and the
compiler cannot drift apart. :func:`check_layout` places every tensor as the compiler does,
plans every layer (the buffer fits: the same planners and errors as the compile), checks the
layer registers' field widths, and refuses a graph whose data section plus the smallest
program it can have (one COMPUTE instruction per reduction step) exceeds ``cfg``'s memory.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from shiftbook.config import CoreConfig
from shiftbook.fields import check_fields
from shiftbook.isa import INSN_BYTES, Insn, Opcode
from shiftbook.placement import MemoryImage, Placement
from shiftbook.sw.compiler.conv_plan import ConvPlan, plan_conv, weight_terms
from shiftbook.sw.compiler.conv_schedule import layer_registers
from shiftbook.sw.compiler.pool import plan_pool
from shiftbook.sw.compiler.tiling import CompileError
from shiftbook.sw.ir import Conv2d, Graph, MaxPool2d, SumPool2d

__all__ = ["LayoutCheck", "param_sizes", "check_layout", "memory_error"]


def param_sizes(op: Conv2d, cfg: CoreConfig, plan: ConvPlan | None) -> tuple[int, int, int]:
    """(weight, bias, codebook) blob bytes of a convolution under ``plan``: raw layers one WGT
    row per reduction step (and term, :func:`conv_plan.weight_terms`) per group of ``cols``
    channels, codebook layers their index rows per
    chunk and ``k*d`` codebook bytes; one BIAS row per group. (``plan`` may be None for a raw
    layer.)"""
    groups = -(-op.out_channels // cfg.cols)
    bias = groups * cfg.bbuf_row_bytes
    fmt = op.weight_format
    if fmt is None:
        _, c, kh, kw = op.weight.shape
        return groups * weight_terms(op, cfg) * c * kh * kw * cfg.wbuf_row_bytes, bias, 0
    if plan is None:
        raise ValueError(f"layer {op.name!r}: a codebook layer's weight size needs its plan")
    return groups * plan.group_wrows * cfg.wbuf_row_bytes, bias, fmt.k * fmt.d


def memory_error(need: int, cfg: CoreConfig, what: str = "program and data need") -> str:
    """The one-line refusal of an image larger than ``cfg`` addresses."""
    limit = cfg.mem_words * cfg.bus_bytes
    return (f"{what} {need:,} bytes, the core addresses {limit:,} "
            f"(config {cfg.name!r}, mem_words={cfg.mem_words})")


@dataclass
class LayoutCheck:
    """What :func:`check_layout` found: the data section's end (tensors and parameters, from
    address 0), the fewest instruction bytes the program can take, and the largest layer."""

    data_bytes: int = 0
    min_program_bytes: int = 0
    largest: tuple[str, int] = ("", 0)
    layers: dict[str, int] = field(default_factory=dict)

    @property
    def min_image_bytes(self) -> int:
        return self.data_bytes + self.min_program_bytes


def _conv_plans(op: Conv2d, x: Placement, y: Placement, cfg: CoreConfig) -> list[ConvPlan]:
    """The plans the compiler chooses between (``program._choose_plan``)."""
    plan = plan_conv(op, x, y, cfg)
    alt = plan_conv(op, x, y, cfg, double_act=True)
    return [plan] if alt.bands == plan.bands else [plan, alt]


def _computes(plan: ConvPlan, cfg: CoreConfig) -> int:
    """COMPUTE instructions of a plan (one per band, group, tile and chunk)."""
    tiles = sum(len(plan.tiles(b, cfg.rows)) for b in range(len(plan.bands)))
    return tiles * plan.groups * len(plan.chunks)


def check_layout(graph: Graph, cfg: CoreConfig) -> LayoutCheck:
    """Place and plan ``graph`` for ``cfg`` without scheduling it; :class:`CompileError` (one
    line naming the layer or the sizes) for a layer that does not fit the buffers, a layer
    register too wide for its field, or an image larger than the memory."""
    mem = MemoryImage(cfg.bus_bytes, 0)
    places = {name: mem.place_tensor(name, spec.shape, spec.frac)
              for name, spec in graph.tensors.items()}
    out = LayoutCheck()
    insns = 1       # END
    for op in graph.ops:
        x, y = places[op.input], places[op.output]
        before = mem.top
        if isinstance(op, MaxPool2d | SumPool2d):
            plan_pool(op, x, y, cfg)
            mem.alloc(cfg.bbuf_row_bytes)
        elif isinstance(op, Conv2d):
            plans = _conv_plans(op, x, y, cfg)
            best = min(plans, key=lambda p: sum(param_sizes(op, cfg, p)))
            w, b, cb = param_sizes(op, cfg, best)
            for n in (w, b) + ((cb,) if op.weight_format is not None else ()):
                mem.alloc(n)
            insns += min(_computes(p, cfg) for p in plans)
            res = places[op.residual] if op.residual is not None else None
            wide = [check_fields([Insn(Opcode.SET, {"reg": int(r), "value": int(v)})
                                  for r, v in layer_registers(op, p, x, y, res)], cfg)
                    for p in plans]
            if all(wide):       # (a message for every plan the compiler could choose)
                raise CompileError(f"layer {op.name!r}: " + str(wide[0]).split(": ", 1)[1])
        else:
            raise CompileError(f"layer {op.name!r}: op kind {op.kind!r} is not supported yet")
        out.layers[op.name] = mem.top - before
        if mem.top - before > out.largest[1]:
            out.largest = (op.name, mem.top - before)
    out.data_bytes = mem.top
    out.min_program_bytes = insns * INSN_BYTES
    if out.min_image_bytes > cfg.mem_words * cfg.bus_bytes:
        name, n = out.largest
        raise CompileError(memory_error(out.min_image_bytes, cfg, "program and data need at "
                                        "least") + f"; the largest layer, {name!r}, alone "
                                        f"{n:,}")
    return out
