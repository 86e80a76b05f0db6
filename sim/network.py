"""Run a whole program bundle at one level and compare every layer with golden.

``simulate_bundle(path, level, x=...)`` is what ``shiftbook simulate`` does: it writes the input
into the bundle's input tensor (in memory only), runs the program at ``level``, reads every
layer's output tensor back and compares it with the golden reference (``sw/reference.run_graph``
on the bundle's IR) through :func:`shiftbook.sim.compare.compare_tensors`.

Levels:

``golden``
    The IR run by the golden executor as a batch of one (``sw/reference.run_graph`` on
    ``(1, C, H, W)``) against its single-image run; cycles are the estimator's.
``functional``
    ``sim/functional.run_program`` on the memory image; per-layer cycles from
    the exact cycle model ``shiftbook.timing.estimate`` (the functional simulator's total, from the
    same model, is reported too).
``rtl``
    The generated core under Verilator (``sim/rtl/runner``); per-layer cycles are measured
    between the layers' ``MARK`` s (layer ``i`` ends with ``MARK i``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook.manifest import LayerMeta

__all__ = ["LEVELS", "SimulateError", "NetworkRun", "load_input", "random_input",
           "with_input", "simulate_bundle", "dump_tensors"]

LEVELS = ("golden", "functional", "rtl")


class SimulateError(ValueError):
    """Bad input for a whole-bundle run (level, input file, shape, values)."""


@dataclass
class NetworkRun:
    """The result of :func:`simulate_bundle`.

    Members
    -------
    record: the JSON record (``bit_exact``, ``cycles``, ``layers``, ``first_mismatch``, ...).
    expected, got: every tensor (name -> int64 ``(C, H, W)``) of golden and of the level.
    """

    record: dict[str, Any]
    expected: dict[str, np.ndarray] = field(default_factory=dict)
    got: dict[str, np.ndarray] = field(default_factory=dict)


def random_input(shape: tuple[int, ...], seed: int) -> np.ndarray:
    """Seeded uniform int8 values of ``shape`` (``numpy.random.default_rng(seed)``)."""
    rng = np.random.default_rng(seed)
    return rng.integers(nx.ACT_MIN, nx.ACT_MAX + 1, size=tuple(shape), dtype=np.int64)


def load_input(path: str | Path, shape: tuple[int, ...], frac: int) -> np.ndarray:
    """An input tensor from a ``.npy`` file.

    Integer arrays are the int8 values themselves; floating-point arrays are real values,
    quantized with the input tensor's ``frac`` (``q = sat(floor(x * 2**frac + 1/2))``, the
    frontend's input rule). A leading batch axis of 1 is dropped.
    NaN or infinite values are refused.
    """
    p = Path(path)
    if not p.is_file():
        raise SimulateError(f"input file {p} does not exist")
    try:
        a = np.load(p, allow_pickle=False)
    except (ValueError, OSError) as e:
        raise SimulateError(f"cannot read {p} as a .npy array: {e}") from None
    return check_input(a, shape, frac, what=f"input {p}")


def check_input(a: np.ndarray, shape: tuple[int, ...], frac: int, *,
                what: str = "input") -> np.ndarray:
    """``a`` as the int8 values of an input tensor of ``shape`` (rules of
    :func:`load_input`): a leading batch axis of 1 dropped, real values quantized with
    ``frac``, non-finite or out-of-range values refused."""
    a = np.asarray(a)
    if a.ndim == len(shape) + 1 and a.shape[0] == 1:
        a = a[0]
    if tuple(a.shape) != tuple(shape):
        raise SimulateError(f"{what} has shape {tuple(a.shape)}, the bundle's input is "
                            f"{tuple(shape)}")
    if np.issubdtype(a.dtype, np.floating):
        from shiftbook.sw.frontend import quantize_input

        bad = ~np.isfinite(a)
        if bad.any():
            first = tuple(int(i) for i in np.argwhere(bad)[0])
            raise SimulateError(f"{what} has {int(bad.sum())} non-finite value(s) (NaN or "
                                f"inf), the first {a[first]} at index {first}; give finite "
                                f"values")

        return np.asarray(quantize_input(a[None], frac)[0], dtype=np.int64)
    if not np.issubdtype(a.dtype, np.integer):
        raise SimulateError(f"{what} has dtype {a.dtype}, not an integer or float array")
    a = a.astype(np.int64)
    if a.size and (a.min() < nx.ACT_MIN or a.max() > nx.ACT_MAX):
        raise SimulateError(f"{what} has values in [{a.min()}, {a.max()}], outside int8 "
                            f"(give float values to have them quantized)")
    return a


def with_input(bundle: Any, values: np.ndarray) -> bytes:
    """The bundle's memory image with ``values`` written into its (single) input tensor."""
    from shiftbook.placement import pack_tensor

    name = bundle.manifest.inputs[0]
    p = bundle.tensors[name]
    data = pack_tensor(values, p).tobytes()
    mem = bytearray(bundle.memory)
    mem[p.addr:p.addr + len(data)] = data
    return bytes(mem)


def _progress(fn: Callable[[str], None] | None, msg: str) -> None:
    if fn is not None:
        fn(msg)


def simulate_bundle(path: str | Path | Any, level: str, *, x: np.ndarray | None = None,
                    progress: Callable[[str], None] | None = None,
                    rtl_progress: bool = False,
                    timeout_cycles: int | None = None) -> NetworkRun:
    """Run the bundle at ``path`` (or a loaded ``Bundle``) at ``level`` on input ``x``
    (default: the input stored in the bundle) and compare every layer's output with golden.

    ``progress`` receives one-line status messages; ``rtl_progress`` lets the RTL simulator
    print its MARKs as they arrive (on stdout). ``timeout_cycles`` is the cycle limit of the
    functional and RTL levels (default the RTL runner's ``DEFAULT_TIMEOUT_CYCLES``; 0: none).
    """
    from shiftbook.sim.compare import compare_tensors
    from shiftbook.sw.bundle import Bundle, load_bundle
    from shiftbook.sw.reference import run_graph
    from shiftbook.timing import estimate

    if level not in LEVELS:
        raise SimulateError(f"unknown level {level!r} (one of {', '.join(LEVELS)})")
    if timeout_cycles is not None and timeout_cycles < 0:
        raise SimulateError(f"timeout_cycles={timeout_cycles} must be >= 0 (0: no limit)")
    t0 = time.monotonic()
    bundle = path if isinstance(path, Bundle) else load_bundle(path)
    path = bundle.path
    cfg = bundle.config
    if len(bundle.manifest.inputs) != 1:
        raise SimulateError(f"bundle {path} has {len(bundle.manifest.inputs)} inputs; "
                            f"only single-input networks can be simulated")
    in_name = bundle.manifest.inputs[0]
    if x is None:
        x = bundle.inputs()[in_name]
    x = np.asarray(x, dtype=np.int64)
    memory = with_input(bundle, x)
    graph = bundle.graph()
    layers = sorted(bundle.layers, key=lambda d: d.index)

    _progress(progress, f"golden: {len(graph.ops)} op(s)")
    expected = run_graph(graph, {in_name: x})
    est = estimate(bundle)
    est_by_mark = {lay.mark: lay.cycles for lay in est.layers}

    got, cycles, source, layer_cycles, extra = _run_level(
        bundle, level, memory, graph, {in_name: x}, est.total, est_by_mark, progress=progress,
        rtl_progress=rtl_progress, timeout_cycles=timeout_cycles)
    cmp = compare_tensors(layers, expected, got)
    recs = _layer_records(bundle, layers, cmp, layer_cycles,
                          est_by_mark if level == "rtl" else None)
    ideal_total = sum(lay.ideal_cycles for lay in layers)
    record = {
        "bit_exact": cmp.bit_exact,
        "mismatches": cmp.mismatches,
        "first_mismatch": cmp.to_dict()["first_mismatch"],
        "level": level,
        "cycles": int(cycles),
        "cycles_source": source,
        "ideal_cycles": ideal_total,
        "utilization": round(ideal_total / cycles, 4) if cycles else None,
        "config": cfg.name,
        "config_hash": cfg.hash,
        "bundle": str(Path(path).resolve()),
        "input": in_name,
        "input_shape": list(x.shape),
        "instructions": bundle.manifest.program.instructions,
        "wall_s": 0.0,
        **extra,
        "layers": recs,
    }
    if not cmp.bit_exact and cmp.first is not None:
        record["first_mismatch_text"] = str(cmp.first)
    record["wall_s"] = round(time.monotonic() - t0, 3)
    return NetworkRun(record, expected, got)


def _run_level(bundle: Any, level: str, memory: bytes, graph: Any,
               inputs: dict[str, np.ndarray], est_total: int, est_by_mark: dict[int, int], *,
               progress: Callable[[str], None] | None, rtl_progress: bool,
               timeout_cycles: int | None
               ) -> tuple[dict[str, np.ndarray], int, str, dict[int, int], dict[str, Any]]:
    """Run one level: (its tensors, total cycles, where the cycles come from, cycles per
    layer index, extra record fields)."""
    from shiftbook.sw.reference import run_graph

    cfg = bundle.config
    extra: dict[str, Any] = {}
    if level == "golden":
        got = {k: v[0] for k, v in run_graph(graph, {n: v[None] for n, v in inputs.items()}
                                             ).items()}
        return got, est_total, "estimate", dict(est_by_mark), extra
    if level == "functional":
        from shiftbook.sim.functional import run_program
        from shiftbook.sim.rtl.runner import DEFAULT_TIMEOUT_CYCLES

        _progress(progress, f"functional: {len(bundle.program)} instruction(s)")
        limit = DEFAULT_TIMEOUT_CYCLES if timeout_cycles is None else int(timeout_cycles)
        res = run_program(cfg, memory, max_cycles=limit)
        extra["functional_cycles"] = int(res.cycles)
        return bundle.read_tensors(res.memory), est_total, "estimate", dict(est_by_mark), extra
    from shiftbook.sim.rtl.runner import run_image

    _progress(progress, f"rtl: building/running the {cfg.name} core "
                        f"(estimated {est_total} cycles)")
    res = run_image(cfg, memory, progress=rtl_progress, timeout_cycles=timeout_cycles)
    layer_cycles = {}
    prev = 0
    for mark, at in res.marks:
        layer_cycles[int(mark)] = int(at) - prev
        prev = int(at)
    extra["estimate_cycles"] = int(est_total)
    extra["rtl_wall_s"] = round(res.wall_s, 3)
    return bundle.read_tensors(res.memory), int(res.cycles), "rtl", layer_cycles, extra


def _layer_records(bundle: Any, layers: list[LayerMeta], cmp: Any,
                   layer_cycles: dict[int, int],
                   est_by_mark: dict[int, int] | None) -> list[dict[str, Any]]:
    """One JSON record per layer: bit-exactness, cycles, ideal cycles, utilization (and the
    model's cycles next to measured RTL ones)."""
    per = {d["index"]: d for d in cmp.layers}
    recs = []
    for lay in layers:
        i = lay.index
        c = per[i]
        cyc = layer_cycles.get(i)
        ideal = lay.ideal_cycles
        rec = {"index": i, "name": lay.name, "op": lay.op, "tensor": lay.output,
               "shape": list(bundle.tensors[lay.output].shape),
               "bit_exact": c["mismatches"] == 0, "mismatches": c["mismatches"],
               "cycles": cyc, "ideal_cycles": ideal, "macs": lay.macs,
               "utilization": round(ideal / cyc, 4) if cyc else None}
        if est_by_mark is not None:
            rec["estimate_cycles"] = est_by_mark.get(i)
        recs.append(rec)
    return recs


def dump_tensors(run: NetworkRun, layers: list[LayerMeta], input_name: str,
                 out: str | Path) -> list[Path]:
    """Write the input and every layer's output of both sides as ``.npy``:
    ``OUT/golden/<tensor>.npy`` and ``OUT/<level>/<tensor>.npy`` (the level's side; at the
    golden level ``OUT/golden-check/``). Tensor names with ``/`` become ``_``."""
    out = Path(out)
    level = run.record["level"]
    sides = {"golden": run.expected, "golden-check" if level == "golden" else level: run.got}
    names = [input_name] + [lay.output for lay in sorted(layers, key=lambda d: d.index)]
    written = []
    for side, tensors in sides.items():
        d = out / side
        d.mkdir(parents=True, exist_ok=True)
        for n in names:
            if n in tensors:
                p = d / f"{n.replace('/', '_')}.npy"
                np.save(p, np.asarray(tensors[n], dtype=np.int64))
                written.append(p)
    return written
