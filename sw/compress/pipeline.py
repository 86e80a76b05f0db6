"""`shiftbook compress` as a library call: a float model (built-in name or checkpoint) -> its
compressed model, trained and evaluated on the bundled digits data.

:class:`CompressRequest` holds every option of the command (validated by :meth:`check` before
any work); :func:`run_compress` builds or loads the float model, trains the float baseline when
no weights are given, compresses it and returns the :class:`~sw.models.compressed.CompressedModel`
with its summary (sizes, accuracies, steps). Writing files is the caller's job
(``shiftbook.flow.compress``, the CLI).
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shiftbook.sw.models.compressed import CompressedModel, CompressError

__all__ = ["CompressRequest", "CompressResult", "DEFAULT_EPOCHS", "run_compress",
           "summary_dict", "format_summary"]

#: Fine-tuning epochs per method when ``epochs`` is not given.
DEFAULT_EPOCHS = {"deepshift-q": 4, "deepshift-ps": 8, "inq": 2, "kmeans": 1, "mlq": 1,
                  "pq": 0}


@dataclass
class CompressRequest:
    """Every option of `shiftbook compress` (docs/cli.md; the same names, ``-`` -> ``_``)."""

    model: str
    method: str
    weights: str | None = None
    epochs: int | None = None
    baseline_epochs: int = 12
    save_float: str | None = None
    k: int | None = None
    d: int | None = None
    preset: str = "small"
    clamp: bool = True
    ratio: float | None = None
    fold_bn: bool = True
    exp_bits: int | None = None
    rounding: str = "log"
    per_layer: bool = False
    config: str | None = None
    data: str = "digits"
    seed: int = 0
    progress: bool = True
    # stage k/n lines on stderr even without bars (bars garble a log that is not a TTY)
    stage_lines: bool = False
    # --method oicsr (structured pruning, sw/compress/oicsr.py), then the --then weight format
    target_cycles: float | None = None
    target_macs: float | None = None
    target_bytes: float | None = None
    lam: float | None = None
    then: str | None = None
    prune_epochs: int | None = None

    def check(self, error: type[ValueError] = CompressError) -> None:
        """Refuse a bad method, data set or numeric option (one line naming the option); the
        model-dependent checks follow in ``check_options``."""
        from shiftbook.sw.compress import METHODS
        from shiftbook.sw.compress.oicsr import check_prune_request
        from shiftbook.sw.data import DATASETS
        from shiftbook.sw.models import MODELS

        if self.method not in METHODS and self.method != "oicsr":
            raise error(f"unknown method {self.method!r} ({', '.join(METHODS)}, oicsr)")
        check_prune_request(self.method, {"--target-cycles": self.target_cycles,
                                          "--target-macs": self.target_macs,
                                          "--target-bytes": self.target_bytes},
                            self.lam, self.then, error)
        if self.data not in DATASETS:
            raise error(f"unknown data set {self.data!r} ({', '.join(DATASETS)})")
        ints = (("--epochs", self.epochs, 0), ("--baseline-epochs", self.baseline_epochs, 0),
                ("--k", self.k, 2), ("--d", self.d, 1), ("--seed", self.seed, 0),
                ("--prune-epochs", self.prune_epochs, 0))
        for flag, value, lo in ints:
            if value is not None and value < lo:
                raise error(f"{flag} {value} must be >= {lo}")
        if self.weight_method not in ("kmeans", "mlq", "pq"):
            for flag, value in (("--k", self.k), ("--d", self.d)):
                if value is not None:
                    raise error(f"{flag} applies to kmeans, mlq and pq only, not "
                                f"{self.weight_method}")
        if self.ratio is not None and not (math.isfinite(self.ratio) and self.ratio > 0):
            raise error(f"--ratio {self.ratio:g} must be a finite number > 0")
        if self.save_float and (self.weights or self.model not in MODELS):
            raise error("--save-float applies only when the float baseline is trained here "
                        "(a built-in model without --weights)")

    @property
    def weight_method(self) -> str:
        """The method giving the weight formats (oicsr: ``--then``, default deepshift-q)."""
        return (self.then or "deepshift-q") if self.method == "oicsr" else self.method


@dataclass
class CompressResult:
    """The compressed model, its summary (``summary_dict``) and the digits test loader."""

    model: CompressedModel
    summary: dict[str, Any]
    test_loader: Any = field(repr=False, default=None)


class _Stages:
    """``[compress] stage k/n: what`` lines on stderr (with ``progress``), each with the time
    so far and, once the float baseline has given a time per epoch, a rough overall ETA."""

    def __init__(self, names: list[str], enabled: bool) -> None:
        self._names = names
        self._enabled = enabled
        self._t0 = time.monotonic()
        self._k = 0
        self.epoch_s: float | None = None

    def next(self, remaining_epochs: int = 0) -> None:
        """Announce the next stage; ``remaining_epochs`` of training are left in all."""
        self._k += 1
        if not self._enabled:
            return
        spent = time.monotonic() - self._t0
        eta = ""
        if self.epoch_s is not None and remaining_epochs:
            eta = f", ETA ~{self.epoch_s * remaining_epochs / 60:.1f} min"
        print(f"[compress] stage {self._k}/{len(self._names)}: {self._names[self._k - 1]} "
              f"({spent:.0f} s so far{eta})", file=sys.stderr, flush=True)

    def done(self) -> None:
        if self._enabled:
            print(f"[compress] done in {time.monotonic() - self._t0:.0f} s", file=sys.stderr,
                  flush=True)


def _float_model(req: CompressRequest) -> tuple[str, dict[str, Any], Any, bool]:
    """(model name, model args, the float model, whether it is already trained)."""
    from shiftbook.sw.models import MODELS, build_model, load_checkpoint

    model_args: dict[str, Any] = {"num_classes": 10, "in_channels": 1}
    if req.model in MODELS:
        model = build_model(req.model, weights=req.weights, seed=req.seed, **model_args)
        return req.model, model_args, model, req.weights is not None
    if not Path(req.model).is_file():
        raise CompressError(f"checkpoint {req.model} does not exist, and it is not a "
                            f"built-in model ({', '.join(MODELS)})")
    ck = load_checkpoint(req.model)
    name = ck.get("model")
    if name not in MODELS:
        raise CompressError(f"{req.model} is neither a built-in model ({', '.join(MODELS)})"
                            f" nor a checkpoint naming one")
    model_args = dict(ck.get("model_args") or model_args)
    model = build_model(name, seed=None, **model_args)
    try:
        model.load_state_dict(ck["state_dict"])
    except (RuntimeError, KeyError, TypeError) as e:
        lines = [ln.strip() for ln in str(e).strip().splitlines() if ln.strip()]
        raise CompressError(f"checkpoint {req.model} does not fit {name}: "
                            f"{(lines[1:] or lines or ['no state_dict'])[0][:200]}") from None
    return name, model_args, model, True


def run_compress(req: CompressRequest) -> CompressResult:
    """Build or load the float model, train its baseline if needed (saved to
    ``req.save_float`` when given), compress it with ``req.method``; nothing else is written."""
    from shiftbook.config import load_config
    from shiftbook.sw.compress import CompressOptions, check_options, compress, model_size
    from shiftbook.sw.data import digits_loaders
    from shiftbook.sw.models import MODELS, save_checkpoint
    from shiftbook.sw.train import TrainConfig, evaluate, train

    req.check()
    cfg = load_config(req.config)
    method = req.weight_method
    epochs = req.epochs if req.epochs is not None else DEFAULT_EPOCHS[method]
    opts = CompressOptions(
        exp_bits=req.exp_bits if req.exp_bits is not None else cfg.exp_bits,
        rounding=req.rounding, per_channel=not req.per_layer, epochs=epochs, seed=req.seed,
        progress=req.progress, k=req.k, d=req.d, preset=req.preset, clamp=req.clamp,
        max_k=cfg.max_k, max_d=cfg.max_d, fold_bn=req.fold_bn, target_ratio=req.ratio)
    if method == "pq" and req.epochs is not None:
        opts.global_ft_epochs = opts.shift_ft_epochs = req.epochs
    name, model_args, model, trained = _float_model(req)
    if MODELS[name].input_size != 32:
        raise CompressError(f"{name} takes {MODELS[name].input_size}x"
                            f"{MODELS[name].input_size} inputs; digits training is for the "
                            f"32x32 models (resnet8/20/56); pass a CIFAR-style model")
    check_options(model, method, opts)
    if req.method == "oicsr":
        from shiftbook.sw.compress.oicsr import check_prune_target

        check_prune_target(req, model, cfg, (model_args["in_channels"], 32, 32))
    torch.manual_seed(req.seed)
    train_loader, test_loader = digits_loaders(batch_size=64, size=32,
                                               channels=model_args["in_channels"],
                                               seed=req.seed)
    names = ([f"training the float baseline first ({req.baseline_epochs} epochs; no "
              f"--weights given)"] if not trained else [])
    names += ["pruning (oicsr)"] * (req.method == "oicsr")
    names += [f"compressing with {method} (fine-tuning {epochs} epoch(s) per step)",
              "measuring sizes"]
    stages = _Stages(names, req.progress or req.stage_lines)
    if not trained:
        stages.next()
        t_train = time.monotonic()
        train(model, train_loader, TrainConfig(epochs=req.baseline_epochs, lr=0.05,
                                               progress=req.progress, desc="float"))
        if req.baseline_epochs:
            stages.epoch_s = (time.monotonic() - t_train) / req.baseline_epochs
        if req.save_float:
            save_checkpoint(req.save_float, model, name=name, model_args=model_args,
                            test_acc=evaluate(model, test_loader))
    model.eval()
    pruned = None
    if req.method == "oicsr":
        from shiftbook.sw.compress.oicsr import attach_pruning, prune_for_request

        stages.next()
        fp32_bytes = 4.0 * sum(p.numel() for p in model.parameters())
        pruned, prune_steps = prune_for_request(req, model, cfg, train_loader, test_loader)
        model, model_args = pruned.model, {**model_args, "inner_widths": pruned.widths}
    stages.next(remaining_epochs=epochs)
    cm = compress(model, method, train_loader, test_loader, opts, model_name=name,
                  model_args=model_args)
    if pruned is not None:
        attach_pruning(cm, pruned, prune_steps, fp32_bytes)
    stages.next()
    summary = summary_dict(cm, model_size(cm))
    stages.done()
    return CompressResult(cm, summary, test_loader)


def summary_dict(cm: CompressedModel, size: Any) -> dict[str, Any]:
    """Sizes per layer and in total, accuracies and steps of a compressed model (``size``: its
    ``model_size`` report): what `shiftbook compress --json` writes."""
    from shiftbook.sw.models.formats import CodebookFormat

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
    out = {"model": cm.meta.get("model"), "method": cm.meta.get("method"), "layers": rows,
           "bn_folded": len(folded.get("bn", [])),
           "target_ratio": (cm.meta.get("options") or {}).get("target_ratio"),
           "other_fp32_params": size.other_params, "fp32_bytes": size.fp32_bytes,
           "paper_bytes": size.paper_bytes, "ratio": size.ratio, "hw_bytes": size.hw_bytes,
           "hw_ratio": size.hw_ratio, "float_acc": cm.meta.get("float_acc"),
           "acc": cm.meta.get("acc"), "steps": cm.meta.get("steps", [])}
    if cm.meta.get("pruning"):
        out["pruning"] = cm.meta["pruning"]
    return out


def format_summary(s: dict[str, Any]) -> str:
    """The summary as the table `shiftbook compress` prints."""
    lines = []
    if s.get("pruning"):
        from shiftbook.sw.compress.oicsr import format_pruning

        lines += [format_pruning(s["pruning"]), ""]
    lines += [f"{'layer':<24} {'format':<32} {'weights':>8} {'bits/w':>7} {'paper B':>10} "
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
