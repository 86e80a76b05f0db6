"""A bundle's report: per-layer table (weight format, bits per weight, modelled and RTL cycles,
bit-exact status, utilization, bytes by memory level), energy per inference (shiftbook vs int8
MAC vs fp32, by source, the ratios explained), a roofline view, and with the optional inputs
resources/Fmax of a board build and the compression summary; written as ``report.html``
(Jinja2 template, :mod:`.report_html`) + SVG plots (:mod:`.report_plots`) + ``report.json``
(every figure) into a directory, atomically. The figures themselves: :mod:`.report_figures`."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from shiftbook.outputs import check_output_dir, publish_dir
from shiftbook.sw.estimate import report_figures as fig
from shiftbook.sw.estimate.energy import DESIGNS


class ReportError(ValueError):
    """A bundle the report cannot be made for, or an output directory it cannot write."""


def build_record(bundle_path: str | Path, energy_table: str | Path | None = None, *,
                 run: str | Path | None = None, build: str | Path | None = None,
                 compression: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """Every figure of the report as one JSON-able record, and the energy comparison text.

    ``run``: an RTL run of the bundle (`shiftbook simulate --level rtl --json` output, or a
    `shiftbook run -o` directory / run.json) for the RTL cycles and bit-exact columns;
    ``build``: a `shiftbook build` output (directory or report.json) for resources and Fmax;
    ``compression``: the `shiftbook compress --json` summary of the model (the manifest keeps
    nothing of the compression) for its sizes and accuracy."""
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
    try:
        rtl = None if run is None else fig.load_run(run, bundle)
        brep = None if build is None else fig.load_build(build)
        comp = None if compression is None else fig.load_compression(compression)
    except ValueError as e:
        raise ReportError(str(e)) from None
    cyc = estimate_record(bdir)
    events = events_from_bundle(bundle)
    en = network_energy(events, load_table(energy_table))
    total = int(cyc["total"]["model"])
    ideal = int(cyc["ideal_cycles"])
    rows = fig.layer_table(bundle, cyc["layers"], events, rtl)
    weights = [{"name": r["name"], "weight_bytes": r["weight_bytes"],
                "bias_bytes": r["bias_bytes"], "format": r["format"],
                "bits_per_weight": r["bits_per_weight"]} for r in rows]
    edict = en.to_dict()
    rec: dict[str, Any] = {
        "bundle": cyc["bundle"], "config": cyc["config"], "config_hash": cyc["config_hash"],
        "cycles": {"total": total, "ideal": ideal,
                   "utilization": round(ideal / total, 4) if total else None,
                   "layers": cyc["layers"], "approximate": cyc["approximate"]},
        "layers": rows,
        "memory": fig.memory_totals(rows),
        "roofline": fig.roofline(bundle.config, rows),
        "energy": edict,
        "energy_per_inference_pj": dict(en.totals),
        "energy_explained": fig.energy_explained(edict),
        "weights": {"layers": weights,
                    "total_weight_bytes": sum(w["weight_bytes"] for w in weights),
                    "total_bias_bytes": sum(w["bias_bytes"] for w in weights)},
        "rtl": rtl, "build": brep, "compression": comp,
        "plots": [],
    }
    return rec, format_comparison(en)


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
    lines += rec.get("energy_explained", {}).get("sentences", [])
    bound = rec.get("roofline", {}).get("memory_bound")
    if bound is not None:
        lines.append(f"memory-bound layers: {', '.join(bound) if bound else 'none'}")
    if rec.get("rtl"):
        r = rec["rtl"]
        be = {None: "not checked", True: "yes", False: "NO"}[r["bit_exact"]]
        lines.append(f"RTL cycles {r['cycles']} ({r['source']}), bit-exact {be}")
    if rec.get("build"):
        b = rec["build"]
        lines.append(f"build {b['board']}: Fmax {b['fmax_mhz']:.2f} MHz at "
                     f"{b['clk_mhz']:.2f} MHz")
    if rec.get("compression"):
        cp = rec["compression"]
        def pct(v: Any) -> str:
            return f"{v:.2f}%" if isinstance(v, int | float) else "n/a"

        lines.append(f"compression {cp['method']}: accuracy {pct(cp.get('float_acc'))} float "
                     f"-> {pct(cp.get('acc'))} compressed")
    return "\n".join(lines)


def write_report(bundle_path: str | Path, out_dir: str | Path,
                 energy_table: str | Path | None = None, *, force: bool = False,
                 run: str | Path | None = None, build: str | Path | None = None,
                 compression: str | Path | None = None) -> tuple[dict[str, Any], str]:
    """Writes ``report.html``, ``report.json`` and the SVG plots into ``out_dir`` (replaced as
    a whole: built in a temp directory beside it, then renamed; only a report or an empty
    directory is replaced unless ``force``). Nothing is written on error. ``run``, ``build``,
    ``compression``: optional inputs, as :func:`build_record`."""
    from shiftbook.sw.estimate.report_html import render_html
    from shiftbook.sw.estimate.report_plots import write_plots

    check_output_dir(out_dir, "report", force=force)
    rec, comparison = build_record(bundle_path, energy_table, run=run, build=build,
                                   compression=compression)
    out = Path(out_dir)
    parent = out.resolve().parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=parent))
    except OSError as e:
        raise ReportError(f"cannot write {out_dir}: {e.strerror or e}") from None
    try:
        os.chmod(tmp, 0o755)
        rec["plots"] = write_plots(rec, tmp)
        (tmp / "report.json").write_text(json.dumps(rec, indent=2) + "\n")
        (tmp / "report.html").write_text(render_html(rec))
        publish_dir(tmp, parent / out.name, "report", force=force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return rec, comparison
