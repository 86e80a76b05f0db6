"""The paper's central claim, side by side: on the same layers, k and d, the activation-aware
E-step (minimise ||X (W - W_hat)||) gives a lower layer-output error than plain weight k-means
(minimise ||W - W_hat||).

Float ResNet-8 trained on digits; every layer of the small-block preset except the first conv;
inputs sampled from the float network; errors measured on held-out input rows (not the rows
used for clustering). Also: test accuracy with every layer quantized by each method (no
fine-tuning). Writes bench/out/pq_objective.json.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

from shiftbook.sw.compress import CompressOptions, pq_plan
from shiftbook.sw.compress.kmeans import output_error, pq_em
from shiftbook.sw.compress.pq import collect_inputs
from shiftbook.sw.data import digits_loaders
from shiftbook.sw.models import build_model
from shiftbook.sw.train import TrainConfig, evaluate, train


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--iters", type=int, default=50, help="EM iterations")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "out" / "pq_objective.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tr, te = digits_loaders(batch_size=64, seed=args.seed)
    model = build_model("resnet8", num_classes=10, in_channels=1, seed=args.seed)
    train(model, tr, TrainConfig(epochs=args.epochs, lr=0.05, desc="float"))
    model.eval()
    float_acc = evaluate(model, te)
    opts = CompressOptions(preset=args.preset)
    plan = pq_plan(model, opts)
    rows = []
    hats = {"act": {}, "weight": {}}
    print(f"float ResNet-8: {float_acc:.2f}%\n")
    print(f"{'layer':<24} {'k':>4} {'d':>3} {'act-aware err':>14} {'weight k-means err':>19} "
          f"{'ratio':>6}")
    for li, (name, (k, d)) in enumerate(plan.items()):
        w = model.get_submodule(name).weight.detach()
        rows_all = collect_inputs(model, name, tr, 512, 32768, seed=li)
        half = rows_all.shape[0] // 2
        fit, held = rows_all[:half], rows_all[half:]
        v = w.reshape(w.shape[0], -1, d).reshape(-1, d)
        g = torch.Generator().manual_seed(li)

        def sample(i, fit=fit, g=g, d=d):
            idx = torch.randint(fit.shape[0], (min(4096, fit.shape[0]),), generator=g)
            return fit[idx].reshape(-1, d)

        ca, aa, _ = pq_em(v, k, sample_x=sample, iters=args.iters, seed=args.seed)
        cw, aw, _ = pq_em(v, k, sample_x=None, iters=args.iters, seed=args.seed)
        w2 = w.reshape(w.shape[0], -1)
        wa = ca[aa].reshape(w2.shape)
        ww = cw[aw].reshape(w2.shape)
        ea, ew = output_error(held, w2, wa), output_error(held, w2, ww)
        hats["act"][name] = wa.reshape(w.shape).float()
        hats["weight"][name] = ww.reshape(w.shape).float()
        rows.append({"layer": name, "k": k, "d": d, "act_aware_err": ea, "weight_kmeans_err": ew,
                     "weight_err_act": float(((wa - w2) ** 2).sum() / (w2 ** 2).sum()),
                     "weight_err_kmeans": float(((ww - w2) ** 2).sum() / (w2 ** 2).sum())})
        print(f"{name:<24} {k:>4} {d:>3} {ea:>14.5f} {ew:>19.5f} {ew / max(ea, 1e-30):>6.2f}",
              flush=True)
    accs = {}
    for kind, ws in hats.items():
        m = build_model("resnet8", num_classes=10, in_channels=1)
        m.load_state_dict(model.state_dict())
        with torch.no_grad():
            for name, wh in ws.items():
                m.get_submodule(name).weight.copy_(wh)
        accs[kind] = evaluate(m, te)
    wins = sum(r["act_aware_err"] < r["weight_kmeans_err"] for r in rows)
    print(f"\nrelative layer-output error ||X(W-W_hat)||^2/||XW||^2 on held-out rows; "
          f"activation-aware lower on {wins}/{len(rows)} layers")
    print(f"test accuracy, all layers quantized, no fine-tuning: activation-aware "
          f"{accs['act']:.2f}%, weight k-means {accs['weight']:.2f}% (float {float_acc:.2f}%)")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"float_acc": float_acc, "layers": rows, "acc_no_finetune": accs,
                               "act_aware_wins": wins, "preset": args.preset}, indent=2) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
