"""The report's derived figures: the per-layer table (format, bits per weight, modelled and RTL
cycles, bit-exact status, bytes by memory level), the roofline view, the energy ratios in words,
and the readers of the optional inputs (an RTL or board run, a board build, a compression
summary). Pure Python over the bundle's metadata, the cycle record and the energy events; no
plotting here (:mod:`.report_plots`), no HTML (:mod:`.report_html`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["format_name", "layer_table", "memory_totals", "roofline", "energy_explained",
           "load_run", "load_build", "load_compression"]

_MAC_OPS = ("conv2d", "linear", "conv")


def format_name(lay: Any) -> str:
    """A layer's weight format in words, from its manifest ``WeightMeta`` (``wfmt``, ``k``,
    ``d``, ``layout``)."""
    if lay.op not in _MAC_OPS:
        return f"{lay.op} (no weights)"
    w = lay.weights
    if not w.is_codebook:
        return "two-term shift codes" if (lay.tiles.terms or 1) > 1 else "raw shift codes"
    kind = "PQ" if (w.d or 1) > 1 else "scalar"
    return f"{kind} codebook k={w.k} d={w.d}"


def _weight_count(lay: Any) -> int:
    kh, kw = lay.kernel
    return lay.out_channels * lay.in_channels * kh * kw if lay.op in _MAC_OPS else 0


def _bytes_by_level(ev: Mapping[str, Any]) -> dict[str, dict[str, int]]:
    """Bytes one layer moves at each memory level: external memory (``dram``: activations in
    and out, weights and codebooks, bias/requantization parameters) and the on-chip buffers
    (``sram``: reads + writes of the weight buffer, of the activation/output/residual
    buffers, of the parameter buffer), from the energy model's events."""
    sram = {"weight_bytes": 0, "act_bytes": 0, "param_bytes": 0}
    for b in (ev.get("buffers") or {}).values():
        moved = (b.get("reads", 0) + b.get("writes", 0)) * (b.get("width") or 8) // 8
        key = {"weight": "weight_bytes", "param": "param_bytes"}.get(b.get("kind"), "act_bytes")
        sram[key] += int(moved)
    sram["weight_bytes"] += int(ev.get("codebook_reads", 0) * (ev.get("codebook_width") or 8)
                                // 8)
    dram = {"weight_bytes": int(ev.get("ext_weight_bytes", 0)),
            "act_bytes": int(ev.get("ext_bytes", 0)),
            "param_bytes": int(ev.get("ext_param_bytes", 0))}
    return {"dram": dram, "sram": sram}


def layer_table(bundle: Any, cyc_layers: list[dict[str, Any]], events: list[dict[str, Any]],
                run: dict[str, Any] | None) -> list[dict[str, Any]]:
    """One row per layer of the bundle: format, weights, bits per weight (the manifest's
    footprint over the layer's weight count, codebook included), stored bytes, modelled cycles,
    ideal cycles, utilization, RTL cycles and bit-exact status (None without a run), bytes by
    memory level."""
    by_mark = {c["mark"]: c for c in cyc_layers}
    runs = {r["name"]: r for r in (run or {}).get("layers", [])}
    rows = []
    for lay, ev in zip(bundle.layers, events, strict=True):
        n = _weight_count(lay)
        fp = lay.weights.footprint or {}
        c = by_mark.get(lay.index, {})
        r = runs.get(lay.name, {})
        rows.append({
            "index": lay.index, "name": lay.name, "op": lay.op, "format": format_name(lay),
            "wfmt": lay.weights.wfmt, "k": lay.weights.k, "d": lay.weights.d,
            "weights": n, "bits_per_weight": round(fp["bits"] / n, 3) if n and fp else None,
            "weight_bytes": lay.weight_bytes, "bias_bytes": lay.bias_bytes, "macs": lay.macs,
            "model_cycles": c.get("model"), "ideal_cycles": c.get("ideal"),
            "utilization": c.get("utilization"), "rtl_cycles": r.get("cycles"),
            "bit_exact": r.get("bit_exact"), "memory": _bytes_by_level(ev)})
    return rows


def memory_totals(rows: list[dict[str, Any]]) -> dict[str, dict[str, int]]:
    """The per-layer bytes by memory level summed over the network."""
    tot: dict[str, dict[str, int]] = {}
    for r in rows:
        for level, kinds in r["memory"].items():
            acc = tot.setdefault(level, {})
            for k, v in kinds.items():
                acc[k] = acc.get(k, 0) + v
    return tot


def roofline(cfg: Any, rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The roofline of the cycle model's core: peak ``rows*cols`` shift-adds per cycle (one
    reduction step per cycle over the PE array) and one ``bus_bytes`` word per cycle from
    external memory (the memory port's rate in ``shiftbook.timing_units``). Per layer: its
    operations (shift-adds, the MACs) per external byte, the attainable rate
    ``min(peak, bandwidth * intensity)``, the achieved rate (ops over modelled cycles), and
    ``memory_bound``: intensity below the ridge point ``peak / bandwidth``."""
    peak = cfg.rows * cfg.cols
    bw = cfg.bus_bytes
    ridge = peak / bw
    out = []
    for r in rows:
        ext = sum(r["memory"]["dram"].values())
        if not r["macs"] or not ext:
            continue
        inten = r["macs"] / ext
        out.append({"name": r["name"], "ops": r["macs"], "ext_bytes": ext,
                    "ops_per_byte": round(inten, 4),
                    "attainable_ops_per_cycle": round(min(peak, bw * inten), 4),
                    "achieved_ops_per_cycle": round(r["macs"] / r["model_cycles"], 4)
                    if r["model_cycles"] else None,
                    "memory_bound": inten < ridge})
    return {"peak_ops_per_cycle": peak, "bandwidth_bytes_per_cycle": bw,
            "ridge_ops_per_byte": ridge, "layers": out,
            "memory_bound": [x["name"] for x in out if x["memory_bound"]]}


def energy_explained(en: Mapping[str, Any]) -> dict[str, Any]:
    """Shares and ratios behind the energy totals, and sentences saying them: how much of the
    shiftbook design's energy each source takes, and the int8/fp32 over shiftbook ratio per
    source (arithmetic alone vs on-chip SRAM vs external memory) next to the total's."""
    bd = en["breakdown"]
    tot = en["totals"]

    def group(design: str) -> dict[str, float]:
        g = {"arith": 0.0, "codebook": 0.0, "sram": 0.0, "dram": 0.0}
        for k, v in bd[design].items():
            g["sram" if k.startswith("sram:") else k] = g.get(
                "sram" if k.startswith("sram:") else k, 0.0) + v
        return g

    groups = {d: group(d) for d in bd}
    s = groups["shiftbook"]
    share = {k: (v / tot["shiftbook"] if tot["shiftbook"] else 0.0) for k, v in s.items()}
    ratios = {d: {k: (groups[d][k] / s[k] if s[k] else None) for k in ("arith", "sram", "dram")}
              for d in groups if d != "shiftbook"}
    total_ratio = {d: tot[d] / tot["shiftbook"] if tot["shiftbook"] else None
                   for d in groups if d != "shiftbook"}
    words = []
    big = max(share, key=lambda k: share[k])
    names = {"arith": "arithmetic", "codebook": "the codebook lookups",
             "sram": "on-chip SRAM", "dram": "external memory (DRAM)"}
    for d in ratios:
        ar, tr = ratios[d]["arith"], total_ratio[d]
        if ar is None or tr is None:
            continue
        words.append(f"{names[big][0].upper() + names[big][1:]} is {share[big]:.0%} of "
                     f"shiftbook's energy, so shiftbook vs {d} is {tr:.2f}x in total; "
                     f"arithmetic alone is {ar:.1f}x"
                     + (f", external memory {ratios[d]['dram']:.2f}x"
                        if ratios[d]["dram"] is not None else "")
                     + (f", on-chip SRAM {ratios[d]['sram']:.2f}x."
                        if ratios[d]["sram"] is not None else "."))
    return {"groups_pj": groups, "share_shiftbook": share, "ratios_by_source": ratios,
            "total_ratio": total_ratio, "largest_source": big, "sentences": words}


def _read_json(path: Path, what: str, flag: str) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{flag} {path}: no such file ({what})") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{flag} {path}: not a readable JSON {what} ({e})") from None


def load_run(path: str | Path, bundle: Any) -> dict[str, Any]:
    """An RTL run of the bundle: the record of `shiftbook simulate --level rtl --json` (a
    file), or a `shiftbook run -o DIR` output (``DIR`` or its ``run.json``: board cycles per
    MARK, no bit-exact check). Returns ``{source, level, cycles, bit_exact, layers: [{name,
    cycles, bit_exact}]}``; a run of another bundle (different layers) is refused."""
    p = Path(path)
    if p.is_dir():
        p = p / "run.json"
    d = _read_json(p, "run record", "--run")
    names = [lay.name for lay in bundle.layers]
    if isinstance(d, dict) and isinstance(d.get("layers"), list) and "level" in d:
        if d["level"] != "rtl":
            raise ValueError(f"--run {path}: a {d['level']} run; the report takes an RTL run "
                             f"(`shiftbook simulate --level rtl --json`)")
        layers = [{"name": r["name"], "cycles": r.get("cycles"), "bit_exact": r["bit_exact"]}
                  for r in d["layers"]]
        source, bit_exact = "simulate --level rtl", bool(d["bit_exact"])
    elif isinstance(d, dict) and isinstance(d.get("marks"), list) and "cycles" in d:
        marks = sorted((int(m["id"]), int(m["cycles"])) for m in d["marks"])
        if [m for m, _ in marks] != list(range(len(names))):
            raise ValueError(f"--run {path}: MARKs {[m for m, _ in marks]} are not the "
                             f"bundle's {len(names)} layers")
        prev, layers = 0, []
        for (i, at) in marks:
            layers.append({"name": names[i], "cycles": at - prev, "bit_exact": None})
            prev = at
        source, bit_exact = "board run", None
    else:
        raise ValueError(f"--run {path}: neither a `shiftbook simulate --json` record nor a "
                         f"`shiftbook run` run.json")
    if [r["name"] for r in layers] != names:
        raise ValueError(f"--run {path}: its layers are not this bundle's ({len(layers)} vs "
                         f"{len(names)}, first {layers[0]['name'] if layers else None!r})")
    cycles = d.get("cycles")
    return {"source": source, "file": str(p), "cycles": cycles, "bit_exact": bit_exact,
            "layers": layers}


def load_build(path: str | Path) -> dict[str, Any]:
    """A board build: ``report.json`` of a `shiftbook build` output directory (or the file):
    board, device, resources used/available, clock, Fmax, whether timing was met."""
    p = Path(path)
    if p.is_dir():
        p = p / "report.json"
    d = _read_json(p, "build report", "--build")
    need = ("board", "resources", "fmax_mhz", "clk_mhz", "timing_met")
    if not isinstance(d, dict) or any(k not in d for k in need):
        raise ValueError(f"--build {path}: not a `shiftbook build` report.json (it needs "
                         f"{', '.join(need)})")
    keep = need + ("device", "family", "config", "bitstream", "seconds")
    out = {k: d.get(k) for k in keep}
    out["file"] = str(p)
    return out


def load_compression(path: str | Path) -> dict[str, Any]:
    """The summary `shiftbook compress --json FILE` wrote (method, sizes, accuracy): the
    bundle's manifest keeps nothing of the compression, so the report takes it from there."""
    d = _read_json(Path(path), "compression summary", "--compression")
    if not isinstance(d, dict) or "method" not in d:
        raise ValueError(f"--compression {path}: not a `shiftbook compress --json` summary "
                         f"(no 'method')")
    return d
