"""`shiftbook compress`: float model -> compressed model in hardware weight formats."""

from __future__ import annotations

import argparse
import sys

NAME = "compress"
# ``--json`` given without a file: print the summary on stdout.
_PRINT = "\0print"
HELP = ("compress a model (shift weights, INQ, k-means SLQ/MLQ, product quantization, OICSR "
        "channel pruning) on digits data")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("model", metavar="MODEL",
                   help="built-in model name (resnet8, resnet20, ...) or a float checkpoint")
    p.add_argument("--method", required=True,
                   help="deepshift-q, deepshift-ps, inq, kmeans (SLQ), mlq (MLQ: layer groups "
                        "bottom-up while the later layers retrain), pq, or oicsr (structured "
                        "channel pruning, then the --then weight format)")
    p.add_argument("-o", "--output", required=True, help="compressed model file to write")
    p.add_argument("--weights", help="float checkpoint for a built-in model (else: train one)")
    p.add_argument("--epochs", type=int, default=None,
                   help="fine-tuning epochs (per step for inq/kmeans/mlq; default per method)")
    p.add_argument("--baseline-epochs", type=int, default=12,
                   help="epochs of float training when no weights are given (default 12)")
    p.add_argument("--save-float", help="also save the trained float baseline here")
    p.add_argument("--k", type=int,
                   help="codebook size (kmeans and mlq: 16, 3 = ternary; pq: preset)")
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
    p.add_argument("--target-cycles", type=float, metavar="R",
                   help="oicsr: prune until the estimated cycles on --config are a fraction R "
                        "below the float model's (0.25: 25%% fewer)")
    p.add_argument("--target-macs", type=float, metavar="R",
                   help="oicsr: prune to a fraction R fewer MACs")
    p.add_argument("--target-bytes", type=float, metavar="R",
                   help="oicsr: prune to a fraction R fewer weight bytes")
    p.add_argument("--lambda", dest="lam", type=float, metavar="L",
                   help="oicsr: group-lasso weight of the out-in channel regulariser "
                        "(default 0.001)")
    p.add_argument("--then", help="oicsr: the weight format after pruning: deepshift-q "
                                  "(default), deepshift-ps, inq, kmeans, mlq or pq")
    p.add_argument("--prune-epochs", type=int, metavar="N",
                   help="oicsr: epochs of each prune / fine-tune round (default 2, final 3)")
    p.add_argument("--config", help="CoreConfig preset or JSON file (k, d and exp_bits limits)")
    p.add_argument("--data", default="digits", help="data set (digits)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--summary", metavar="FILE",
                   help="write the summary (sizes, accuracies, steps) as JSON here")
    p.add_argument("--json", nargs="?", const=_PRINT, default=None, metavar="FILE",
                   help="print exactly one JSON object (the summary and the files written) "
                        "instead of text, progress off; `--json FILE` is the older spelling "
                        "of --summary FILE")
    p.add_argument("--export", help="also write a torch.export program (.pt2) here")
    p.add_argument("--quiet", action="store_true",
                   help="no progress on stderr (by default: stage k/n lines, and epoch bars "
                        "when stderr is a terminal)")
    p.add_argument("--force", action="store_true",
                   help="overwrite output files even if shiftbook did not write them (by "
                        "default an existing -o/--summary/--save-float/--export file is replaced "
                        "only if it is an earlier output of the same kind)")


def run(args: argparse.Namespace) -> int:
    import json

    from shiftbook import flow
    from shiftbook.sw.compress.pipeline import format_summary

    printing = args.json == _PRINT
    summary_file = args.summary
    if args.json is not None and not printing:
        if summary_file is not None:
            raise ValueError(f"--json {args.json} and --summary {summary_file}: give one "
                             f"summary file (--summary FILE; --json alone prints it)")
        summary_file = args.json
    res = flow.compress(
        args.model, args.method, output=args.output, json=summary_file, export=args.export,
        force=args.force, weights=args.weights, epochs=args.epochs,
        baseline_epochs=args.baseline_epochs, save_float=args.save_float, k=args.k, d=args.d,
        preset=args.preset, clamp=not args.no_clamp, ratio=args.ratio, fold_bn=args.fold_bn,
        exp_bits=args.exp_bits, rounding=args.rounding, per_layer=args.per_layer,
        target_cycles=args.target_cycles, target_macs=args.target_macs,
        target_bytes=args.target_bytes, lam=args.lam, then=args.then,
        prune_epochs=args.prune_epochs,
        config=args.config, data=args.data, seed=args.seed,
        progress=not (args.quiet or printing) and sys.stderr.isatty(),
        stage_lines=not (args.quiet or printing))
    if printing:
        files = {"output": args.output, "summary": summary_file, "export": args.export,
                 "save_float": args.save_float}
        print(json.dumps({**res.summary, "files": {k: v for k, v in files.items() if v}},
                         sort_keys=True, default=str))
        return 0
    print(format_summary(res.summary))
    print(f"wrote {args.output}")
    return 0
