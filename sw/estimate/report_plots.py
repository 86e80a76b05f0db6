"""The report's plots as SVG files (vector: sharp at any width; the page shows them at 100%
width). Wide figures (13 x 4 in) so they fill a 1280 px page, legends above the axes (outside),
so that no legend ever covers a bar."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from shiftbook.sw.estimate.energy import DESIGNS

__all__ = ["write_plots"]

WIDTH_IN = 13.0


def _legend_above(ax: Any, ncol: int) -> None:
    ax.legend(loc="lower left", bbox_to_anchor=(0.0, 1.02), ncol=ncol, fontsize=8,
              frameon=False, borderaxespad=0.0)


def _xlabels(ax: Any, x: list[float], names: list[str]) -> None:
    ax.set_xticks(x, names, rotation=60 if len(names) > 8 else 0,
                  ha="right" if len(names) > 8 else "center", fontsize=8)


def write_plots(rec: dict[str, Any], d: Path) -> list[dict[str, str]]:
    """Write every plot of ``rec`` into ``d``; returns ``[{file, title}]`` in page order."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plt.rcParams["svg.hashsalt"] = "shiftbook"      # stable ids: same record, same file
    out: list[dict[str, str]] = []

    def save(fig: Any, name: str, title: str) -> None:
        fig.savefig(d / name, format="svg", bbox_inches="tight", metadata={"Date": None})
        plt.close(fig)
        out.append({"file": name, "title": title})

    rows = rec["layers"]
    names = [r["name"] for r in rows]
    x = list(range(len(names)))

    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4))
    has_rtl = any(r["rtl_cycles"] is not None for r in rows)
    series = [("modelled cycles", [r["model_cycles"] or 0 for r in rows])]
    if has_rtl:
        series.append(("RTL cycles", [r["rtl_cycles"] or 0 for r in rows]))
    series.append(("ideal (MACs / PEs)", [r["ideal_cycles"] or 0 for r in rows]))
    bw = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        ax.bar([v + (i - (len(series) - 1) / 2) * bw for v in x], vals, width=bw, label=label)
    _xlabels(ax, x, names)
    ax.set_ylabel("cycles")
    _legend_above(ax, 3)
    save(fig, "cycles.svg", "Cycles per layer")

    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3))
    ax.bar(x, [r["utilization"] or 0 for r in rows], color="tab:green")
    ax.set_ylim(0, 1)
    _xlabels(ax, x, names)
    ax.set_ylabel("PE utilization")
    save(fig, "utilization.svg", "PE-array utilization per layer (ideal / modelled cycles)")

    en = rec["energy"]
    cats = sorted({k for dname in DESIGNS for k in en["breakdown"][dname]})
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 3.2))
    left = [0.0] * len(DESIGNS)
    for c in cats:
        vals = [en["breakdown"][dname].get(c, 0.0) / 1e6 for dname in DESIGNS]
        ax.barh(list(DESIGNS), vals, left=left, label=c)
        left = [a + v for a, v in zip(left, vals, strict=True)]
    ax.set_xlabel("energy per inference (uJ)")
    ax.invert_yaxis()
    _legend_above(ax, min(len(cats), 8))
    save(fig, "energy_breakdown.svg", "Energy per inference by source")

    elays = en["layers"]
    ex = list(range(len(elays)))
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4))
    bw = 0.8 / len(DESIGNS)
    for i, dname in enumerate(DESIGNS):
        ax.bar([v + (i - 1) * bw for v in ex], [sum(lay[dname].values()) / 1e6 for lay in elays],
               width=bw, label=dname)
    _xlabels(ax, ex, [lay["name"] for lay in elays])
    ax.set_ylabel("energy (uJ)")
    _legend_above(ax, len(DESIGNS))
    save(fig, "energy_layers.svg", "Energy per layer")

    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4))
    mem = [(r["memory"]["dram"], r["memory"]["sram"]) for r in rows]
    series = [("DRAM weights", [m[0]["weight_bytes"] for m in mem]),
              ("DRAM activations", [m[0]["act_bytes"] for m in mem]),
              ("SRAM weights", [m[1]["weight_bytes"] for m in mem]),
              ("SRAM activations", [m[1]["act_bytes"] for m in mem])]
    bw = 0.8 / len(series)
    for i, (label, vals) in enumerate(series):
        ax.bar([v + (i - 1.5) * bw for v in x], vals, width=bw, label=label)
    ax.set_yscale("symlog", linthresh=1)
    _xlabels(ax, x, names)
    ax.set_ylabel("bytes moved")
    _legend_above(ax, len(series))
    save(fig, "memory.svg", "Weight and activation bytes by memory level")

    _roofline(plt, rec["roofline"], save)
    return out


def _roofline(plt: Any, roof: dict[str, Any], save: Any) -> None:
    """Achieved and attainable shift-adds per cycle against operations per external byte, on
    log axes, with the memory roof (bandwidth x intensity) and the compute roof (the PEs)."""
    lays = roof["layers"]
    fig, ax = plt.subplots(figsize=(WIDTH_IN, 4.5))
    peak, bw, ridge = (roof["peak_ops_per_cycle"], roof["bandwidth_bytes_per_cycle"],
                       roof["ridge_ops_per_byte"])
    xs = [lay["ops_per_byte"] for lay in lays] or [ridge]
    lo, hi = min(min(xs), ridge) / 4, max(max(xs), ridge) * 4
    ax.plot([lo, ridge, hi], [bw * lo, peak, peak], color="black",
            label=f"roof: {bw} B/cycle x intensity, {peak} PEs")
    for bound, color, label in ((True, "tab:red", "memory-bound layer"),
                                (False, "tab:blue", "compute-bound layer")):
        sel = [lay for lay in lays if lay["memory_bound"] == bound]
        if sel:
            ax.scatter([s["ops_per_byte"] for s in sel],
                       [s["achieved_ops_per_cycle"] or 0 for s in sel], color=color,
                       label=label, zorder=3)
            for s in sel if bound else []:     # compute-bound layers crowd the roof
                ax.annotate(s["name"], (s["ops_per_byte"], s["achieved_ops_per_cycle"] or 0),
                            fontsize=7, xytext=(3, 3), textcoords="offset points")
    ax.axvline(ridge, color="gray", linestyle=":", label=f"ridge {ridge:g} ops/byte")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("shift-adds per external byte")
    ax.set_ylabel("shift-adds per cycle (achieved)")
    _legend_above(ax, 4)
    save(fig, "roofline.svg", "Roofline: operations per external byte vs the memory bus")
