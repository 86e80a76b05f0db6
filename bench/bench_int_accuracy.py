"""Integer-network accuracy against the float model on real data (issue 4).

ResNet-8 (one input channel) trained briefly on scikit-learn's digits (sw/data, sw/train; the
checkpoint is cached in build/bench/), then two integer versions, each run with the golden
integer executor (sw/reference run_graph) on the 360 test images:

1. post-training: the float model lowered by the frontend's default method (BN folded, shift
   weights by GPTQ-style rounding + bias correction, power-of-two activation scales calibrated
   on training images);
2. shift-aware: BN folded into the convolutions (frontend.fold_batchnorm), DeepShift-Q
   fine-tuning (sw/compress), then lowered with its shift codes kept exactly.

Prints float accuracy, integer accuracy, the drop, the top-1 agreement with the model that was
lowered, and per-layer agreement (cosine similarity and SQNR of every dequantized integer
tensor against the float network's tensor). Writes a JSON record (build/bench/).

    .venv/bin/python bench/bench_int_accuracy.py [--epochs 4] [--shift-epochs 2] [--calib 128]
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import numpy as np
import torch

from shiftbook.config import CoreConfig
from shiftbook.sw.data import digits_loaders, load_digits
from shiftbook.sw.frontend import fold_batchnorm, lower
from shiftbook.sw.models import build_model, save_checkpoint
from shiftbook.sw.train import TrainConfig, train

ROOT = Path(__file__).resolve().parent.parent


def agreement(lowered, x: torch.Tensor) -> list[dict]:
    """Per tensor: cosine similarity and SQNR (dB) of integer vs float values."""
    fl = lowered.net.run(x)
    q = lowered.run(x)
    rows = []
    for name in lowered.graph.tensors:
        f = fl[name].numpy().reshape(len(x), -1)
        d = lowered.dequantize(name, q[name]).reshape(len(x), -1)
        num = float(np.sum(f * d))
        den = float(np.linalg.norm(f) * np.linalg.norm(d)) or 1.0
        err = float(np.sum((f - d) ** 2))
        sqnr = 10 * math.log10(float(np.sum(f ** 2)) / err) if err > 0 else float("inf")
        sat = float(np.mean(np.abs(q[name]) >= 127))
        rows.append({"tensor": name, "frac": lowered.graph.tensors[name].frac,
                     "cosine": round(num / den, 5), "sqnr_db": round(sqnr, 2),
                     "saturated": round(sat, 5)})
    return rows


def float_model(epochs: int, seed: int, cache: Path) -> torch.nn.Module:
    """ResNet-8 trained on digits; cached under build/bench/ (delete it to retrain)."""
    path = cache / f"resnet8_digits_e{epochs}_s{seed}.pt"
    if path.is_file():
        return build_model("resnet8", num_classes=10, in_channels=1, weights=path).eval()
    train_loader, _ = digits_loaders(seed=seed)
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=seed)
    train(model, train_loader, TrainConfig(epochs=epochs, lr=0.05, progress=False))
    cache.mkdir(parents=True, exist_ok=True)
    save_checkpoint(path, model.eval(), name="resnet8",
                    model_args={"num_classes": 10, "in_channels": 1})
    return model


def shift_aware(model: torch.nn.Module, epochs: int, seed: int,
                fold: bool = True) -> torch.nn.Module:
    """BN folded into the convolutions, then DeepShift-Q fine-tuning (sw/compress): a model
    whose shift codes the frontend keeps exactly (``fold=False``: BN stays float)."""
    from shiftbook.sw.compress import CompressOptions, compress

    train_loader, test_loader = digits_loaders(seed=seed)
    folded = fold_batchnorm(model, (1, 32, 32)) if fold else model
    opts = CompressOptions(exp_bits=CoreConfig().exp_bits, rounding="log", epochs=epochs,
                           seed=seed, progress=False, fold_bn=False)
    return compress(folded, "deepshift-q", train_loader, test_loader, opts)


def measure(label: str, ref: torch.nn.Module, lowered, x: torch.Tensor, y: np.ndarray,
            float_pred: np.ndarray) -> dict:
    with torch.no_grad():
        ref_pred = ref(x).argmax(1).numpy()
    int_pred = lowered.logits(x).argmax(1)
    rec = {"label": label,
           "float_acc": round(100.0 * float(np.mean(float_pred == y)), 3),
           "model_acc": round(100.0 * float(np.mean(ref_pred == y)), 3),
           "int_acc": round(100.0 * float(np.mean(int_pred == y)), 3),
           "top1_agreement": round(100.0 * float(np.mean(int_pred == ref_pred)), 3),
           "weights": sorted({r["weights"] for r in lowered.layers if "weights" in r}),
           "layers": agreement(lowered, x), "ops": lowered.layers}
    rec["drop"] = round(rec["float_acc"] - rec["int_acc"], 3)
    return rec


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=4, help="float training epochs")
    ap.add_argument("--shift-epochs", type=int, default=2,
                    help="DeepShift-Q fine-tuning epochs of the shift-aware row (0: skip it)")
    ap.add_argument("--bn-float", action="store_true",
                    help="also compress without folding BN first and lower it both ways")
    ap.add_argument("--calib", type=int, default=128, help="calibration images (training set)")
    ap.add_argument("--rounding", default="log", choices=("linear", "log"))
    ap.add_argument("--percentile", type=float, default=100.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=str(ROOT / "build" / "bench" / "int_accuracy.json"))
    args = ap.parse_args()

    t0 = time.time()
    torch.manual_seed(args.seed)
    data = load_digits()
    model = float_model(args.epochs, args.seed, ROOT / "build" / "bench")
    x, y = data.x_test, data.y_test.numpy()
    with torch.no_grad():
        float_pred = model(x).argmax(1).numpy()
    calib = data.x_train[:args.calib]
    cfg = CoreConfig()
    rows = []
    t1 = time.time()
    low = lower(model, calib=calib, config=cfg, rounding=args.rounding,
                percentile=args.percentile)
    rows.append(measure("post-training (float model, BN folded, shift weights rounded)",
                        model, low, x, y, float_pred))
    t_ptq = time.time() - t1
    if args.shift_epochs:
        cm = shift_aware(model, args.shift_epochs, args.seed)
        low2 = lower(cm, calib=calib, config=cfg, percentile=args.percentile,
                     input_shape=(1, 32, 32))
        rows.append(measure(f"shift-aware (BN folded, DeepShift-Q {args.shift_epochs} "
                            f"epochs, codes kept)", cm, low2, x, y, float_pred))
    if args.shift_epochs and args.bn_float:
        cm = shift_aware(model, args.shift_epochs, args.seed, fold=False)
        for mode in ("auto", "keep"):
            low3 = lower(cm, calib=calib, config=cfg, percentile=args.percentile,
                         input_shape=(1, 32, 32), weights=mode)
            rows.append(measure(f"DeepShift-Q {args.shift_epochs} epochs with float BN, "
                                f"weights={mode}", cm, low3, x, y, float_pred))

    print(f"ResNet-8 on digits ({len(y)} test images, int8 activations, "
          f"exp_bits={cfg.exp_bits}, {args.calib} calibration images)")
    for r in rows:
        print(f"\n== {r['label']}")
        print(f"float accuracy        {r['float_acc']:6.2f} %")
        if r["model_acc"] != r["float_acc"]:
            print(f"lowered model (float) {r['model_acc']:6.2f} %")
        print(f"integer accuracy      {r['int_acc']:6.2f} %")
        print(f"drop                  {r['drop']:6.2f} points (float model - integer)")
        print(f"top-1 agreement       {r['top1_agreement']:6.2f} % (integer vs lowered model)")
        print(f"{'tensor':24s} {'frac':>5s} {'cosine':>8s} {'SQNR dB':>8s} {'sat %':>7s}")
        for t in r["layers"]:
            print(f"{t['tensor']:24s} {t['frac']:5d} {t['cosine']:8.4f} {t['sqnr_db']:8.2f} "
                  f"{100 * t['saturated']:7.3f}")
    print(f"\ntime: total {time.time() - t0:.1f} s (post-training lowering + run "
          f"{t_ptq:.1f} s)")
    rec = {"bench": "int_accuracy", "model": "resnet8", "dataset": "digits",
           "epochs": args.epochs, "shift_epochs": args.shift_epochs, "calib": args.calib,
           "rounding": args.rounding, "percentile": args.percentile, "rows": rows,
           "seconds": round(time.time() - t0, 1)}
    out = Path(args.json)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rec, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
