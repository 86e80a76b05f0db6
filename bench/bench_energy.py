"""Energy per inference of ResNet-20 (32x32) compiled for a core preset: shiftbook vs int8
MAC vs fp32 as ratios, with the per-event table beside them; writes bench/out/energy.json.

Two shiftbook rows: raw shift codes (seeded random weights, one byte per code) and a
product-quantized twin (``shiftbook compress --method pq`` with the preset's k and d, no
fine-tuning: the formats decide the energy, not the accuracy), whose packed indices and
codebooks are what its program loads. int8 and fp32 are costed on the raw schedule.

    .venv/bin/python bench/bench_energy.py [--config small] [--energy-table YAML] [--no-pq]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "bench_energy"
OUT = ROOT / "bench" / "out" / "energy.json"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--config", default="small")
    ap.add_argument("--energy-table", default=None, metavar="YAML")
    ap.add_argument("-o", "--output", default=str(OUT))
    ap.add_argument("--no-pq", action="store_true", help="skip the pq-compressed twin")
    args = ap.parse_args(argv)

    from shiftbook.cli import main as cli
    from shiftbook.sw.estimate.report import build_record, summary_text

    bundle = BUILD / f"resnet20_{args.config}"
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli(["compile", "resnet20", "--config", args.config, "-o", str(bundle)])
    if rc:
        print(f"compile failed (exit {rc})", file=sys.stderr)
        return rc
    rec, comparison = build_record(bundle, args.energy_table)
    e = rec["energy"]
    left = comparison.split("\n\n", 1)
    cmp_lines = left[0].splitlines()
    tab_lines = left[1].splitlines() if len(left) > 1 else []
    wl = max(len(s) for s in cmp_lines)
    print(f"ResNet-20 (32x32), config {rec['config']}: energy per inference")
    for i in range(max(len(cmp_lines), len(tab_lines))):
        a = cmp_lines[i] if i < len(cmp_lines) else ""
        b = tab_lines[i] if i < len(tab_lines) else ""
        print(f"{a:{wl}s}   | {b}")
    print()
    print(summary_text(rec))
    pq = None if args.no_pq else _pq_row(args.config, args.energy_table, rec)
    res = {"network": "resnet20", "input": [3, 32, 32], "config": rec["config"],
           "config_hash": rec["config_hash"], "unit": "pJ",
           "energy_per_inference": e["totals"], "ratios_vs_shiftbook": e["ratios_vs_shiftbook"],
           "breakdown": e["breakdown"], "table_source": e["table_source"],
           "table": rec_table(args.energy_table),
           "cycles": {k: rec["cycles"][k] for k in ("total", "ideal", "utilization")},
           "layers": e["layers"]}
    if pq is not None:
        res["pq"] = pq
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


def _pq_bundle(config: str) -> Path:
    """pq ResNet-20 for ``config`` (k = 256 or max_k, preset d up to max_d; seeded
    random weights and data, no fine-tuning), compiled to a bundle."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from shiftbook.cli import main as cli
    from shiftbook.config import load_config
    from shiftbook.sw.compress import CompressOptions, compress, save_compressed
    from shiftbook.sw.models import build_model

    cfg = load_config(config)
    ckpt = BUILD / f"resnet20_pq_{config}.pt"
    bundle = BUILD / f"resnet20_pq_{config}"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (64,), generator=g)
    dl = DataLoader(TensorDataset(x, y), batch_size=32)
    model = build_model("resnet20", num_classes=10, in_channels=3, seed=0)
    opts = CompressOptions(epochs=0, progress=False, bn_batches=1, max_k=cfg.max_k,
                           k=min(256, cfg.max_k), fc_k=min(256, cfg.max_k),
                           max_d=cfg.max_d, n_activations=16, n_rows=1024, em_iters=4,
                           layer_ft_iters=0, global_ft_epochs=0, shift_ft_epochs=0)
    cm = compress(model, "pq", dl, dl, opts, model_name="resnet20",
                  model_args={"num_classes": 10, "in_channels": 3})
    ckpt.parent.mkdir(parents=True, exist_ok=True)
    save_compressed(ckpt, cm)
    with contextlib.redirect_stdout(io.StringIO()):
        rc = cli(["compile", str(ckpt), "--config", config, "--calib", "4", "-o", str(bundle)])
    if rc:
        raise RuntimeError(f"compiling the pq ResNet-20 failed (exit {rc})")
    return bundle


def _pq_row(config: str, energy_table: str | None, raw: dict) -> dict:
    """The pq twin beside the raw-code network: totals by category for shiftbook-pq,
    shiftbook-shift, int8 and fp32, and the weight bytes each moves."""
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.sw.estimate.energy import events_from_bundle
    from shiftbook.sw.estimate.report import build_record

    bundle = _pq_bundle(config)
    rec, _ = build_record(bundle, energy_table)
    ev_pq = events_from_bundle(load_bundle(bundle))
    ev_raw = events_from_bundle(load_bundle(BUILD / f"resnet20_{config}"))
    cols = {"shiftbook-pq": rec["energy"]["breakdown"]["shiftbook"],
            "shiftbook-shift": raw["energy"]["breakdown"]["shiftbook"],
            "int8": raw["energy"]["breakdown"]["int8"],
            "fp32": raw["energy"]["breakdown"]["fp32"]}
    totals = {k: sum(v.values()) for k, v in cols.items()}
    cats = sorted({c for v in cols.values() for c in v},
                  key=lambda k: (k != "arith", k != "codebook", k == "dram", k))
    unit, f = ("uJ", 1e6)
    print()
    print(f"ResNet-20 (32x32), config {rec['config']}: pq codebooks vs raw shift codes "
          f"vs int8 vs fp32 (energy in {unit})")
    print(f"{'':14s}" + "".join(f"{k:>16s}" for k in cols))
    for c in cats:
        print(f"{c:14s}" + "".join(f"{cols[k].get(c, 0.0) / f:16.4g}" for k in cols))
    print(f"{'total':14s}" + "".join(f"{totals[k] / f:16.4g}" for k in cols))
    base = totals["shiftbook-pq"]
    print(f"{'x pq':14s}" + "".join(f"{totals[k] / base:15.2f}x" for k in cols))
    wb = {"shiftbook-pq": sum(e["ext_weight_bytes"] for e in ev_pq),
          "shiftbook-shift": sum(e["ext_weight_bytes"] for e in ev_raw),
          "int8": sum(e["ext_dense_weight_bytes"] for e in ev_raw),
          "fp32": 4 * sum(e["ext_dense_weight_bytes"] for e in ev_raw)}
    print(f"{'weight bytes':14s}" + "".join(f"{wb[k]:16d}" for k in cols))
    n_cb = sum(1 for e in ev_pq if "codebook_reads" in e)
    print(f"({n_cb} of {len(ev_pq)} layers codebook; weight bytes: LOAD WGT + LOAD CB words "
          f"of the program, every reload)")
    if abs(rec["energy"]["totals"]["int8"] - raw["energy"]["totals"]["int8"]) > \
            1e-6 * raw["energy"]["totals"]["int8"]:
        print("note: the pq bundle's int8 baseline differs from the raw one's "
              f"({rec['energy']['totals']['int8']:.4g} pJ): its schedule differs")
    return {"unit": "pJ", "totals": totals, "breakdown": cols,
            "ratios_vs_pq": {k: totals[k] / base for k in cols},
            "ext_weight_bytes": wb, "codebook_layers": n_cb, "layers": len(ev_pq),
            "cycles": {k: rec["cycles"][k] for k in ("total", "ideal", "utilization")},
            "per_layer": rec["energy"]["layers"]}


def rec_table(override: str | None) -> dict:
    from shiftbook.sw.estimate.energy import load_table

    return json.loads(json.dumps(load_table(override).data, default=str))


if __name__ == "__main__":
    sys.exit(main())
