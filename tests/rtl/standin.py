"""The stand-in core (``standin_core.v``) as a CoreSource, its Python model and a random
program generator: the RTL harness is tested on them independently of the real core."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from shiftbook.config import CoreConfig
from shiftbook.isa import INSN_BYTES, Buf, Insn, Opcode, Reg, decode, encode_program
from shiftbook.sim.rtl.runner import CoreSource, verilog_core

HERE = Path(__file__).resolve().parent
SCRATCH_WORDS = 256


def standin_core() -> CoreSource:
    return verilog_core(HERE / "standin_core.v", params=lambda c: {"BUS_BYTES": c.bus_bytes})


@dataclass
class ModelResult:
    memory: bytes
    marks: list[int] = field(default_factory=list)
    reads: int = 0
    writes: int = 0
    status: str = "done"


def run_model(cfg: CoreConfig, image: bytes, *, max_insns: int = 100_000) -> ModelResult:
    """What the stand-in does to external memory (see the header of standin_core.v)."""
    b = cfg.bus_bytes
    mem = bytearray(image + bytes(-len(image) % b))
    image_len = len(mem)
    scratch = [bytes(b)] * SCRATCH_WORDS
    out = ModelResult(memory=b"")
    wpi = INSN_BYTES // b
    high = 0
    pc = 0
    for _ in range(max_insns):
        raw = bytes(mem[pc * b:pc * b + INSN_BYTES]).ljust(INSN_BYTES, b"\0")
        word = int.from_bytes(raw, "little")
        pc += wpi
        out.reads += wpi
        op = word & 0xF
        if op >= 8:
            out.status = "error"
            break
        insn = decode(word)
        if insn.op == Opcode.END:
            break
        if insn.op == Opcode.MARK:
            out.marks.append(insn.id)
        elif insn.op in (Opcode.LOAD, Opcode.STORE):
            for r in range(insn.runs):
                for w in range(insn.words):
                    ext = insn.ext_addr + r * insn.ext_stride + w
                    buf = (insn.buf_addr + r * insn.buf_stride + w) % SCRATCH_WORDS
                    if insn.op == Opcode.LOAD:
                        out.reads += 1
                        chunk = bytes(mem[ext * b:(ext + 1) * b])
                        scratch[buf] = chunk.ljust(b, b"\0")
                    else:
                        out.writes += 1
                        if len(mem) < (ext + 1) * b:
                            mem.extend(bytes((ext + 1) * b - len(mem)))
                        mem[ext * b:(ext + 1) * b] = scratch[buf]
                        high = max(high, ext + 1)
    else:
        out.status = "timeout"
    out.memory = bytes(mem[:max(image_len, high * b)])
    return out


def random_program(cfg: CoreConfig, rng: random.Random, *, n: int = 12,
                   data_words: int = 96) -> tuple[bytes, list[Insn]]:
    """A random MARK/LOAD/STORE/SET/NOP program followed by END, then random data.

    Data lives after the program; stores go to the data area or past the image end (the
    harness must return memory up to the highest word written)."""
    b = cfg.bus_bytes
    insns: list[Insn] = []
    mark_id = rng.randrange(1 << 16)
    for _ in range(n):
        kind = rng.choice(["mark", "load", "load", "store", "store", "set", "nop", "sync"])
        if kind == "mark":
            mark_id = (mark_id + rng.randrange(1, 1000)) % (1 << 16)
            insns.append(Insn(Opcode.MARK, {"id": mark_id}))
        elif kind in ("load", "store"):
            insns.append(Insn(Opcode.LOAD if kind == "load" else Opcode.STORE, {
                "buf": Buf.ACT if kind == "load" else Buf.OUT,
                "ext_addr": 0, "buf_addr": rng.randrange(SCRATCH_WORDS),
                "words": rng.randrange(1, 9), "runs": rng.randrange(1, 5),
                "ext_stride": rng.randrange(0, 12), "buf_stride": rng.randrange(0, 12),
            }))
        elif kind == "set":
            insns.append(Insn(Opcode.SET, {"reg": Reg.KH, "value": rng.randrange(1 << 32)}))
        elif kind == "sync":
            insns.append(Insn(Opcode.SYNC, {"mask": 3}))
        else:
            insns.append(Insn(Opcode.NOP))
    insns.append(Insn(Opcode.END))
    prog_words = len(insns) * INSN_BYTES // b
    data_base = prog_words + 4
    fixed = []
    for insn in insns:
        if insn.op in (Opcode.LOAD, Opcode.STORE):
            args = dict(insn.args)
            span = (args["runs"] - 1) * args["ext_stride"] + args["words"]
            top = data_words + (16 if insn.op == Opcode.STORE else 0)
            args["ext_addr"] = data_base + rng.randrange(max(1, top - span))
            insn = Insn(insn.op, args)
        fixed.append(insn)
    prog = encode_program(fixed)
    data = rng.randbytes(data_words * b)
    image = prog + bytes(data_base * b - len(prog)) + data
    return image, fixed
