"""`shiftbook simulate`: run a bundle at a level and compare every layer with golden."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

NAME = "simulate"
HELP = "run a program bundle at a level (golden, functional, rtl), every layer checked " \
       "bit-exactly against golden"


def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.sim.network import LEVELS

    p.add_argument("bundle", metavar="BUNDLE", help="bundle directory (`shiftbook compile -o`)")
    p.add_argument("--level", default="functional",
                   help=f"one of {', '.join(LEVELS)} (default functional)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--input", default=None, metavar="FILE.npy",
                     help="input tensor (C, H, W) or (1, C, H, W): integers are int8 values, "
                          "floats are quantized with the input's frac")
    src.add_argument("--seed", type=int, default=None,
                     help="seeded random int8 input (default: the input stored in the bundle)")
    p.add_argument("--dump-dir", default=None, metavar="DIR",
                   help="write every layer's tensor of both sides as .npy (DIR/golden/, "
                        "DIR/<level>/)")
    p.add_argument("--timeout-cycles", type=int, default=None,
                   help="cycle limit of the functional and rtl levels (default: the RTL "
                        "runner's, 50000000; 0: no limit)")
    p.add_argument("--waves", default=None, metavar="DIR",
                   help="rtl level: run again on the traced core and write an FST waveform "
                        "(with a GTKWave .gtkw signal list) into DIR, limited to --layer's "
                        "cycles (docs/simulation.md)")
    p.add_argument("--layer", default=None, metavar="NAME",
                   help="with --waves: the layer (name or index) whose MARK window is traced "
                        "(default: the whole run)")
    p.add_argument("--waves-on-fail", default=None, metavar="DIR",
                   help="rtl level: on a mismatch, write the first failing layer's waveform "
                        "into DIR")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")


def check_npy(path: str, error: type[ValueError]) -> None:
    """Refuse, naming the file, an ``--input`` that is not a readable numeric ``.npy`` array
    (empty, a ``.npz`` archive, text, pickled objects, truncated) before the bundle is read."""
    import numpy as np

    p = Path(path)
    if not p.is_file():
        return          # load_input names a missing file
    with open(p, "rb") as f:
        head = f.read(6)
    if not head:
        raise error(f"input file {path} is empty")
    if head.startswith(b"PK"):
        raise error(f"input file {path} is a zip (.npz) archive; give one array saved with "
                    f"numpy.save (.npy)")
    if head != b"\x93NUMPY":
        raise error(f"input file {path} is not a .npy file (no NumPy header); save the "
                    f"array with numpy.save")
    try:
        np.load(p, allow_pickle=False)
    except ValueError as e:
        if "allow_pickle" in str(e):
            raise error(f"input file {path} holds Python objects (a pickled object array), "
                        f"not numbers") from None
        raise error(f"input file {path} is not a readable .npy array ({e})") from None
    except (OSError, EOFError) as e:
        raise error(f"input file {path} is truncated or damaged ({e or type(e).__name__})"
                    ) from None


def run(args: argparse.Namespace) -> int:
    from shiftbook import flow
    from shiftbook.sim.network import (
        LEVELS,
        SimulateError,
        dump_tensors,
        load_input,
        random_input,
    )
    from shiftbook.sw.bundle import load_bundle

    if args.level not in LEVELS:
        raise SimulateError(f"unknown --level {args.level!r} (one of {', '.join(LEVELS)})")
    if args.timeout_cycles is not None and args.timeout_cycles < 0:
        raise SimulateError(f"--timeout-cycles {args.timeout_cycles} must be >= 0 "
                            f"(0: no limit)")
    if args.dump_dir:
        from shiftbook.commands import check_output_directory

        check_output_directory(args.dump_dir, "--dump-dir")
    if args.input is not None:
        check_npy(args.input, SimulateError)
    _check_waves_args(args, SimulateError)
    bundle = load_bundle(args.bundle)
    wave_layer = _find_layer(bundle, args.layer, SimulateError) if args.layer else None
    in_name = bundle.manifest.inputs[0]
    place = bundle.tensors[in_name]
    x = None
    if args.input is not None:
        x = load_input(args.input, place.shape, place.frac)
    elif args.seed is not None:
        x = random_input(place.shape, args.seed)

    def note(msg: str) -> None:
        print(f"[simulate] {msg}", file=sys.stderr, flush=True)

    res = flow.run(bundle, args.level, input=x, progress=None if args.json else note,
                   rtl_progress=not args.json, timeout_cycles=args.timeout_cycles)
    rec = res.record
    rec["input_source"] = ("file" if args.input is not None else
                           "seed" if args.seed is not None else "bundle")
    if args.seed is not None:
        rec["seed"] = args.seed
    if args.waves or (args.waves_on_fail and not rec["bit_exact"]):
        failing = [lay for lay in rec["layers"] if not lay["bit_exact"]]
        target = (wave_layer if args.waves else
                  _find_layer(bundle, str(failing[0]["index"]), SimulateError) if failing
                  else None)
        note(f"rtl: writing the waveform of "
             f"{'layer ' + target.name if target is not None else 'the whole run'} "
             f"(traced build, cached after the first)")
        rec["waves"] = _write_waves(bundle, x, target, args.waves or args.waves_on_fail, rec,
                                    args.timeout_cycles)
    if args.dump_dir:
        files = dump_tensors(res, bundle.layers, in_name, args.dump_dir)
        rec["dump_dir"] = args.dump_dir
        rec["dumped"] = len(files)
    if args.json:
        print(json.dumps(rec, sort_keys=True))
    else:
        _table(rec)
    return 0 if rec["bit_exact"] else 1


def _check_waves_args(args: argparse.Namespace, error: type[ValueError]) -> None:
    """--waves / --waves-on-fail need the rtl level and a writable directory; --layer needs
    --waves."""
    from shiftbook.commands import check_output_directory

    for flag, value in (("--waves", args.waves), ("--waves-on-fail", args.waves_on_fail)):
        if value is None:
            continue
        if args.level != "rtl":
            raise error(f"{flag} needs --level rtl (waveforms come from the RTL simulation)")
        check_output_directory(value, flag)
    if args.layer is not None and args.waves is None:
        raise error("--layer selects the layer of --waves DIR; give --waves too")


def _find_layer(bundle: object, name: str, error: type[ValueError]) -> object:
    """The bundle's layer called ``name`` (or with that index)."""
    layers = sorted(bundle.layers, key=lambda d: d.index)  # type: ignore[attr-defined]
    for lay in layers:
        if lay.name == name or str(lay.index) == name:
            return lay
    raise error(f"--layer {name}: no such layer in the bundle (layers: "
                f"{', '.join(lay.name for lay in layers)})")


def _write_waves(bundle: object, x: object, layer: object | None, out: str, rec: dict,
                 timeout_cycles: int | None) -> dict:
    """Run the bundle's input again on the traced core, the FST limited to ``layer``."""
    from shiftbook.sim.network import with_input
    from shiftbook.sim.rtl.waves import write_layer_waves

    memory = bundle.memory if x is None else with_input(bundle, x)  # type: ignore[attr-defined]
    marks, at = [], 0
    for lay in sorted(rec["layers"], key=lambda r: r["index"]):   # MARK ids are layer indices
        at += lay["cycles"] or 0
        marks.append((lay["index"], at))
    return write_layer_waves(bundle.config, memory, layer, out,  # type: ignore[attr-defined]
                             marks=marks, timeout_cycles=timeout_cycles)


def _table(rec: dict) -> None:
    hdr = ("#", "layer", "op", "output", "bit-exact", "cycles", "ideal", "util")
    rows = [hdr]
    for lay in rec["layers"]:
        rows.append((str(lay["index"]), lay["name"], lay["op"],
                     "x".join(map(str, lay["shape"])),
                     "yes" if lay["bit_exact"] else f"NO ({lay['mismatches']})",
                     "-" if lay["cycles"] is None else str(lay["cycles"]),
                     str(lay["ideal_cycles"]),
                     "-" if lay["utilization"] is None else f"{lay['utilization']:.3f}"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(hdr))]
    for r in rows:
        print("  ".join(c.rjust(w) if i in (0, 5, 6, 7) else c.ljust(w)
                        for i, (c, w) in enumerate(zip(r, widths, strict=True))).rstrip())
    src = "measured at the RTL MARKs" if rec["cycles_source"] == "rtl" else "estimated"
    print(f"level {rec['level']} on {rec['config']}: {rec['cycles']} cycles ({src}), "
          f"{rec['ideal_cycles']} ideal, utilization {rec['utilization']}, "
          f"wall {rec['wall_s']} s")
    if rec["bit_exact"]:
        print(f"bit-exact: yes (every one of {len(rec['layers'])} layer(s))")
    else:
        print(f"bit-exact: NO, {rec['mismatches']} mismatching element(s); "
              f"{rec['first_mismatch_text']}")
    if rec.get("dump_dir"):
        print(f"dumped {rec['dumped']} tensor(s) to {rec['dump_dir']}")
    if rec.get("waves"):
        w = rec["waves"]
        print(f"waves: {w['fst']} (cycles {w['from_cycle']}-{w['to_cycle']}), signal list "
              f"{w['gtkw']}: gtkwave {w['gtkw']}")
