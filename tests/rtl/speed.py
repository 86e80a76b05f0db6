"""RTL simulation speed of the generated core on a hand-assembled conv layer.

    .venv/bin/python tests/rtl/speed.py [preset] [repeat]

Builds (or reuses) the preset's model, runs one 3x3 conv (32 input channels, 16x16 pixels)
with its tiles issued ``repeat`` times, checks the result byte for byte, and prints a JSON
record: cycles, simulator wall and CPU seconds, cycles per second of each, build seconds.
CPU seconds are the fairer figure on a shared machine.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from programs import conv_program  # noqa: E402

from shiftbook.config import PRESETS  # noqa: E402
from shiftbook.sim.rtl import runner  # noqa: E402


def main(argv: list[str]) -> int:
    cfg = PRESETS[argv[0] if argv else "base"]
    repeat = int(argv[1]) if len(argv) > 1 else 10
    t0 = time.monotonic()
    bdir = runner.build(cfg)
    build_s = time.monotonic() - t0
    case = conv_program(cfg, cin=32, cout=cfg.cols, h=16, w=16, k=3, pad=1, repeat=repeat,
                        max_exp=7)
    res = runner.run_image(cfg, case.image, timeout_cycles=50_000_000)
    if res.memory != case.expected:
        print("MISMATCH: RTL memory differs from the reference", file=sys.stderr)
        return 1
    record = {
        "config": cfg.name, "pes": cfg.pes, "cycles": res.cycles,
        "sim_wall_s": round(res.sim_wall_s, 3), "sim_cpu_s": round(res.sim_cpu_s, 3),
        "process_wall_s": round(res.wall_s, 3),
        "cycles_per_s": round(res.cycles_per_s), "cycles_per_cpu_s": round(res.cycles_per_cpu_s),
        "build_or_reuse_s": round(build_s, 1), "build_dir": bdir.name,
        "loadavg_1m": os.getloadavg()[0],
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
