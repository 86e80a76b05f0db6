"""`shiftbook layer`: build a seeded random layer, compile it, run it at a level, compare with
the golden reference."""

from __future__ import annotations

import argparse
import json

from shiftbook.commands import add_force_argument
from shiftbook.commands.progress import Stage
from shiftbook.sim.layer import LEVELS, LayerError, run_layer  # noqa: F401 (re-exported)

NAME = "layer"
HELP = "compile and run one random conv/linear layer at a level, bit-exact against golden"

def add_arguments(p: argparse.ArgumentParser) -> None:
    from shiftbook.config import PRESETS
    from shiftbook.sw.reference import INPUT_DISTS, WEIGHT_DISTS, WEIGHT_FORMATS

    p.add_argument("--op", default="conv", help="conv or linear (default conv)")
    p.add_argument("--cin", type=int, default=16, help="input channels (default 16)")
    p.add_argument("--cout", type=int, default=32, help="output channels (default 32)")
    p.add_argument("--kernel", type=int, default=3, help="kernel size (default 3)")
    p.add_argument("--stride", type=int, default=1, help="stride (default 1)")
    p.add_argument("--padding", type=int, default=None, help="padding (default kernel//2)")
    p.add_argument("--size", type=int, default=14, help="input height and width (default 14)")
    p.add_argument("--level", default="functional",
                   help=f"one of {', '.join(LEVELS)} (default functional)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--config", default=None,
                   help=f"core config: a preset ({', '.join(PRESETS)}) or a JSON file "
                        "(default small)")
    p.add_argument("--weights-dist", default="normal",
                   help=f"weights: {', '.join(WEIGHT_DISTS)} (default normal)")
    p.add_argument("--weights", default="shift",
                   help=f"stored weight format: {', '.join(WEIGHT_FORMATS)} (default shift: raw "
                        f"codes; two-term: +-2^a +-2^b per weight; kmeans: scalar codebook, "
                        f"d=1; pq: product-quantized)")
    p.add_argument("--k", type=int, default=None,
                   help="codebook size for kmeans/pq (default 256)")
    p.add_argument("--d", type=int, default=None,
                   help="pq block size (default: KH*KW, 4 for 1x1/linear)")
    p.add_argument("--input-dist", default="normal",
                   help=f"input: {', '.join(INPUT_DISTS)} (default normal)")
    p.add_argument("--no-relu", action="store_true", help="no ReLU after the layer")
    p.add_argument("--residual", action="store_true",
                   help="add the input as a residual operand (needs cin == cout, stride 1)")
    p.add_argument("--json", action="store_true", help="print exactly one JSON object")
    p.add_argument("-o", "--output", default=None, metavar="BUNDLE_DIR",
                   help="keep the program bundle in this directory (an existing directory is "
                        "replaced only if it is a bundle or empty)")
    add_force_argument(p)


def check_fits(args: argparse.Namespace) -> None:
    """Refuse a layer whose tensors cannot fit the config's external memory (one byte per
    activation and weight code, no padding: the least any layout needs) before anything is
    allocated: ``--size 100000`` would otherwise ask numpy for hundreds of GiB."""
    from shiftbook.config import load_config

    cfg = load_config(args.config)
    if min(args.cin, args.cout, args.size, args.kernel) < 1:
        return          # run_layer names the option
    kernel = 1 if args.op == "linear" else args.kernel
    size = 1 if args.op == "linear" else args.size
    need = {"input": args.cin * size * size, "output": args.cout * size * size,
            "weights": args.cout * args.cin * kernel * kernel}
    have = cfg.mem_words * cfg.bus_bytes
    if sum(need.values()) > have:
        what = ", ".join(f"{k} {v}" for k, v in need.items())
        raise LayerError(f"--cin {args.cin} --cout {args.cout} --size {args.size} --kernel "
                         f"{args.kernel}: the layer needs at least {sum(need.values())} bytes "
                         f"({what}), more than config {cfg.name}'s external memory holds "
                         f"({have} bytes: mem_words x bus_bytes)")


def run(args: argparse.Namespace) -> int:
    check_fits(args)
    with Stage("layer", f"compiling a random {args.op} layer and running it at the "
               f"{args.level} level", enabled=not args.json):
        rec = run_layer(args)
    if args.json:
        print(json.dumps(rec, sort_keys=True))
    else:
        rows = [
            ("layer", f"{rec['op']} {rec['input_shape']} -> {rec['output_shape']} "
                      f"k={rec['kernel']} s={rec['stride']} p={rec['padding']}"),
            ("config", f"{rec['config']} ({rec['config_hash']})"),
            ("level", rec["level"]),
            ("weights", rec["weights"] + (f" k={rec['k']} d={rec['d']} ({rec['block_layout']})"
                                          if rec["k"] else "")),
            ("weight bytes read", f"{rec['weight_bytes_read']} (int8 weights: "
                                  f"{rec['int8_weight_bytes']})"),
            ("bit-exact", "yes" if rec["bit_exact"] else f"NO ({rec['mismatches']} mismatches)"),
            ("cycles", str(rec["cycles"])),
            ("ideal cycles", str(rec["ideal_cycles"])),
            ("cycles/ideal", str(rec["cycles_per_ideal"])),
            ("instructions", str(rec["instructions"])),
            ("MACs", str(rec["macs"])),
        ]
        if rec["first_mismatch"]:
            m = rec["first_mismatch"]
            rows.append(("first mismatch",
                         f"(c={m['c']}, y={m['y']}, x={m['x']}) expected {m['expected']} got "
                         f"{m['got']} [group {m['group']}, band {m['band']}, tile {m['tile']}]"))
        if rec["bundle"]:
            rows.append(("bundle", rec["bundle"]))
        w = max(len(k) for k, _ in rows)
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
    return 0 if rec["bit_exact"] else 1
