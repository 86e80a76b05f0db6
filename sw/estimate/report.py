"""A bundle's report: cycles and utilization (cycle model), energy per inference (shiftbook vs
int8 MAC vs fp32, by event category and per layer), weight bytes per layer; written as
``report.html`` + PNG plots + ``report.json`` into a directory, atomically."""

from __future__ import annotations

import html
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shiftbook.outputs import check_output_dir, publish_dir
from shiftbook.sw.estimate.energy import DESIGNS


class ReportError(ValueError):
    """A bundle the report cannot be made for, or an output directory it cannot write."""


def build_record(bundle_path: str | Path, energy_table: str | Path | None = None
                 ) -> tuple[dict[str, Any], str]:
    """Every figure of the report as one JSON-able record, and the energy comparison text."""
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.sw.estimate.energy import (
        events_from_bundle,
        format_comparison,
        load_table,
        network_energy,
    )
    from shiftbook.sw.estimate.record import estimate_record

    path = Path(bundle_path)
    if not path.exists():
        raise ReportError(f"bundle {bundle_path} does not exist")
    bdir = path.parent if path.is_file() else path
    bundle = load_bundle(bdir)
    cyc = estimate_record(bdir)
    table = load_table(energy_table)
    en = network_energy(events_from_bundle(bundle), table)
    total = int(cyc["total"]["model"])
    ideal = int(cyc["ideal_cycles"])
    weights = [{"name": lay.name, "weight_bytes": lay.weight_bytes,
                "bias_bytes": lay.bias_bytes,
                "format": ("codebook" if lay.weights.is_codebook else "raw")
                if lay.op in ("conv2d", "linear") else None} for lay in bundle.layers]
    rec: dict[str, Any] = {
        "bundle": cyc["bundle"], "config": cyc["config"], "config_hash": cyc["config_hash"],
        "cycles": {"total": total, "ideal": ideal,
                   "utilization": round(ideal / total, 4) if total else None,
                   "layers": cyc["layers"], "approximate": cyc["approximate"]},
        "energy": en.to_dict(),
        "energy_per_inference_pj": dict(en.totals),
        "weights": {"layers": weights,
                    "total_weight_bytes": sum(w["weight_bytes"] for w in weights),
                    "total_bias_bytes": sum(w["bias_bytes"] for w in weights)},
        "plots": [],
    }
    return rec, format_comparison(en)


def _plots(rec: dict[str, Any], d: Path) -> list[dict[str, str]]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out: list[dict[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.tight_layout()
        fig.savefig(d / name, dpi=90)
        plt.close(fig)
        out.append({"file": name, "title": title})

    lays = rec["cycles"]["layers"]
    names = [lay["name"] for lay in lays]
    x = list(range(len(names)))
    w = max(6.0, 0.35 * len(names) + 2)

    fig, ax = plt.subplots(figsize=(w, 4))
    ax.bar(x, [lay["model"] for lay in lays], label="model cycles")
    ax.bar(x, [lay["ideal"] or 0 for lay in lays], width=0.4, label="ideal (MACs / PEs)")
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("cycles")
    ax.legend()
    save(fig, "cycles.png", "Cycles per layer (cycle model)")

    fig, ax = plt.subplots(figsize=(w, 3.5))
    ax.bar(x, [lay["utilization"] or 0 for lay in lays], color="tab:green")
    ax.set_ylim(0, 1)
    ax.set_xticks(x, names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("PE utilization")
    save(fig, "utilization.png", "PE-array utilization per layer")

    en = rec["energy"]
    cats = sorted({k for dname in DESIGNS for k in en["breakdown"][dname]})
    fig, ax = plt.subplots(figsize=(7, 4))
    bottom = [0.0] * len(DESIGNS)
    for c in cats:
        vals = [en["breakdown"][dname].get(c, 0.0) / 1e6 for dname in DESIGNS]
        ax.bar(list(DESIGNS), vals, bottom=bottom, label=c)
        bottom = [b + v for b, v in zip(bottom, vals, strict=True)]
    ax.set_ylabel("energy per inference (uJ)")
    ax.legend(fontsize=7)
    save(fig, "energy_breakdown.png", "Energy per inference by event category")

    elays = en["layers"]
    ex = list(range(len(elays)))
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(elays) + 2), 4))
    bw = 0.8 / len(DESIGNS)
    for i, dname in enumerate(DESIGNS):
        ax.bar([v + i * bw for v in ex], [sum(lay[dname].values()) / 1e6 for lay in elays],
               width=bw, label=dname)
    ax.set_xticks([v + 0.4 - bw / 2 for v in ex], [lay["name"] for lay in elays],
                  rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("energy (uJ)")
    ax.legend()
    save(fig, "energy_layers.png", "Energy per layer")

    wl = rec["weights"]["layers"]
    fig, ax = plt.subplots(figsize=(max(6.0, 0.35 * len(wl) + 2), 3.5))
    ax.bar(range(len(wl)), [v["weight_bytes"] for v in wl], color="tab:purple")
    ax.set_xticks(range(len(wl)), [v["name"] for v in wl], rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("weight bytes")
    save(fig, "weights.png", "Weight bytes per layer (in the bundle)")
    return out


def summary_text(rec: dict[str, Any]) -> str:
    """The short text summary printed by ``shiftbook report``."""
    c = rec["cycles"]
    e = rec["energy"]
    u = "n/a" if c["utilization"] is None else f"{c['utilization']:.3f}"
    lines = [f"bundle {rec['bundle']}  config {rec['config']} ({rec['config_hash']})",
             f"total cycles {c['total']}  ideal {c['ideal']}  utilization {u}",
             "energy per inference: " + ", ".join(
                 f"{dname} {e['totals'][dname] / 1e6:.4g} uJ" for dname in DESIGNS),
             "ratios vs shiftbook: " + ", ".join(
                 f"{dname} {e['ratios_vs_shiftbook'][dname]:.2f}x" for dname in DESIGNS)]
    return "\n".join(lines)


def _html(rec: dict[str, Any], comparison: str) -> str:
    esc = html.escape
    c = rec["cycles"]

    def util(v: float | None) -> str:
        return "" if v is None else f"{v:.3f}"

    rows = "".join(
        f"<tr><td>{esc(str(lay['name']))}</td><td>{lay['model']}</td>"
        f"<td>{lay['ideal'] if lay['ideal'] is not None else ''}</td>"
        f"<td>{util(lay['utilization'])}</td></tr>" for lay in c["layers"])
    wrows = "".join(f"<tr><td>{esc(w['name'])}</td><td>{w['weight_bytes']}</td>"
                    f"<td>{w['bias_bytes']}</td><td>{esc(str(w['format']))}</td></tr>"
                    for w in rec["weights"]["layers"])
    imgs = "".join(f"<h3>{esc(p['title'])}</h3><img src=\"{esc(p['file'])}\" "
                   f"alt=\"{esc(p['title'])}\">" for p in rec["plots"])
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>shiftbook report</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}"
        "pre{background:#f4f4f4;padding:1em}</style></head><body>\n"
        f"<h1>shiftbook report</h1><pre>{esc(summary_text(rec))}</pre>\n"
        f"<h2>Energy per inference</h2><pre>{esc(comparison)}</pre>\n"
        "<h2>Cycles (cycle model)</h2><table><tr><th>layer</th><th>cycles</th><th>ideal</th>"
        f"<th>util</th></tr>{rows}<tr><th>total</th><th>{c['total']}</th>"
        f"<th>{c['ideal']}</th><th></th></tr></table>\n"
        "<h2>Weights</h2><table><tr><th>layer</th><th>weight bytes</th><th>bias bytes</th>"
        f"<th>format</th></tr>{wrows}</table>\n<h2>Plots</h2>{imgs}\n</body></html>\n")


def write_report(bundle_path: str | Path, out_dir: str | Path,
                 energy_table: str | Path | None = None, *,
                 force: bool = False) -> tuple[dict[str, Any], str]:
    """Writes ``report.html``, ``report.json`` and the PNGs into ``out_dir`` (replaced as a
    whole: built in a temp directory beside it, then renamed; only a report or an empty
    directory is replaced unless ``force``). Nothing is written on error."""
    check_output_dir(out_dir, "report", force=force)
    rec, comparison = build_record(bundle_path, energy_table)
    out = Path(out_dir)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise ReportError(f"cannot write {out_dir}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o755)
        rec["plots"] = _plots(rec, tmp)
        (tmp / "report.json").write_text(json.dumps(rec, indent=2) + "\n")
        (tmp / "report.html").write_text(_html(rec, comparison))
        publish_dir(tmp, parent / out.name, "report", force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rec, comparison
