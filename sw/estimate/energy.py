"""Energy model: per-event energies from a table times per-layer event counts.

The default table is Horowitz, "Computing's energy problem (and what we can do about it)",
ISSCC 2014, 45 nm at 0.9 V (values and the few assumptions beyond the paper are in
docs/energy.md and in ``default_energy.yaml`` beside this file). A user YAML file overrides any
subset of it.

The same schedule is costed for three datapaths side by side:

- ``shiftbook``: shift-accumulate PEs, codebook-decoded weights, shift-only requantization;
- ``int8``: an int8 multiply-accumulate design (8-bit multiplier + 32-bit adder per MAC,
  raw int8 weights, int32 fixed-point requantization multiplier);
- ``fp32``: fp32 multiply and add per MAC, 32-bit activations and weights.

All three use the same array, tiling and buffer access counts (the shiftbook schedule); they
differ in the arithmetic per event, in the bits each buffer access and each external byte
carries, and in how weights are stored. Events are a plain dict per layer (``LAYER_FIELDS``)
so the compiler or a bundle can supply them; energies are in picojoules.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from shiftbook.timing import LayerTraffic, estimate_program

__all__ = [
    "EnergyError", "EnergyTable", "load_table", "DEFAULT_TABLE_PATH", "LAYER_FIELDS",
    "DESIGNS", "layer_energy", "network_energy", "NetworkEnergy", "format_table",
    "format_comparison", "events_from_bundle",
]

DEFAULT_TABLE_PATH = Path(__file__).with_name("default_energy.yaml")
DESIGNS = ("shiftbook", "int8", "fp32")

# Per-layer event counts (all optional, default 0).
LAYER_FIELDS = {
    "name": "layer name",
    "macs": "dense multiply-accumulates of the layer (what a MAC design executes)",
    "shift_adds": "shift-accumulates the shiftbook PEs execute (MAC mode, in-bounds)",
    "accumulations": "other accumulator adds/compares (pooling SUM/MAX, residual adds)",
    "requants": "output elements requantized (drained)",
    "codebook_reads": "weight-decoder codebook lookups",
    "codebook_bytes": "codebook storage size in bytes (its SRAM size class)",
    "codebook_width": "bits per codebook lookup (default 8)",
    "codebook_writes": "codes written into codebook memory (LOAD CB, every lane)",
    "buffers": "{NAME: {bytes, reads, writes, width, kind, weight_bits, dense_reads, "
               "dense_writes}} on-chip accesses",
    "ext_bytes": "activation/result bytes moved to or from external memory",
    "ext_weight_bytes": "weight (and codebook) bytes moved from external memory",
    "ext_weight_bits": "bits per weight in that stream (default 8: raw codes; less with "
                       "codebooks); the baselines move 8 (int8) or 32 (fp32) instead",
    "ext_dense_weight_bytes": "weight bytes a one-byte-per-weight design moves for the layer "
                              "(the baselines' weight stream, x1 int8, x4 fp32); default "
                              "ext_weight_bytes * 8 / ext_weight_bits",
    "ext_param_bytes": "bias/requantization parameter bytes from external memory (the same "
                       "for every design)",
}
_BUFFER_FIELDS = {"bytes", "reads", "writes", "width", "kind", "weight_bits", "dense_reads",
                  "dense_writes"}
_BUFFER_KINDS = ("data", "weight", "param")
_TABLE_KEYS = {"source", "int_add", "int_mult", "fp_add", "fp_mult", "shift", "sram_read_64b",
               "sram_write_factor", "dram_64b"}


class EnergyError(ValueError):
    """A bad energy table or event dict (the message names the key)."""


def _interp(points: Mapping[int, float], x: float, *, power: float | None = None) -> float:
    """Value at ``x`` from ``{x: y}`` points: log-log interpolation between neighbours and
    the end segments' slope outside (or a fixed ``power`` law from the nearest point)."""
    xs = sorted(points)
    if x in points:
        return float(points[x])
    if power is not None or len(xs) == 1:
        near = min(xs, key=lambda p: abs(math.log(p / x)))
        return float(points[near]) * (x / near) ** (power if power is not None else 1.0)
    if x < xs[0]:
        a, b = xs[0], xs[1]
    elif x > xs[-1]:
        a, b = xs[-2], xs[-1]
    else:
        a = max(p for p in xs if p < x)
        b = min(p for p in xs if p > x)
    ya, yb = float(points[a]), float(points[b])
    slope = math.log(yb / ya) / math.log(b / a)
    return ya * (x / a) ** slope


@dataclass(frozen=True)
class EnergyTable:
    """Per-event energies in pJ (see docs/energy.md for every entry's meaning)."""
    data: dict[str, Any]

    @property
    def source(self) -> str:
        return str(self.data.get("source", "user table"))

    def int_add(self, bits: int) -> float:
        return _interp(self.data["int_add"], bits)

    def int_mult(self, bits: int) -> float:
        return _interp(self.data["int_mult"], bits)

    def fp_add(self, bits: int = 32) -> float:
        return float(self.data["fp_add"][bits])

    def fp_mult(self, bits: int = 32) -> float:
        return float(self.data["fp_mult"][bits])

    def shift(self, bits: int) -> float:
        return _interp(self.data["shift"], bits)

    def sram(self, size_bytes: int, width_bits: int, *, write: bool = False) -> float:
        """One access of ``width_bits`` to an SRAM of ``size_bytes``."""
        per64 = _interp(self.data["sram_read_64b"], max(size_bytes, 1))
        e = per64 * width_bits / 64
        return e * float(self.data["sram_write_factor"]) if write else e

    def dram_byte(self) -> float:
        return float(self.data["dram_64b"]) / 8


def _check_table(data: dict[str, Any], where: str) -> None:
    unknown = sorted(set(data) - _TABLE_KEYS)
    if unknown:
        raise EnergyError(f"{where}: unknown energy table key {unknown[0]!r} "
                          f"(known: {', '.join(sorted(_TABLE_KEYS))})")
    for key, val in data.items():
        if key == "source":
            continue
        items = val.items() if isinstance(val, dict) else [(None, val)]
        for k, v in items:
            if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
                raise EnergyError(f"{where}: {key}{'' if k is None else f'[{k}]'} must be a "
                                  f"non-negative number (pJ), not {v!r}")
            if k is not None and (not isinstance(k, int) or k <= 0):
                raise EnergyError(f"{where}: {key} keys must be positive integers, not {k!r}")


def _read_yaml(path: Path) -> dict[str, Any]:
    import yaml

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise EnergyError(f"{path}: not valid YAML: {str(e).splitlines()[0]}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise EnergyError(f"{path}: an energy table is a mapping of keys to pJ values")
    return data


def load_table(override: str | Path | Mapping[str, Any] | None = None) -> EnergyTable:
    """The default table, with ``override`` (a YAML path or a dict) merged over it: a
    sub-table (``int_add: {8: 0.05}``) replaces only the widths/sizes it names."""
    base = _read_yaml(DEFAULT_TABLE_PATH)
    _check_table(base, str(DEFAULT_TABLE_PATH))
    data = copy.deepcopy(base)
    if override is not None:
        if isinstance(override, Mapping):
            extra, where = dict(override), "energy override"
        else:
            p = Path(override)
            if not p.exists():
                raise EnergyError(f"energy table {str(p)!r} does not exist")
            extra, where = _read_yaml(p), str(p)
        _check_table(extra, where)
        if "source" not in extra:
            extra["source"] = f"{base.get('source')} with overrides from {where}"
        for key, val in extra.items():
            if isinstance(val, dict) and isinstance(data.get(key), dict):
                data[key] = {**data[key], **val}
            else:
                data[key] = val
    return EnergyTable(data)


def _num(ev: Mapping[str, Any], key: str, where: str) -> int:
    v = ev.get(key, 0)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0:
        raise EnergyError(f"{where}: {key} must be a non-negative count, not {v!r}")
    return v


def layer_energy(ev: Mapping[str, Any], table: EnergyTable, *, design: str = "shiftbook",
                 acc_bits: int = 32, act_bits: int = 8) -> dict[str, float]:
    """Energy of one layer's events in pJ by category: ``arith``, ``codebook``,
    ``sram:<BUFFER>`` and ``dram``."""
    where = f"layer {ev.get('name', '?')!r}"
    unknown = sorted(set(ev) - set(LAYER_FIELDS))
    if unknown:
        raise EnergyError(f"{where}: unknown event {unknown[0]!r} "
                          f"(known: {', '.join(LAYER_FIELDS)})")
    if design not in DESIGNS:
        raise EnergyError(f"unknown design {design!r} (known: {', '.join(DESIGNS)})")
    n = {k: _num(ev, k, where) for k in LAYER_FIELDS if k not in ("name", "buffers")}
    wbits = n["ext_weight_bits"] or 8
    out: dict[str, float] = {}
    add_acc = table.int_add(acc_bits)
    if design == "shiftbook":
        # shift-add: barrel shift of the activation + add at accumulator width;
        # requantize: bias add + rounding add (the shift itself is wiring + the saturate).
        out["arith"] = (n["shift_adds"] * (table.shift(act_bits) + add_acc)
                        + n["accumulations"] * add_acc + n["requants"] * 2 * add_acc)
        width = n["codebook_width"] or 8
        cb_size = max(n["codebook_bytes"], 1)
        out["codebook"] = (n["codebook_reads"] * table.sram(cb_size, width)
                           + n["codebook_writes"] * table.sram(cb_size, width, write=True))
    elif design == "int8":
        # int8 x int8 multiply + int32 add per MAC; int32 fixed-point multiplier, bias add and
        # rounding add per requantized output.
        out["arith"] = (n["macs"] * (table.int_mult(8) + table.int_add(32))
                        + n["accumulations"] * table.int_add(32)
                        + n["requants"] * (table.int_mult(32) + 2 * table.int_add(32)))
        out["codebook"] = 0.0
    else:
        out["arith"] = (n["macs"] * (table.fp_mult(32) + table.fp_add(32))
                        + n["accumulations"] * table.fp_add(32)
                        + n["requants"] * table.fp_add(32))   # bias add; no requantization
        out["codebook"] = 0.0
    scale = {"shiftbook": 1, "int8": 1, "fp32": 32 // act_bits}[design]
    for name, b in (ev.get("buffers") or {}).items():
        bw = f"{where} buffer {name!r}"
        if not isinstance(b, Mapping):
            raise EnergyError(f"{bw} must be a mapping")
        extra = sorted(set(b) - _BUFFER_FIELDS)
        if extra:
            raise EnergyError(f"{bw}: unknown field {extra[0]!r} "
                              f"(known: {', '.join(sorted(_BUFFER_FIELDS))})")
        kind = b.get("kind", "data")
        if kind not in _BUFFER_KINDS:
            raise EnergyError(f"{bw}: kind must be one of {', '.join(_BUFFER_KINDS)}")
        size, width = _num(b, "bytes", bw), _num(b, "width", bw) or 8
        reads, writes = _num(b, "reads", bw), _num(b, "writes", bw)
        if kind == "data":
            f = scale
        elif kind == "weight":
            buf_wbits = _num(b, "weight_bits", bw) or 8
            f = {"shiftbook": 1, "int8": 8 / buf_wbits, "fp32": 32 / buf_wbits}[design]
            if design != "shiftbook":   # the baselines run the one-weight-per-byte schedule
                reads = _num(b, "dense_reads", bw) if "dense_reads" in b else reads
                writes = _num(b, "dense_writes", bw) if "dense_writes" in b else writes
        else:
            f = 1
        size, width = max(1, round(size * f)), width * f
        out[f"sram:{name}"] = (reads * table.sram(size, width)
                               + writes * table.sram(size, width, write=True))
    if design == "shiftbook":
        ext = n["ext_bytes"] + n["ext_weight_bytes"] + n["ext_param_bytes"]
    else:
        dense = (n["ext_dense_weight_bytes"] if "ext_dense_weight_bytes" in ev
                 else n["ext_weight_bytes"] * 8 / wbits)
        ext = (n["ext_bytes"] * scale + dense * (1 if design == "int8" else 4)
               + n["ext_param_bytes"])
    out["dram"] = ext * table.dram_byte()
    return out


@dataclass
class NetworkEnergy:
    """Per-layer and total energies (pJ) of the three designs."""
    layers: list[str]
    per_layer: dict[str, list[dict[str, float]]]
    table: EnergyTable
    totals: dict[str, float] = field(default_factory=dict)

    def breakdown(self, design: str) -> dict[str, float]:
        agg: dict[str, float] = {}
        for cats in self.per_layer[design]:
            for k, v in cats.items():
                agg[k] = agg.get(k, 0.0) + v
        return agg

    def ratios(self) -> dict[str, float]:
        """Baseline energy over shiftbook energy."""
        s = self.totals["shiftbook"]
        return {d: (self.totals[d] / s if s else math.inf) for d in DESIGNS}

    def to_dict(self) -> dict[str, Any]:
        return {
            "unit": "pJ", "table_source": self.table.source, "totals": self.totals,
            "ratios_vs_shiftbook": self.ratios(),
            "layers": [{"name": name, **{d: self.per_layer[d][i] for d in DESIGNS}}
                       for i, name in enumerate(self.layers)],
            "breakdown": {d: self.breakdown(d) for d in DESIGNS},
        }


def network_energy(layers: Iterable[Mapping[str, Any]], table: EnergyTable | None = None, *,
                   acc_bits: int = 32, act_bits: int = 8) -> NetworkEnergy:
    table = table or load_table()
    layers = list(layers)
    names = [str(ev.get("name", f"layer{i}")) for i, ev in enumerate(layers)]
    per = {d: [layer_energy(ev, table, design=d, acc_bits=acc_bits, act_bits=act_bits)
               for ev in layers] for d in DESIGNS}
    res = NetworkEnergy(names, per, table)
    res.totals = {d: sum(sum(c.values()) for c in per[d]) for d in DESIGNS}
    return res


def format_table(table: EnergyTable, *, acc_bits: int = 32) -> str:
    """The per-event energies used, one per line."""
    t = table
    rows = [
        ("shift (8-bit activation)", t.shift(8)),
        (f"int add {acc_bits}-bit (accumulator)", t.int_add(acc_bits)),
        ("int add 8 / 16 / 32-bit", f"{t.int_add(8):.3g} / {t.int_add(16):.3g} / "
                                    f"{t.int_add(32):.3g}"),
        ("int mult 8 / 32-bit", f"{t.int_mult(8):.3g} / {t.int_mult(32):.3g}"),
        ("fp32 add / mult", f"{t.fp_add(32):.3g} / {t.fp_mult(32):.3g}"),
        ("SRAM 64-bit read 8 KB / 32 KB / 1 MB",
         f"{t.sram(8192, 64):.3g} / {t.sram(32768, 64):.3g} / {t.sram(1 << 20, 64):.3g}"),
        ("DRAM 64-bit access", t.data["dram_64b"]),
    ]
    lines = [f"energy per event (pJ), {t.source}:"]
    for name, v in rows:
        lines.append(f"  {name:40s} {v if isinstance(v, str) else f'{v:.3g}'}")
    return "\n".join(lines)


_MAC_OPS = ("conv2d", "linear", "conv")


def events_from_bundle(bundle: Any) -> list[dict[str, Any]]:
    """Per-layer event counts of a bundle (a ``Bundle`` or a compiler ``CompiledProgram``):
    its program's instructions for what moves and what the weight path reads, its layer
    metadata for the arithmetic.

    Counted from the instructions of each layer's MARK segment by the cycle model
    (``shiftbook.timing``: ``LayerCycles.compute_steps`` and ``LayerCycles.traffic``):

    - external memory: the bus words of every LOAD (ACT, RES: ``ext_bytes``; WGT and CB:
      ``ext_weight_bytes``; BIAS: ``ext_param_bytes``) and every STORE (``ext_bytes``),
      reloads included; a codebook layer's WGT loads are its packed index rows;
    - WGT reads: one row per reduction step of a raw (WFMT=0) MAC tile; for a codebook tile
      one row per ``IDX_PER_ROW`` blocks of ``CB_D`` steps; codebook reads: one code per
      column per step of a codebook tile (an SRAM of the lane's ``max_k*max_d`` codes, read
      ``code_bits`` wide); codebook writes: every code a LOAD CB brings (per lane);
    - ACT reads: one byte per PE row per step of every COMPUTE; BIAS reads: one row per
      draining COMPUTE.

    From the metadata: ``macs``/``shift_adds`` (dense count: zero weights and padding
    positions included), one requantization and one OUT write per output element (and one
    RES read with a residual). The baselines (int8, fp32) store one weight per byte, so for a
    codebook layer they get the raw-code counts of the same schedule (``dense_reads``: one
    WGT row per step; ``ext_dense_weight_bytes``: every group's ``I*KH*KW`` raw WGT rows, as
    often as the codebook layer loads its index rows)."""
    from shiftbook.isa import Buf

    cfg = bundle.config
    tensors = bundle.tensors
    B = cfg.bus_bytes
    insns = getattr(bundle, "insns", None)
    if insns is None:
        insns = bundle.program
    segments = {seg.mark: seg for seg in estimate_program(cfg, insns).layers}
    cb_size = max(1, cfg.max_k * cfg.max_d * cfg.code_bits // 8)
    out = []
    for lay in bundle.layers:
        seg = segments.get(lay.index)
        tr = seg.traffic if seg is not None else LayerTraffic()
        steps = seg.compute_steps if seg is not None else 0
        tin, tout = tensors[lay.input], tensors[lay.output]
        cin = tin.shape[0]
        cout, oh, ow = tout.shape
        elems = cout * oh * ow
        residual = lay.residual is not None
        mac = lay.op in _MAC_OPS
        codebook = mac and lay.weights.is_codebook
        wgt_bytes = tr.words(Buf.WGT) * B
        cb_bytes = tr.words(Buf.CB) * B
        dense_read = _dense_weight_read(cfg, lay, cin, wgt_bytes) if codebook else wgt_bytes
        buffers = _buffer_events(cfg, tr, steps, elems, residual, dense_read)
        ev: dict[str, Any] = {
            "name": lay.name,
            "macs": lay.macs if mac else 0,
            "shift_adds": lay.macs if mac else 0,
            "accumulations": (0 if mac else lay.macs) + (elems if residual else 0),
            "requants": elems,
            "buffers": buffers,
            "ext_bytes": (tr.words(Buf.ACT, Buf.RES) + tr.store_words) * B,
            "ext_weight_bytes": wgt_bytes + cb_bytes,
            "ext_param_bytes": tr.words(Buf.BIAS) * B,
            "ext_dense_weight_bytes": dense_read,
        }
        if codebook:
            ev.update(codebook_reads=tr.cb_steps * cfg.cols, codebook_bytes=cb_size,
                      codebook_width=cfg.code_bits,
                      codebook_writes=tr.cb_codes * cfg.cols)
        out.append(ev)
    return out


def _dense_weight_read(cfg: Any, lay: Any, cin: int, wgt_bytes: int) -> int:
    """External bytes the int8/fp32 baselines read for a codebook layer's weights: every
    group's ``I*KH*KW`` raw WGT rows, as often as the codebook layer loads its index rows
    (``wgt_bytes`` of its ``stored`` index bytes)."""
    kh, kw = lay.kernel
    stored = max(1, lay.weight_bytes)
    dense = lay.tiles.groups * cin * kh * kw * cfg.wbuf_row_bytes
    return round(dense * max(1.0, wgt_bytes / stored))


def _buffer_events(cfg: Any, tr: LayerTraffic, steps: int, elems: int, residual: bool,
                   dense_read: int) -> dict[str, dict[str, Any]]:
    """Per on-chip buffer (ACT, WGT, BIAS, OUT and, with a residual, RES) of one layer: its
    size in bytes, reads and writes (in rows of ``width`` bits) and kind; WGT also carries the
    raw-code counts of the same schedule for the baselines (``dense_reads``,
    ``dense_writes``)."""
    from shiftbook.isa import Buf

    B = cfg.bus_bytes
    row_b = cfg.wbuf_row_bytes
    buffers: dict[str, dict[str, Any]] = {
        "ACT": {"bytes": cfg.abuf_bytes, "reads": steps * cfg.rows, "width": 8,
                "writes": tr.words(Buf.ACT), "kind": "data"},
        "WGT": {"bytes": cfg.wbuf_rows * row_b, "reads": tr.wgt_reads,
                "width": 8 * row_b, "writes": tr.words(Buf.WGT), "kind": "weight",
                "weight_bits": 8, "dense_reads": tr.mac_steps,
                "dense_writes": -(-dense_read // B)},
        "BIAS": {"bytes": cfg.bbuf_rows * cfg.bbuf_row_bytes, "reads": tr.drains,
                 "width": 8 * cfg.bbuf_row_bytes, "writes": tr.words(Buf.BIAS),
                 "kind": "param"},
        "OUT": {"bytes": cfg.obuf_bytes, "writes": elems, "width": 8,
                "reads": tr.store_words, "kind": "data"},
    }
    if residual:
        buffers["RES"] = {"bytes": cfg.obuf_bytes, "reads": elems, "width": 8,
                          "writes": tr.words(Buf.RES), "kind": "data"}
    return buffers


def _unit(x: float) -> tuple[str, float]:
    for name, f in (("mJ", 1e9), ("uJ", 1e6), ("nJ", 1e3)):
        if x >= f:
            return name, f
    return "pJ", 1.0


def format_comparison(res: NetworkEnergy, *, acc_bits: int = 32) -> str:
    """Totals and ratios side by side, category breakdown, and the per-event table."""
    unit, f = _unit(max(res.totals.values()))
    lines = [f"{'energy (' + unit + ')':14s}" + "".join(f"{d:>12s}" for d in DESIGNS)]
    cats = sorted({k for d in DESIGNS for k in res.breakdown(d)},
                  key=lambda k: (k != "arith", k != "codebook", k == "dram", k))
    for c in cats:
        lines.append(f"{c:14s}" + "".join(f"{res.breakdown(d).get(c, 0.0) / f:12.4g}"
                                          for d in DESIGNS))
    lines.append(f"{'total':14s}" + "".join(f"{res.totals[d] / f:12.4g}" for d in DESIGNS))
    r = res.ratios()
    lines.append(f"{'x shiftbook':14s}" + "".join(f"{r[d]:11.2f}x" for d in DESIGNS))
    return "\n".join(lines) + "\n\n" + format_table(res.table, acc_bits=acc_bits) + "\n"
