"""Whole-program compilation: place tensors and parameters, schedule every layer, encode.

External memory image (byte addresses):
``[0, program)`` the instruction stream (16 bytes each, starting at word 0), then, each
aligned to 64 bytes (or the bus width if larger): every tensor of the graph in graph order
(inputs hold their values, the rest zeros), then per layer its weight rows and bias rows.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.fields import check_fields
from shiftbook.isa import INSN_BYTES, WFMT_CODEBOOK, WFMT_RAW, Insn, Opcode, encode_program
from shiftbook.manifest import LayerMeta
from shiftbook.placement import MemoryImage, Placement, pack_tensor
from shiftbook.sw.compiler.conv import (
    CompileError,
    ConvPlan,
    codebook_weight_bytes,
    conv_bias_bytes,
    conv_weight_bytes,
    schedule_conv,
)
from shiftbook.sw.compiler.conv_plan import conv_candidates, weight_terms
from shiftbook.sw.compiler.emitter import Emitter
from shiftbook.sw.compiler.layout import memory_error, param_sizes
from shiftbook.sw.compiler.pool import plan_pool, pool_bias_bytes, pool_layer_meta, schedule_pool
from shiftbook.sw.ir import Conv2d, Graph, MaxPool2d, SumPool2d
from shiftbook.timing import estimate_program
from shiftbook.weights import RawWeights

__all__ = ["CompiledProgram", "CompileError", "compile_graph"]


@dataclass
class CompiledProgram:
    config: CoreConfig
    insns: list[Insn]
    program: bytes
    memory: bytes
    tensors: dict[str, Placement]
    layers: list[LayerMeta]
    inputs: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        # The layers as the bundle's typed records (every field checked once, here).
        self.layers = [lay if isinstance(lay, LayerMeta) else LayerMeta.from_dict(lay, f"layer {i}")
                       for i, lay in enumerate(self.layers)]

    @property
    def ideal_cycles(self) -> int:
        return sum(lay.ideal_cycles for lay in self.layers)


def _layer_meta(index: int, op: Conv2d, plan: Any, graph: Graph, cfg: CoreConfig,
                w_bytes: int, w_addr: int, b_addr: int, b_bytes: int,
                extra: dict[str, Any]) -> dict[str, Any]:
    macs = op.macs(graph.tensors)
    fmt = op.weight_format
    if fmt is None:
        wmeta: dict[str, Any] = {
            "wfmt": WFMT_RAW, "k": None, "d": None, "index_bits": None, "layout": None,
            "codebook_addr": None, "codebook_bytes": 0,
            "footprint": RawWeights(op.weight, op.exp_bits, op.weight2 if weight_terms(op, cfg) > 1
                                    else None).footprint().to_dict()}
    else:
        wmeta = {
            "wfmt": WFMT_CODEBOOK, "k": fmt.k, "d": fmt.d, "index_bits": fmt.index_bits,
            "layout": fmt.layout, "idx_per_row": plan.idx_per_row,
            "codebook_addr": extra.pop("codebook_addr"), "codebook_bytes": fmt.k * fmt.d,
            "footprint": fmt.footprint().to_dict()}
    return {
        "index": index, "name": op.name, "op": op.kind, "input": op.input, "output": op.output,
        "residual": op.residual,
        "out_channels": op.out_channels, "in_channels": op.in_channels,
        "macs": macs, "ideal_cycles": math.ceil(macs / cfg.pes),
        "weight_bytes": w_bytes, "weight_addr": w_addr, "bias_addr": b_addr,
        "bias_bytes": b_bytes,
        "kernel": [plan.KH, plan.KW], "stride": [plan.sy, plan.sx], "padding": list(plan.pad),
        "tiles": {
            "rows": cfg.rows, "cols": cfg.cols, "groups": plan.groups,
            "bands": [list(b) for b in plan.bands],
            "chunks": [list(c) for c in plan.chunks],
            "out_w": plan.OW, "group_block": plan.group_block,
            **({"terms": plan.terms} if plan.terms > 1 else {}),
        },
        "weights": wmeta,
        **extra,
    }


def _cycle_floor(plan: ConvPlan, cfg: CoreConfig, op: Conv2d, x: Placement, y: Placement,
                 res: Placement | None) -> int:
    """Cycles no schedule of ``plan`` beats: its reduction steps (one COMPUTE step a cycle),
    and the bus words of the one memory port: the output (and residual) moved once, every
    band of a block reading all the block's weights and every block the whole input, with at
    most a full WGT (ACT) left from the band (block) before (tests/sw/test_compiler.py checks
    it against the cycle model)."""
    tiles = sum(len(plan.tiles(b, cfg.rows)) for b in range(len(plan.bands)))
    steps = tiles * plan.groups * plan.KW * sum((c1 - c0) * (k1 - k0)
                                                for c0, c1, k0, k1 in plan.chunks)
    wcap = cfg.wbuf_rows * cfg.wbuf_row_bytes
    w_all = param_sizes(op, cfg, plan)[0]
    nbands = len(plan.bands)
    words = 0
    for g0, g1 in plan.group_blocks:
        w = w_all * (g1 - g0) // plan.groups
        words += w + (nbands - 1) * max(0, w - wcap)
    in_rows = min(plan.band_in[-1][1], x.shape[1]) - max(plan.band_in[0][0], 0)  # no padding
    x_all = plan.C * in_rows * x.pitch
    words += x_all + (len(plan.group_blocks) - 1) * max(0, x_all - cfg.abuf_bytes)
    words += plan.O * plan.OH * (y.pitch + (res.pitch if res is not None else 0))
    return max(steps, words // cfg.bus_bytes)


def _choose_plan(em: Emitter, op: Conv2d, cfg: CoreConfig, x: Placement, y: Placement,
                 w_addr: int, b_addr: int, index: int, res: Placement | None,
                 cb_addr: int | None) -> ConvPlan:
    """The layer's tiling among ``conv_candidates`` (plain or double-buffered ACT bands, each
    with all groups in one block or in blocks whose weights stay in WGT): where there is more
    than one, each is scheduled as a program of its own and timed by the cycle model
    (``shiftbook.timing``); the fewest cycles win, ties go to fewer external bytes, then to
    the earlier candidate. A candidate whose :func:`_cycle_floor` is above the best time so
    far is not scheduled (the lowest floors go first)."""
    cands = conv_candidates(op, x, y, cfg)
    if len(cands) == 1:
        return cands[0]
    floors = [_cycle_floor(c, cfg, op, x, y, res) for c in cands]
    best: tuple[int, int, int] | None = None
    for i in sorted(range(len(cands)), key=lambda i: floors[i]):   # likely winners first
        if best is not None and floors[i] > best[0]:
            continue
        trial = Emitter(regs=dict(em.regs))
        schedule_conv(trial, op, cands[i], cfg, x, y, w_addr, b_addr, index, res, cb_addr)
        cycles = estimate_program(cfg, [*trial.insns, Insn(Opcode.END, {})]).total
        moved = sum(t.args["words"] * t.args["runs"] for t in trial.insns
                    if t.op in (Opcode.LOAD, Opcode.STORE))
        if best is None or (cycles, moved, i) < best:
            best = (cycles, moved, i)
    assert best is not None
    return cands[best[2]]


def _alloc(mem: MemoryImage, op: Conv2d, what: str, size: int, data: bytes) -> int:
    """Allocate a parameter blob of the size :func:`layout.param_sizes` gives (the size the
    early check counted); a packer that wrote another size is a compiler bug."""
    if len(data) != size:
        raise AssertionError(f"layer {op.name!r}: {what} blob of {len(data)} bytes, the layout "
                             f"gives {size}")
    return mem.alloc(size, data)


@dataclass
class _Layout:
    """A scheduled program before encoding: instructions, the memory allocator with its
    initial chunks, tensor placements and layer records."""

    insns: list[Insn]
    mem: MemoryImage
    places: dict[str, Placement]
    layers: list[dict[str, Any]]


def _lay_out(graph: Graph, cfg: CoreConfig, inputs: dict[str, np.ndarray],
             data_base: int) -> _Layout:
    """Place every tensor and parameter blob from ``data_base`` on and schedule every layer."""
    mem = MemoryImage(cfg.bus_bytes, data_base)
    places: dict[str, Placement] = {}
    for name, spec in graph.tensors.items():
        p = mem.place_tensor(name, spec.shape, spec.frac)
        places[name] = p
    for name in graph.inputs:
        p = places[name]
        mem.chunks.append((p.addr, pack_tensor(inputs[name], p).tobytes()))
    em = Emitter()
    layers = []
    for index, op in enumerate(graph.ops):
        if isinstance(op, MaxPool2d | SumPool2d):
            pplan = plan_pool(op, places[op.input], places[op.output], cfg)
            bb = pool_bias_bytes(op, cfg)
            b_addr = mem.alloc(len(bb), bb)
            extra = schedule_pool(em, op, pplan, cfg, places[op.input], places[op.output],
                                  b_addr, index)
            layers.append(pool_layer_meta(index, op, pplan, cfg, op.macs(graph.tensors),
                                          b_addr, len(bb), extra))
            continue
        if not isinstance(op, Conv2d):
            raise CompileError(f"layer {op.name!r}: op kind {op.kind!r} is not supported yet")
        w_int = op.values()
        try:
            nx.check_acc_fits(w_int, op.bias, acc_bits=cfg.acc_bits, act_bits=cfg.act_bits,
                              what=f"layer {op.name!r}")
        except nx.NumericsError as e:
            raise CompileError(str(e)) from None
        top = max(int(np.max(w, initial=0)) for w in (op.weight, op.weight2) if w is not None)
        if cfg.pe == "shift" and top >= 1 << (cfg.exp_bits + 2):
            raise CompileError(f"layer {op.name!r}: weight codes exceed the core's code width")
        fmt = op.weight_format
        x, y = places[op.input], places[op.output]
        res = places[op.residual] if op.residual is not None else None
        cb_addr = None
        if fmt is None:
            wb = conv_weight_bytes(op, cfg)
            bb = conv_bias_bytes(op, cfg)
            w_addr = _alloc(mem, op, "weight", param_sizes(op, cfg, None)[0], wb)
            b_addr = _alloc(mem, op, "bias", param_sizes(op, cfg, None)[1], bb)
        else:
            # Codebook layers pack their index rows per chunk: addresses after the plan.
            bb = conv_bias_bytes(op, cfg)
            w_addr = b_addr = cb_addr = 0
        plan = _choose_plan(em, op, cfg, x, y, w_addr, b_addr, index, res, cb_addr)
        if fmt is not None:
            wb = codebook_weight_bytes(op, cfg, plan)
            cbb = fmt.pack_codebook()
            wn, bn, cbn = param_sizes(op, cfg, plan)
            w_addr = _alloc(mem, op, "weight", wn, wb)
            b_addr = _alloc(mem, op, "bias", bn, bb)
            cb_addr = _alloc(mem, op, "codebook", cbn, cbb)
        extra = schedule_conv(em, op, plan, cfg, x, y, w_addr, b_addr, index, res, cb_addr)
        if cb_addr is not None:
            extra["codebook_addr"] = cb_addr
        layers.append(_layer_meta(index, op, plan, graph, cfg, len(wb), w_addr, b_addr,
                                  len(bb), extra))
    em.insns.append(Insn(Opcode.END, {}))
    return _Layout(em.insns, mem, places, layers)


def _relocated(lay: _Layout, delta: int, bus_bytes: int) -> _Layout:
    """``lay`` with every data address ``delta`` bytes higher (a multiple of the allocator's
    alignment): what :func:`_lay_out` gives at a ``data_base`` ``delta`` higher, since every
    allocation is aligned and no scheduling decision reads an address (the DMA pieces and
    the plan trials depend on sizes and strides only; tests/sw/test_compiler.py checks the
    equality). LOAD/STORE ``ext_addr`` are the only instruction fields holding one."""
    assert delta % lay.mem.align == 0 and delta % bus_bytes == 0
    dw = delta // bus_bytes
    insns = [Insn(t.op, {**t.args, "ext_addr": t.args["ext_addr"] + dw})
             if t.op in (Opcode.LOAD, Opcode.STORE) else t for t in lay.insns]
    mem = MemoryImage(lay.mem.bus_bytes, 0, lay.mem.align)
    mem.top = lay.mem.top + delta
    mem.chunks = [(a + delta, d) for a, d in lay.mem.chunks]
    places = {k: replace(p, addr=p.addr + delta) for k, p in lay.places.items()}
    layers = []
    for rec in lay.layers:
        rec = dict(rec)
        if rec["weight_bytes"]:
            rec["weight_addr"] += delta
        rec["bias_addr"] += delta
        w = rec["weights"]
        if w.get("codebook_addr") is not None:
            rec["weights"] = {**w, "codebook_addr": w["codebook_addr"] + delta}
        layers.append(rec)
    return _Layout(insns, mem, places, layers)


def _finish(lay: _Layout, graph: Graph, cfg: CoreConfig) -> CompiledProgram:
    """Check field widths, encode and build the memory image of a laid-out program whose
    data starts after its instructions."""
    # The core latches each field at a config-derived width: refuse a value it would cut.
    too_wide = check_fields(lay.insns, cfg)
    if too_wide is not None:
        raise CompileError(too_wide)
    program = encode_program(lay.insns)
    if lay.mem.chunks and min(a for a, _ in lay.mem.chunks) < len(program):
        raise AssertionError("data placed over the program")
    image = lay.mem.image(program)
    if len(image) > cfg.mem_words * cfg.bus_bytes:
        raise CompileError(memory_error(len(image), cfg))
    return CompiledProgram(cfg, lay.insns, program, image, lay.places, lay.layers,
                           list(graph.inputs), list(graph.outputs))


def compile_graph(graph: Graph, cfg: CoreConfig,
                  inputs: dict[str, np.ndarray]) -> CompiledProgram:
    """Compile ``graph`` for ``cfg``; ``inputs`` (int8 values) go into the memory image."""
    graph.validate()
    for name in graph.inputs:
        if name not in inputs:
            raise CompileError(f"no value for graph input {name!r}")
        if np.asarray(inputs[name]).shape != graph.tensors[name].shape:
            raise CompileError(f"input {name!r} has shape {np.asarray(inputs[name]).shape}, "
                               f"expected {graph.tensors[name].shape}")
    # Laid out from address 0, then moved past the instructions (their count does not
    # depend on data addresses): one scheduling pass.
    lay = _lay_out(graph, cfg, inputs, 0)
    delta = lay.mem._up(len(lay.insns) * INSN_BYTES)
    return _finish(_relocated(lay, delta, cfg.bus_bytes), graph, cfg)
