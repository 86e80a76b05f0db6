"""`shiftbook compress`: float model -> compressed model in hardware weight formats."""

from __future__ import annotations

import argparse

NAME = "compress"
HELP = "compress a model (shift weights, INQ, k-means, product quantization) on digits data"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="built-in model name (resnet8, resnet20, ...) or a float checkpoint")
    p.add_argument("--method", required=True,
                   help="deepshift-q, deepshift-ps, inq, kmeans or pq")
    p.add_argument("-o", "--output", required=True, help="compressed model file to write")
    p.add_argument("--weights", help="float checkpoint for a built-in model (else: train one)")
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (per step for inq/kmeans; default per method)")
    p.add_argument("--baseline-epochs", type=int, default=12,
                   help="epochs of float training when no weights are given (default 12)")
    p.add_argument("--save-float", help="also save the trained float baseline here")
    p.add_argument("--k", type=int, help="codebook size (kmeans: 16; pq: preset)")
    p.add_argument("--d", type=int, help="pq block size for every layer (default: preset)")
    p.add_argument("--preset", default="small", help="pq block preset: small or large")
    p.add_argument("--no-clamp", action="store_true",
                   help="pq: do not clamp k below (number of sub-vectors)/4")
    p.add_argument("--ratio", type=float, metavar="R",
                   help="pq: lower k per layer (from the preset's) until the size in the "
                        "paper's accounting is at least R times below fp32")
    p.add_argument("--fold-bn", action=argparse.BooleanOptionalAction, default=True,
                   help="fold batch norm into the convs before compressing, so the compiler "
                        "keeps every code exactly (default: on)")
    p.add_argument("--exp-bits", type=int, help="shift exponent bits (default: the config's)")
    p.add_argument("--rounding", default="log", help="shift rounding: log or linear")
    p.add_argument("--per-layer", action="store_true",
                   help="shift methods: one scale per layer instead of per output channel")
    p.add_argument("--config", help="CoreConfig preset or JSON file (k, d and exp_bits limits)")
    p.add_argument("--data", default="digits", help="data set (digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the summary (sizes, accuracies, steps) as JSON here")
    p.add_argument("--export", help="also write a torch.export program (.pt2) here")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--force", action="store_true",
                   help="overwrite output files even if shiftbook did not write them (by "
                        "default an existing -o/--json/--save-float/--export file is replaced "
                        "only if it is an earlier output of the same kind)")


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.sw.compress.pipeline import format_summary

    res = flow.compress(
        args.model, args.method, output=args.output, json=args.json, export=args.export,
        force=args.force, weights=args.weights, epochs=args.epochs,
        baseline_epochs=args.baseline_epochs, save_float=args.save_float, k=args.k, d=args.d,
        preset=args.preset, clamp=not args.no_clamp, ratio=args.ratio, fold_bn=args.fold_bn,
        exp_bits=args.exp_bits, rounding=args.rounding, per_layer=args.per_layer,
        config=args.config, data=args.data, seed=args.seed, progress=not args.quiet)
    print(format_summary(res.summary))
    print(f"wrote {args.output}")
    return 0
