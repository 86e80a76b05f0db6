"""Compress a float ResNet-8 trained on the digits data with every method; one table.

Prints method, size (paper accounting), ratio vs fp32, hardware bytes and their ratio, the test
accuracy of the float model with hardware weights and its drop vs float, the accuracy of the
integer network the frontend lowers it to (golden executor, 128 calibration images) and how
many layers kept their codes exactly, and whether each method meets its target (shift methods
within 1 point of float; PQ small blocks >= 15x within 2 points). Rows compress the BN-folded
model (the default); rows marked "BN float" keep BN float (``fold_bn=False``) for comparison.
Each row also reports its clustering time (seconds inside ``kmeans.kmeans`` and
``kmeans.pq_em``, with the number of calls and the summed k-means inertia), the figure the
k-means library choice moves. Writes bench/out/compress.json.

Rows in ``MULTI_SEED`` (issue 16: SLQ in the seed's order and the other, MLQ at k = 16 and
k = 3) run over three seeds (0, 1, 2) and print the mean and the worst accuracy; the other rows
run once (``--seed``) unless ``--seeds`` is given, which applies to every row. A row's seed is
the compression seed and its data order (fresh loaders shuffled with that seed); the float
baseline is trained once, with ``--seed``.

    .venv/bin/python bench/bench_compress.py [--epochs 15] [--threads 1] [--seeds 0 1 2] \
        [--only "kmeans k=16 (slq)"] [--kmeans torch-reference]
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from pathlib import Path

import torch

from shiftbook.sw.compress import CompressOptions, compress, model_size
from shiftbook.sw.compress.int_check import int_accuracy, kept_codes, lower_compressed
from shiftbook.sw.data import digits_loaders, load_digits
from shiftbook.sw.models import build_model
from shiftbook.sw.train import TrainConfig, evaluate, train

# name -> (method, options, target)   target: ("drop", 1.0) | ("pq", 15.0, 2.0) | None
RUNS = {
    "deepshift-q log": ("deepshift-q", dict(epochs=4, rounding="log"), ("drop", 1.0)),
    "deepshift-q log BN float": ("deepshift-q", dict(epochs=4, rounding="log", fold_bn=False),
                                 None),
    "deepshift-q linear": ("deepshift-q", dict(epochs=4, rounding="linear"), ("drop", 1.0)),
    "deepshift-ps": ("deepshift-ps", dict(epochs=8), ("drop", 1.0)),
    "inq": ("inq", dict(epochs=2), ("drop", 1.0)),
    "kmeans k=16 (slq)": ("kmeans", dict(k=16, epochs=1), None),
    "slq (seed order)": ("kmeans", dict(k=16, epochs=3, order="loss-desc"), None),
    "slq (other order)": ("kmeans", dict(k=16, epochs=3, order="loss-asc"), None),
    "mlq k=16": ("mlq", dict(k=16, epochs=1), None),
    "mlq k=3": ("mlq", dict(k=3, epochs=1), None),
    "mlq k=3, 2 epochs": ("mlq", dict(k=3, epochs=2), None),
    "pq small": ("pq", dict(preset="small", target_ratio=15.0), ("pq", 15.0, 2.0)),
    "pq small BN float": ("pq", dict(preset="small", target_ratio=15.0, fold_bn=False), None),
    "pq small (paper k)": ("pq", dict(preset="small"), None),
    "pq large": ("pq", dict(preset="large"), None),
    "pq small k<=64": ("pq", dict(preset="small", k=64), None),
}

# ``order`` is not a CompressOptions field: SLQ's partition order is fixed to the seed's
# (larger loss first, ``slq.ORDER``); the bench sets ``slq.ORDER`` for the comparison row.

#: rows that run over three seeds by default (mean and worst printed)
MULTI_SEED = {"slq (seed order)", "slq (other order)", "mlq k=16", "mlq k=3",
              "mlq k=3, 2 epochs"}
DEFAULT_SEEDS = (0, 1, 2)


# the modules themselves (the package re-exports functions of the same names)
slq_mod = importlib.import_module("shiftbook.sw.compress.slq")
pq_mod = importlib.import_module("shiftbook.sw.compress.pq")


def torch_reference_kmeans(x: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0,
                           eps: float = 1e-8, init: torch.Tensor | None = None):
    """The hand-written torch k-means shiftbook used before scikit-learn (k random distinct rows,
    Lloyd iterations, the paper's empty-cluster split): the baseline of ``--kmeans
    torch-reference``, the library change's before/after (issue 18)."""
    km = importlib.import_module("shiftbook.sw.compress.kmeans")
    x = x.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    c = x[torch.randperm(x.shape[0], generator=gen)[:k]].clone() if init is None \
        else init.to(torch.float64).clone()
    a = km.assign(x, c)
    for _ in range(iters):
        c, a, _ = km.split_empty(x, c, a, eps, gen)
        c_new = km._means(x, a, c)
        a_new = km.assign(x, c_new)
        done = torch.equal(a_new, a) and torch.equal(c_new, c)
        c, a = c_new, a_new
        if done:
            break
    c, a, _ = km.split_empty(x, c, a, eps, gen)
    return c, a


class ClusterClock:
    """Wraps the compressors' k-means entry points (``slq.kmeans``, ``pq.pq_em``) to sum the
    seconds spent clustering, the calls and the plain k-means inertia (sum of squared
    distances to the assigned centroid) of a row."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0
        self.inertia = 0.0
        self._orig = (slq_mod.kmeans, pq_mod.pq_em)
        slq_mod.kmeans = self._timed(self._orig[0], inertia=True)
        pq_mod.pq_em = self._timed(self._orig[1], inertia=False)

    def _timed(self, fn, *, inertia: bool):
        def wrapper(x, k, *a, **kw):
            t = time.perf_counter()
            out = fn(x, k, *a, **kw)
            self.seconds += time.perf_counter() - t
            self.calls += 1
            if inertia:
                c, lab = out[0], out[1]
                xx = x.to(torch.float64)
                self.inertia += float(((xx - c.to(torch.float64)[lab]) ** 2).sum())
            return out
        return wrapper

    def reset(self) -> None:
        self.seconds, self.calls, self.inertia = 0.0, 0, 0.0


def compress_row(model, float_acc: float, data, model_args: dict, clock: ClusterClock,
                 method: str, kw: dict, target, seed: int, calib: int) -> dict:
    """One row at one seed: compress (fresh loaders shuffled with ``seed``), size, integer
    lowering and accuracy; the figures of the table."""
    t = time.time()
    # fresh loaders per row: a row's shuffles do not depend on which rows ran before it
    train_loader, test_loader = digits_loaders(batch_size=64, seed=seed)
    clock.reset()
    kw = dict(kw)
    order = kw.pop("order", slq_mod.ORDER)
    saved, slq_mod.ORDER = slq_mod.ORDER, order
    try:
        cm = compress(model, method, train_loader, test_loader,
                      CompressOptions(seed=seed, **kw), model_name="resnet8",
                      model_args=model_args)
    finally:
        slq_mod.ORDER = saved
    sz = model_size(cm)
    drop = float_acc - cm.meta["acc"]
    t_int = time.time()
    low = lower_compressed(cm, data.x_train[:calib])
    kept = kept_codes(cm, low)
    int_acc = int_accuracy(low, data.x_test, data.y_test)
    t_int = time.time() - t_int
    ok = None
    if target and target[0] == "drop":
        ok = "met" if drop <= target[1] else "MISSED"
    elif target and target[0] == "pq":
        ok = "met" if sz.ratio >= target[1] and drop <= target[2] else "MISSED"
    return {"seed": seed, "slq_order": order if method in ("kmeans", "mlq") else None,
            "paper_bytes": sz.paper_bytes, "ratio": sz.ratio,
            "hw_bytes": sz.hw_bytes, "hw_ratio": sz.hw_ratio, "acc": cm.meta["acc"],
            "drop": drop, "int_acc": int_acc, "int_drop": float_acc - int_acc,
            "codes_kept": kept.kept, "layers": kept.layers,
            "codebooks_kept": kept.codebooks_kept, "codebooks": kept.codebooks,
            "not_kept": kept.lost, "frontend_notes": kept.notes,
            "bn_folded": bool(cm.meta.get("bn_folded")),
            "k": {n: f.k for n, f in cm.formats.items() if hasattr(f, "k")},
            "values": {n: int(torch.unique(cm.model.get_submodule(n).weight).numel())
                       for n in cm.formats},
            "seconds": round(time.time() - t, 1), "int_seconds": round(t_int, 1),
            "cluster_seconds": round(clock.seconds, 3), "cluster_calls": clock.calls,
            "kmeans_inertia": clock.inertia,
            "target_met": ok, "steps": cm.meta["steps"]}


def merge_seeds(name: str, runs: list[dict], float_acc: float) -> dict:
    """A row over its seeds: the first run's sizes, the mean accuracies (``acc``, ``int_acc``,
    ``drop``, ``int_drop``: what the single-seed rows report) and the worst (``acc_worst``,
    ``int_acc_worst``); a target counts as met only if every seed met it; per-seed records in
    ``runs``."""
    row = {"method": name, **{k: v for k, v in runs[0].items() if k != "seed"}}
    n = len(runs)
    for key in ("acc", "int_acc"):
        vals = [r[key] for r in runs]
        row[key] = sum(vals) / n
        row[f"{key}_worst"] = min(vals)
        row[f"{key}_per_seed"] = vals
    row["drop"] = float_acc - row["acc"]
    row["int_drop"] = float_acc - row["int_acc"]
    row["codes_kept"] = min(r["codes_kept"] for r in runs)
    row["seconds"] = round(sum(r["seconds"] for r in runs), 1)
    row["cluster_seconds"] = round(sum(r["cluster_seconds"] for r in runs), 3)
    row["cluster_calls"] = sum(r["cluster_calls"] for r in runs)
    row["kmeans_inertia"] = sum(r["kmeans_inertia"] for r in runs)
    mets = [r["target_met"] for r in runs]
    row["target_met"] = None if mets[0] is None else (
        "met" if all(m == "met" for m in mets) else "MISSED")
    row["seeds"] = [r["seed"] for r in runs]
    if n > 1:
        row["runs"] = runs
        row.pop("steps", None)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15, help="float baseline epochs")
    ap.add_argument("--threads", type=int, default=1, help="torch threads (1 is best when "
                    "the machine is shared)")
    ap.add_argument("--seed", type=int, default=0,
                    help="float baseline seed, and the seed of the single-seed rows")
    ap.add_argument("--seeds", type=int, nargs="+", metavar="S",
                    help="run every row over these seeds (mean and worst); default: "
                         f"{' '.join(map(str, DEFAULT_SEEDS))} for the rows "
                         f"{', '.join(sorted(MULTI_SEED))}, --seed for the others")
    ap.add_argument("--only", nargs="*", help="run only these rows (names as in the table)")
    ap.add_argument("--kmeans", choices=["sklearn", "torch-reference"], default="sklearn",
                    help="the scalar k-means SLQ/MLQ call: shiftbook's (scikit-learn) or the "
                         "former hand-written torch one, for the before/after comparison")
    ap.add_argument("--calib", type=int, default=128,
                    help="calibration images (training set) for the integer lowering")
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "compress.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.kmeans == "torch-reference":
        slq_mod.kmeans = torch_reference_kmeans     # before ClusterClock wraps it
    unknown = sorted(set(args.only or ()) - set(RUNS))
    if unknown:
        ap.error(f"unknown rows {unknown} (rows: {', '.join(RUNS)})")
    train_loader, test_loader = digits_loaders(batch_size=64, seed=args.seed)
    data = load_digits()
    model_args = {"num_classes": 10, "in_channels": 1}
    model = build_model("resnet8", seed=args.seed, **model_args)
    t0 = time.time()
    train(model, train_loader, TrainConfig(epochs=args.epochs, lr=0.05, desc="float"))
    t_float = time.time() - t0
    model.eval()
    float_acc = evaluate(model, test_loader)
    fp32 = 4.0 * sum(p.numel() for p in model.parameters())
    print(f"float ResNet-8 on digits: {float_acc:.2f}% after {args.epochs} epochs "
          f"({t_float:.1f} s), fp32 size {fp32 / 1024:.2f} KiB", flush=True)
    rows = []
    clock = ClusterClock()
    for name, (method, kw, target) in RUNS.items():
        if args.only and name not in args.only:
            continue
        seeds = args.seeds or (DEFAULT_SEEDS if name in MULTI_SEED else (args.seed,))
        runs = []
        for seed in seeds:
            r = compress_row(model, float_acc, data, model_args, clock, method, kw, target,
                             seed, args.calib)
            runs.append(r)
            print(f"  {name} seed {seed}: {r['acc']:.2f}%, integer {r['int_acc']:.2f}%, codes "
                  f"kept {r['codes_kept']}/{r['layers']} ({r['seconds']} s, clustering "
                  f"{r['cluster_seconds']:.2f} s in {r['cluster_calls']} calls); steps: " +
                  ", ".join(f"{s['step']} {s['acc']:.1f}" for s in r["steps"]), flush=True)
        rows.append(merge_seeds(name, runs, float_acc))
    hdr = (f"{'method':<26} {'size KiB':>9} {'ratio':>7} {'hw KiB':>8} {'hw ratio':>9} "
           f"{'test acc':>9} {'worst':>6} {'drop':>6} {'int acc':>8} {'worst':>6} "
           f"{'int drop':>9} {'kept':>6} {'seeds':>5} {'target':>9} {'cluster s':>9}")
    print("\n" + hdr)
    print(f"{'float (fp32)':<26} {fp32 / 1024:>9.2f} {1.0:>7.2f} {fp32 / 1024:>8.2f} "
          f"{1.0:>9.2f} {float_acc:>9.2f} {'':>6} {0.0:>6.2f} {'':>8} {'':>6} {'':>9} "
          f"{'':>6} {'':>5} {'':>9} {'':>9}")
    for r in rows:
        tgt = r["target_met"] or "-"
        kept = f"{r['codes_kept']}/{r['layers']}"
        print(f"{r['method']:<26} {r['paper_bytes'] / 1024:>9.2f} {r['ratio']:>7.2f} "
              f"{r['hw_bytes'] / 1024:>8.2f} {r['hw_ratio']:>9.2f} {r['acc']:>9.2f} "
              f"{r['acc_worst']:>6.2f} {r['drop']:>6.2f} {r['int_acc']:>8.2f} "
              f"{r['int_acc_worst']:>6.2f} {r['int_drop']:>9.2f} {kept:>6} "
              f"{len(r['seeds']):>5} {tgt:>9} {r['cluster_seconds']:>9.2f}")
    print("targets: shift methods drop <= 1; pq small ratio >= 15x (paper accounting) and drop"
          " <= 2; drop = float model with hardware weights; int acc = the integer network the"
          " frontend lowers it to; kept = layers whose codes the integer network keeps exactly")
    print("test acc / int acc = mean over the row's seeds, worst = the lowest; drops are of the"
          " mean; kept = the fewest over the seeds")
    print("size = paper accounting (log2(k)/d index bits, fp16 codebooks, fp32 first conv / "
          "BN affine / biases); hw = bytes the accelerator stores (docs/compression.md)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"model": "resnet8", "data": "digits", "float_acc": float_acc,
                               "float_epochs": args.epochs, "float_seconds": round(t_float, 1),
                               "fp32_bytes": fp32, "threads": args.threads, "kmeans": args.kmeans,
                               "rows": rows},
                              indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
