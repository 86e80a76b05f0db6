"""`shiftbook compress`: float model -> compressed model in hardware weight formats."""

from __future__ import annotations

import argparse
import json
import math
import os
from pathlib import Path

import torch

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


_DEFAULT_EPOCHS = {"deepshift-q": 4, "deepshift-ps": 8, "inq": 2, "kmeans": 1, "pq": 0}


def check_args(args: argparse.Namespace, error: type[ValueError] = ValueError) -> None:
    """Refuse bad numeric options and unwritable output paths before any work (one line
    naming the option); the model-dependent checks follow in ``check_options``."""
    ints = (("--epochs", args.epochs, 0), ("--baseline-epochs", args.baseline_epochs, 0),
            ("--k", args.k, 2), ("--d", args.d, 1), ("--seed", args.seed, 0))
    for flag, value, lo in ints:
        if value is not None and value < lo:
            raise error(f"{flag} {value} must be >= {lo}")
    if args.method not in ("kmeans", "pq"):
        for flag, value in (("--k", args.k), ("--d", args.d)):
            if value is not None:
                raise error(f"{flag} applies to kmeans and pq only, not {args.method}")
    if args.ratio is not None and not (math.isfinite(args.ratio) and args.ratio > 0):
        raise error(f"--ratio {args.ratio:g} must be a finite number > 0")
    if args.save_float and (args.weights or args.model not in _builtin_models()):
        raise error("--save-float applies only when the float baseline is trained here "
                    "(a built-in model without --weights)")
    for flag, path in (("-o/--output", args.output), ("--json", args.json),
                       ("--save-float", args.save_float), ("--export", args.export)):
        if path:
            check_writable_file(path, flag, error)
            if not getattr(args, "force", False):
                check_replaceable(path, flag, "json" if flag == "--json" else
                                  "pt2" if flag == "--export" else "torch", error)


def _builtin_models() -> tuple[str, ...]:
    from shiftbook.sw.models import MODELS

    return tuple(MODELS)


def check_writable_file(path: str | Path, flag: str,
                        error: type[ValueError] = ValueError) -> None:
    """Refuse a file path that cannot be written: a directory, a missing or read-only parent
    directory, or a read-only existing file."""
    p = Path(path)
    if p.is_dir():
        raise error(f"{flag} {path}: is a directory, not a file")
    parent = p.absolute().parent
    if parent.exists() and not parent.is_dir():
        raise error(f"{flag} {path}: {parent} is a file, not a directory")
    if not parent.is_dir():
        raise error(f"{flag} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise error(f"{flag} {path}: directory {parent} is not writable")
    if p.exists() and not os.access(p, os.W_OK):
        raise error(f"{flag} {path}: the file exists and is not writable")


def check_replaceable(path: str | Path, flag: str, kind: str,
                      error: type[ValueError] = ValueError) -> None:
    """Refuse to overwrite an existing file that is not an earlier output of this kind:
    ``"torch"`` (a ``torch.save`` file: a checkpoint or compressed model), ``"pt2"`` (a
    ``torch.export`` archive), ``"json"`` (a summary written by `shiftbook compress`)."""
    p = Path(path)
    if not p.is_file():
        return
    try:
        with open(p, "rb") as f:
            head = f.read(4)
        ours = head == b"PK\x03\x04"              # torch.save and torch.export write zips
        if kind == "json":
            ours = isinstance(d := json.loads(p.read_text()), dict) and "method" in d \
                and "layers" in d
    except (OSError, ValueError):
        ours = False
    if not ours:
        raise error(f"{flag} {path}: the file exists and is not an earlier `shiftbook "
                    f"compress` output; choose another path, remove it, or pass --force")


def run(args: argparse.Namespace) -> int:
    from shiftbook.config import load_config
    from shiftbook.sw.compress import (
        METHODS,
        CompressError,
        CompressOptions,
        check_options,
        compress,
        model_size,
        save_compressed,
    )
    from shiftbook.sw.data import DATASETS, digits_loaders
    from shiftbook.sw.models import MODELS, build_model, load_checkpoint, save_checkpoint
    from shiftbook.sw.train import TrainConfig, evaluate, train

    if args.method not in METHODS:
        raise CompressError(f"unknown method {args.method!r} ({', '.join(METHODS)})")
    if args.data not in DATASETS:
        raise CompressError(f"unknown data set {args.data!r} ({', '.join(DATASETS)})")
    check_args(args, CompressError)
    cfg = load_config(args.config)
    epochs = args.epochs if args.epochs is not None else _DEFAULT_EPOCHS[args.method]
    opts = CompressOptions(
        exp_bits=args.exp_bits if args.exp_bits is not None else cfg.exp_bits,
        rounding=args.rounding, per_channel=not args.per_layer, epochs=epochs, seed=args.seed,
        progress=not args.quiet, k=args.k, d=args.d, preset=args.preset,
        clamp=not args.no_clamp, max_k=cfg.max_k, max_d=cfg.max_d, fold_bn=args.fold_bn,
        target_ratio=args.ratio)
    if args.method == "pq" and args.epochs is not None:
        opts.global_ft_epochs = opts.shift_ft_epochs = args.epochs

    # The model: built-in (trained here on the data unless --weights) or a float checkpoint.
    model_args = {"num_classes": 10, "in_channels": 1}
    if args.model in MODELS:
        name = args.model
        model = build_model(name, weights=args.weights, seed=args.seed, **model_args)
        trained = args.weights is not None
    else:
        if not Path(args.model).is_file():
            raise CompressError(f"checkpoint {args.model} does not exist, and it is not a "
                                f"built-in model ({', '.join(MODELS)})")
        ck = load_checkpoint(args.model)
        name = ck.get("model")
        if name not in MODELS:
            raise CompressError(f"{args.model} is neither a built-in model ({', '.join(MODELS)})"
                                f" nor a checkpoint naming one")
        model_args = dict(ck.get("model_args") or model_args)
        model = build_model(name, seed=None, **model_args)
        try:
            model.load_state_dict(ck["state_dict"])
        except (RuntimeError, KeyError, TypeError) as e:
            lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
            raise CompressError(f"checkpoint {args.model} does not fit {name}: "
                                f"{(lines[1:] or lines or ['no state_dict'])[0][:200]}") from None
        trained = True
    if MODELS[name].input_size != 32:
        raise CompressError(f"{name} takes {MODELS[name].input_size}x"
                            f"{MODELS[name].input_size} inputs; digits training is for the "
                            f"32x32 models (resnet8/20/56); pass a CIFAR-style model")
    check_options(model, args.method, opts)
    torch.manual_seed(args.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, size=32,
                                               channels=model_args["in_channels"],
                                               seed=args.seed)
    if not trained:
        train(model, train_loader, TrainConfig(epochs=args.baseline_epochs, lr=0.05,
                                               progress=not args.quiet, desc="float"))
        if args.save_float:
            save_checkpoint(args.save_float, model, name=name, model_args=model_args,
                            test_acc=evaluate(model, test_loader))
    model.eval()
    cm = compress(model, args.method, train_loader, test_loader, opts, model_name=name,
                  model_args=model_args)
    save_compressed(args.output, cm)
    size = model_size(cm)
    summary = summary_dict(cm, size)
    print(format_summary(summary))
    if args.json:
        Path(args.json).write_text(json.dumps(summary, indent=2) + "\n")
    if args.export:
        x = test_loader.dataset.tensors[0][:1]
        ep = torch.export.export(cm.eval(), (x,))
        torch.export.save(ep, args.export)
    print(f"wrote {args.output}")
    return 0


def summary_dict(cm, size) -> dict:  # noqa: ANN001 - CompressedModel, SizeReport
    from shiftbook.sw.compress import CodebookFormat

    rows = []
    fp32 = set(cm.meta.get("paper_fp32", []))
    for ls in size.layers:
        fmt = cm.formats.get(ls.name)
        if isinstance(fmt, CodebookFormat):
            desc = f"codebook k={fmt.k} d={fmt.d}"
        else:
            desc = f"shift e{fmt.exp_bits}" if fmt is not None else "fp32"
        if ls.name in fp32:
            desc += " (paper: fp32)"
        rows.append({"layer": ls.name, "format": desc, "weights": ls.n_weights,
                     "bits_per_weight": round(ls.bits_per_weight, 3),
                     "paper_bytes": round(ls.paper_bytes, 1), "hw_bytes": ls.hw_bytes})
    folded = cm.meta.get("bn_folded") or {}
    return {"model": cm.meta.get("model"), "method": cm.meta.get("method"), "layers": rows,
            "bn_folded": len(folded.get("bn", [])),
            "target_ratio": (cm.meta.get("options") or {}).get("target_ratio"),
            "other_fp32_params": size.other_params, "fp32_bytes": size.fp32_bytes,
            "paper_bytes": size.paper_bytes, "ratio": size.ratio, "hw_bytes": size.hw_bytes,
            "hw_ratio": size.hw_ratio, "float_acc": cm.meta.get("float_acc"),
            "acc": cm.meta.get("acc"), "steps": cm.meta.get("steps", [])}


def format_summary(s: dict) -> str:
    lines = [f"{'layer':<24} {'format':<32} {'weights':>8} {'bits/w':>7} {'paper B':>10} "
             f"{'hw B':>8}"]
    for r in s["layers"]:
        lines.append(f"{r['layer']:<24} {r['format']:<32} {r['weights']:>8} "
                     f"{r['bits_per_weight']:>7.3f} {r['paper_bytes']:>10.1f} "
                     f"{r['hw_bytes']:>8}")
    lines.append(f"other fp32 parameters (BN affine, biases): {s['other_fp32_params']}")
    lines.append(f"batch norm: {s['bn_folded']} folded into the convs (codes kept exactly)"
                 if s.get("bn_folded") else "batch norm: float (not folded)")
    if s.get("target_ratio"):
        lines.append(f"pq k chosen per layer for a {s['target_ratio']:g}x target: " + ", ".join(
            f"{r['layer']} {r['format'].split()[1]}" for r in s["layers"]
            if r["format"].startswith("codebook")))
    lines.append(f"size (paper accounting): {s['paper_bytes'] / 1024:.2f} KiB, "
                 f"{s['ratio']:.2f}x vs fp32 ({s['fp32_bytes'] / 1024:.2f} KiB)")
    lines.append(f"hardware bytes: {s['hw_bytes'] / 1024:.2f} KiB, {s['hw_ratio']:.2f}x vs fp32")
    lines.append("accuracy by step: " + ", ".join(f"{r['step']} {r['acc']:.2f}"
                                                  for r in s["steps"]))
    lines.append(f"test accuracy: float {s['float_acc']:.2f}% -> compressed {s['acc']:.2f}% "
                 f"(drop {s['float_acc'] - s['acc']:.2f})")
    return "\n".join(lines)
