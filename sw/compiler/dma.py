"""DMA instructions for the schedulers (``conv_schedule.py``, ``pool.py``): a 2-D transfer cut
into LOAD/STORE pieces within the ISA's field widths, and the pacing that interleaves queued
pieces with COMPUTEs."""

from __future__ import annotations

from collections.abc import Callable

from shiftbook.config import CoreConfig
from shiftbook.isa import FIELDS, Buf, Insn, Opcode
from shiftbook.sw.compiler.emitter import Emitter

__all__ = ["MAX_WORDS", "MAX_RUNS", "MAX_ESTRIDE", "MAX_BSTRIDE", "dma_pieces", "pacing_cost",
           "feed_dma"]

MAX_WORDS = (1 << FIELDS[Opcode.LOAD]["words"][1]) - 1
MAX_RUNS = (1 << FIELDS[Opcode.LOAD]["runs"][1]) - 1
MAX_ESTRIDE = (1 << FIELDS[Opcode.LOAD]["ext_stride"][1]) - 1
MAX_BSTRIDE = (1 << FIELDS[Opcode.LOAD]["buf_stride"][1]) - 1


def dma_pieces(op: Opcode, buf: Buf, ext: int, bufa: int, words: int, runs: int,
               es: int, bs: int, piece: int) -> list[Insn]:
    """A 2-D transfer cut into instructions of at most ``piece`` words each (where possible)."""
    piece = max(1, min(piece, MAX_WORDS))
    out: list[Insn] = []

    def mk(e: int, b: int, w: int, r: int, s1: int, s2: int) -> Insn:
        return Insn(op, {"buf": int(buf), "ext_addr": e, "buf_addr": b, "words": w, "runs": r,
                         "ext_stride": s1 if r > 1 else 0, "buf_stride": s2 if r > 1 else 0})

    if words <= 0 or runs <= 0:
        return out
    if runs == 1 or (es == words and bs == words):
        total, pos = words * runs, 0
        while pos < total:
            n = min(piece, total - pos)
            out.append(mk(ext + pos, bufa + pos, n, 1, 0, 0))
            pos += n
    elif words <= piece and es <= MAX_ESTRIDE and bs <= MAX_BSTRIDE:
        rpp = max(1, min(MAX_RUNS, piece // words))
        for r0 in range(0, runs, rpp):
            out.append(mk(ext + r0 * es, bufa + r0 * bs, words, min(rpp, runs - r0), es, bs))
    else:
        for r in range(runs):
            for w0 in range(0, words, piece):
                out.append(mk(ext + r * es + w0, bufa + r * bs + w0, min(piece, words - w0), 1,
                              0, 0))
    return out


def pacing_cost(insn: Insn, cfg: CoreConfig) -> int:
    """What one queued DMA piece costs against a COMPUTE's budget when the schedulers pace
    the interleave (:func:`feed_dma`): its words plus 2, plus the memory latency for a LOAD.
    A scheduling heuristic that fixes the instruction order, not a cycle count: cycles come
    from the one timing model, ``shiftbook.timing``."""
    n = insn.args["words"] * insn.args["runs"]
    return n + 2 + (cfg.mem_latency if insn.op == Opcode.LOAD else 0)


def feed_dma(em: Emitter, cfg: CoreConfig, budget: int,
             refill: Callable[[], None] | None = None) -> None:
    """After a COMPUTE of about ``budget`` cycles of work, emit queued DMA pieces while their
    :func:`pacing_cost` fits it (at least one piece). ``refill`` is called when the queue
    runs dry (a prefetch); the feeding stops if it queues nothing.

    The controller waits for each piece before issuing the next, and the next round's SYNC
    DMA waits for the last one, so more would delay the next COMPUTE."""
    spent = 0
    while True:
        if not em.queue:
            if refill is None:
                break
            refill()
            if not em.queue:
                break
        cost = pacing_cost(em.queue[0][0], cfg)
        if spent and spent + cost > budget:
            break
        spent += cost
        em.pop()
