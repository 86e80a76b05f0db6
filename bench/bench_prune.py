"""OICSR structured pruning versus L1 filter pruning on ResNet-8 / digits, at the same cycle
budgets on the ``small`` core (issue #14).

For every seed a float ResNet-8 is trained, then pruned by OICSR (regularised, iterative,
distilled) and by the L1 filter baseline (Li et al.: uniform per-block ratio by filter L1 norm,
the same distilled fine-tuning) to each target (default 25% and 50% fewer estimated cycles).
Rows: accuracy drop of the pruned float model vs float (mean and worst over the seeds),
estimated cycles (per-layer cycle model) and the compiled network's cycles (seed 0: the pruned
checkpoint compiled, ``shiftbook.timing.estimate`` of the bundle, equal to the RTL; with
``--rtl`` one model also runs in the Verilator core to confirm), weight bytes. Targets: at 25%
fewer cycles within 1 point of float; OICSR at least as accurate as L1 at every budget (mean).
Plus one row: seed 0's OICSR model then PQ (or ``--then deepshift-q``): size, cycles, accuracy.
Writes bench/out/prune.json.

    .venv/bin/python bench/bench_prune.py [--seeds 0 1 2] [--targets 0.25 0.5] \
        [--baseline-epochs 12] [--epochs 2] [--final-epochs 3] [--iters 3] [--rtl]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from shiftbook.config import load_config
from shiftbook.sw.compress import CompressOptions, compress, model_size, save_compressed
from shiftbook.sw.compress.oicsr import PruneOptions, prune_model
from shiftbook.sw.compress.prune import CostModel, inner_widths
from shiftbook.sw.data import digits_loaders
from shiftbook.sw.models import build_model, save_checkpoint
from shiftbook.sw.train import TrainConfig, evaluate, train

ARGS = {"num_classes": 10, "in_channels": 1}
OUT = Path(__file__).parent / "out" / "prune.json"


def compiled_cycles(model: torch.nn.Module | str, cfg: str, tmp: Path, tag: str,
                    rtl: bool = False) -> dict[str, Any]:
    """Compile a (pruned) float ResNet-8 checkpoint: the bundle's cycle-model total (and the
    RTL's with ``rtl``)."""
    from shiftbook import flow
    from shiftbook.sw.bundle import load_bundle
    from shiftbook.timing import estimate

    if isinstance(model, str):
        path = model
    else:
        path = str(tmp / f"{tag}.pt")
        save_checkpoint(path, model, name="resnet8",
                        model_args={**ARGS, "inner_widths": inner_widths(model)})
    out = tmp / f"{tag}.bundle"
    flow.compile(path, config=cfg, calib=4, output=out, force=True)
    rec: dict[str, Any] = {"estimate": estimate(load_bundle(out)).total}
    if rtl:
        from shiftbook.sim.network import simulate_bundle

        r = simulate_bundle(out, "rtl").record
        rec.update(rtl=int(r["cycles"]), rtl_bit_exact=bool(r["bit_exact"]))
    return rec


def run_seed(seed: int, a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    cfg = load_config(a.config)
    torch.manual_seed(seed)
    tr, te = digits_loaders(batch_size=64, size=32, channels=1, seed=seed)
    m = build_model("resnet8", seed=seed, **ARGS)
    train(m, tr, TrainConfig(epochs=a.baseline_epochs, lr=0.05, progress=False))
    m.eval()
    float_acc = evaluate(m, te)
    cost = CostModel(m, cfg, (1, 32, 32), "cycles")
    rec: dict[str, Any] = {"seed": seed, "float_acc": float_acc,
                           "float_cycles_est": cost.cost(cost.base_widths), "runs": {}}
    if seed == a.seeds[0]:
        rec["float_compiled"] = compiled_cycles(m, a.config, tmp, f"float{seed}")
    for target in a.targets:
        for method in ("oicsr", "l1"):
            t0 = time.time()
            opts = PruneOptions(target=target, lam=a.lam, iters=a.iters, epochs=a.epochs,
                                final_epochs=a.final_epochs, progress=False)
            res = prune_model(m, tr, te, cfg, opts, method=method)
            r = res.report
            row = {"widths": res.widths, "acc": r["pruned_acc"],
                   "drop": float_acc - r["pruned_acc"], "cycles_est": r["cost_after"],
                   "cycles_cut": 1 - r["cost_after"] / r["cost_before"],
                   "weight_bytes": r["totals"]["weight_bytes"][1],
                   "seconds": round(time.time() - t0, 1)}
            if seed == a.seeds[0]:
                rtl = a.rtl and method == "oicsr" and target == a.targets[0]
                row["compiled"] = compiled_cycles(res.model, a.config, tmp,
                                                  f"{method}{target}s{seed}", rtl)
                if method == "oicsr" and target == a.targets[0]:
                    rec["then_row"] = then_row(res.model, tr, te, a, tmp, float_acc)
            rec["runs"][f"{method} {target:g}"] = row
            print(f"seed {seed} {method} {target:g}: widths {res.widths} acc "
                  f"{row['acc']:.2f} (drop {row['drop']:.2f}) cycles cut "
                  f"{100 * row['cycles_cut']:.1f}%", flush=True)
    return rec


def then_row(model: torch.nn.Module, tr: Any, te: Any, a: argparse.Namespace, tmp: Path,
             float_acc: float) -> dict[str, Any]:
    """The pruned model then ``a.then`` (pq or deepshift-q): size, cycles, accuracy."""
    opts = CompressOptions(epochs=a.then_epochs, progress=False, max_k=256, max_d=18)
    if a.then == "pq":
        opts.global_ft_epochs = opts.shift_ft_epochs = a.then_epochs
    widths = inner_widths(model)
    cm = compress(model, a.then, tr, te, opts, model_name="resnet8",
                  model_args={**ARGS, "inner_widths": widths})
    size = model_size(cm)
    path = tmp / "then.pt"
    save_compressed(path, cm)
    return {"method": f"oicsr+{a.then}", "widths": widths, "acc": cm.meta["acc"],
            "drop": float_acc - cm.meta["acc"], "paper_bytes": size.paper_bytes,
            "ratio": size.ratio, "hw_bytes": size.hw_bytes,
            "compiled": compiled_cycles(str(path), a.config, tmp, "then")}


def summarise(seeds: list[dict[str, Any]], targets: list[float]) -> dict[str, Any]:
    rows = {}
    for key in seeds[0]["runs"]:
        v = [s["runs"][key] for s in seeds]
        rows[key] = {"drop_mean": statistics.mean(r["drop"] for r in v),
                     "drop_worst": max(r["drop"] for r in v),
                     "acc_mean": statistics.mean(r["acc"] for r in v),
                     "cycles_cut_mean": statistics.mean(r["cycles_cut"] for r in v),
                     "weight_bytes_mean": statistics.mean(r["weight_bytes"] for r in v)}
    t0 = f"oicsr {targets[0]:g}"
    checks = {f"oicsr {targets[0]:g} within 1 point of float": rows[t0]["drop_mean"] <= 1.0}
    for t in targets:
        checks[f"oicsr >= l1 at {t:g}"] = (rows[f"oicsr {t:g}"]["acc_mean"]
                                           >= rows[f"l1 {t:g}"]["acc_mean"])
    return {"rows": rows, "targets_met": checks}


def print_table(summary: dict[str, Any], seed0: dict[str, Any]) -> None:
    print(f"{'run':<12} {'drop mean':>9} {'worst':>6} {'cycles cut':>10} {'compiled':>9} "
          f"{'RTL':>8} {'bytes':>7}")
    fc = seed0["float_compiled"]["estimate"]
    for key, r in summary["rows"].items():
        c = seed0["runs"][key].get("compiled", {})
        print(f"{key:<12} {r['drop_mean']:>9.2f} {r['drop_worst']:>6.2f} "
              f"{100 * r['cycles_cut_mean']:>9.1f}% {c.get('estimate', 0):>9} "
              f"{c.get('rtl', '-'):>8} {r['weight_bytes_mean']:>7.0f}")
    print(f"float compiled cycles (seed 0): {fc}")
    t = seed0.get("then_row")
    if t:
        print(f"{t['method']}: widths {t['widths']}, {t['paper_bytes'] / 1024:.2f} KiB "
              f"({t['ratio']:.1f}x), hw {t['hw_bytes'] / 1024:.2f} KiB, compiled cycles "
              f"{t['compiled']['estimate']} ({100 * (1 - t['compiled']['estimate'] / fc):.1f}% "
              f"fewer), acc {t['acc']:.2f} (drop {t['drop']:.2f})")
    for k, ok in summary["targets_met"].items():
        print(f"target {k}: {'met' if ok else 'NOT met'}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--targets", type=float, nargs="+", default=[0.25, 0.5])
    p.add_argument("--config", default="small")
    p.add_argument("--baseline-epochs", type=int, default=12)
    p.add_argument("--epochs", type=int, default=PruneOptions.epochs,
                   help="regularised epochs per round (default: the tool's, 2)")
    p.add_argument("--final-epochs", type=int, default=3)
    p.add_argument("--iters", type=int, default=3)
    p.add_argument("--lam", type=float, default=PruneOptions.lam)
    p.add_argument("--then", default="pq", choices=["pq", "deepshift-q"])
    p.add_argument("--then-epochs", type=int, default=2)
    p.add_argument("--rtl", action="store_true", help="confirm one pruned model in RTL")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("-o", "--output", default=str(OUT))
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="bench-prune-") as d:
        seeds = [run_seed(s, a, Path(d)) for s in a.seeds]
    summary = summarise(seeds, a.targets)
    print_table(summary, seeds[0])
    out = {"bench": "prune", "model": "resnet8", "data": "digits", "config": a.config,
           "options": {k: v for k, v in vars(a).items() if k != "output"},
           "seeds": seeds, **summary, "seconds": round(time.time() - t0, 1)}
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {a.output}")
    return 0 if all(summary["targets_met"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
