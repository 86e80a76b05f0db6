"""Event-level cycle model of the core: per-layer cycles of a program without RTL.

The model replays the instruction stream once (pure Python, one step per instruction and a
few bisections per DMA instruction, never one step per cycle) through the timing rules of
the gateware (hw/controller.py, hw/dma.py, hw/compute.py; docs/hw.md):

* **Fetch** (priority on the memory port): word ``k`` of the program is requested at
  ``q_k = max(q_{k-1} + 1, pop_{k-D} + 1)`` (``D = mem_latency + 2*words_per_insn + 1``
  credits) and is readable ``mem_latency + 1`` cycles later.
* **Assemble/issue**: the words of an instruction are popped one per cycle into the
  assembler, the instruction moves into the issue register when the previous one leaves it,
  and issues one cycle later at the earliest (``max(1, 16 / bus_bytes)`` cycles per
  instruction in steady state).
* **DMA**: one request per memory-port cycle that fetch does not take; a LOAD's next
  instruction is accepted the cycle after its last request, its busy ends ``mem_latency``
  cycles later; a STORE writes one cycle behind its OUT read.
* **Compute**: 1-deep next-tile slot, ``ceil(rows/2)`` cycles of pixel walk, ``K`` reduction
  steps per tile back to back, drains of ``npix`` rows overlapped with the next tile (a
  draining tile's last step waits while the previous drain has more than 4 rows to shift),
  busy until the pipeline (4 cycles) and the drain (``npix + 9`` cycles after the last step)
  are empty.
* **LOAD CB**: reads as a LOAD, throttled to ``mem_latency + 2`` words ahead of the codebook
  writer, which takes one cycle per codeword a word touches; the next instruction is
  accepted the cycle after the writer's last word.
* **Codebook tiles** (``WFMT = 1``): the index fetcher claims a tile when it is done with the
  previous one; the decoder's first code is 2 cycles after the first index; a cut-short last
  block is flushed (2 bubbles before the next tile), a ``CB_D``/``CB_K`` change waits for the
  active tile to leave, a raw tile's WGT reads delay the fetcher.
* **SYNC / END** wait for the masked units' busy to fall; **MARK** reports the cycle.

Measured against the RTL (bench/bench_cycle_model.py, tests/sw/test_cycles.py) the model is
cycle-exact on every layer of the corpus, ResNet-8/20 conv layers included, with memory that
never stalls, and on codebook programs (pq ResNet-8, codebook micro programs; see
docs/estimates.md). Memory that refuses requests on a fraction ``stall`` of cycles (the RTL
harness's random stalls) is modelled by spreading that fraction evenly (``estimate(...,
stall=p)``): within 3.5 % of the RTL with 25 % random stalls on the corpus, where the
no-stall model is off by up to 22 %.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from shiftbook.config import CoreConfig
from shiftbook.isa import INSN_BYTES, WFMT_CODEBOOK, Buf, Insn, Mode, Opcode, Reg

__all__ = ["CycleEstimate", "LayerCycles", "estimate", "estimate_program", "compare_marks"]

# Fixed offsets (hw/controller.py, hw/compute.py), checked against the RTL harness.
MARK_OFFSET = 1       # the MARK's reported counter is the cycle after it issues
DONE_OFFSET = 2       # `done` is sampled two edges after END issues
PIPE = 4              # cycles after a tile's last step until its accumulators are written
DRAIN_TAIL = 9        # cycles after a draining tile's last step, beyond npix, until idle


@dataclass
class LayerCycles:
    """One MARK segment: the cycles from the previous MARK (or start) to this MARK."""

    mark: int
    name: str
    cycles: int
    start: int
    end: int
    compute_steps: int = 0
    dma_words: int = 0
    instructions: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


@dataclass
class CycleEstimate:
    """The model's answer for one program."""

    total: int
    marks: list[tuple[int, int]]
    layers: list[LayerCycles] = field(default_factory=list)
    compute_steps: int = 0
    dma_words: int = 0
    fetch_words: int = 0
    instructions: int = 0
    # Parts of the program the model times only approximately (empty: cycle-exact rules).
    approximate: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "marks": [list(m) for m in self.marks],
                "approximate": list(self.approximate),
                "layers": [lay.to_dict() for lay in self.layers],
                "compute_steps": self.compute_steps, "dma_words": self.dma_words,
                "fetch_words": self.fetch_words, "instructions": self.instructions}


class _Port:
    """The memory port: cycles taken by instruction fetch (sorted), and the cycles external
    memory refuses requests (a stall fraction ``stall`` = num/den spread evenly: cycle ``t``
    stalls when ``floor((t+1)*stall) > floor(t*stall)``), for the DMA's free cycles."""

    def __init__(self, stall: Fraction = Fraction(0)) -> None:
        self.taken: list[int] = []
        self.num, self.den = stall.numerator, stall.denominator

    def _stalls(self, t: int) -> int:
        """Stalled cycles in ``[0, t)``."""
        return t * self.num // self.den if self.num and t > 0 else 0

    def stalled(self, t: int) -> bool:
        return self.num > 0 and self._stalls(t + 1) > self._stalls(t)

    def next_ready(self, t: int) -> int:
        """The first cycle >= ``t`` that memory accepts a request on."""
        while self.stalled(t):
            t += 1
        return t

    def nth_free(self, start: int, n: int) -> int:
        """The cycle of the ``n``-th (1-based) cycle >= ``start`` that neither fetch takes nor
        memory refuses (fetch only takes cycles memory accepts)."""
        lo = bisect.bisect_left(self.taken, start)
        base = self._stalls(start)
        x = start + n - 1
        while True:
            hi = bisect.bisect_right(self.taken, x)
            free = x - start + 1 - (hi - lo) - (self._stalls(x + 1) - base)
            if free >= n:
                return x
            x += n - free


class _Dma:
    """The DMA unit. An instruction's timing is resolved lazily, only when the controller
    waits on it (then every fetch request that can take a port cycle before is known); a
    store's last write may stay pending past the walker's release and is resolved with the
    instruction after it."""

    def __init__(self, cfg: CoreConfig, port: _Port) -> None:
        self.cfg = cfg
        self.port = port
        # (accept cycle, words, store, codebook block size CB_D or 0 for a plain transfer)
        self.pending: tuple[int, int, bool, int] | None = None
        self.write_from: int | None = None   # a store's last write goes out from this cycle
        self.ready = 0      # first cycle a new instruction can be accepted
        self.free = 0       # first cycle busy is low (without a pending write)

    def _leftover(self) -> int:
        """The cycle of the pending store write (-1 if none); clears it."""
        if self.write_from is None:
            return -1
        w = self.port.nth_free(self.write_from, 1)
        self.write_from = None
        self.free = max(self.free, w + 1)
        return w

    def resolve_ready(self) -> int:
        """The first cycle the walker accepts a new instruction."""
        if self.pending is None:
            return self.ready
        c, n, store, cbd = self.pending
        self.pending = None
        if n == 0:
            self.ready = max(self.ready, c + 1)
            self.free = max(self.free, c + 1)
            return self.ready
        w = self._leftover()     # a pending write goes before any new request
        if cbd:
            last = self._load_cb(max(c + 1, w + 1), n, cbd)
            self.ready = last + 1
            self.free = max(self.free, last + 1)
        elif store:
            # OUT read one cycle ahead of each write; the walker is released the cycle after
            # the (n-1)-th write is accepted; the n-th write is left pending.
            first = max(c + 2, w + 1)
            prev = self.port.nth_free(first, n - 1) if n > 1 else max(c + 1, w)
            self.ready = prev + 1
            self.write_from = prev + 1 if n > 1 else first
            self.free = max(self.free, self.ready)
        else:
            last = self.port.nth_free(max(c + 1, w + 1), n)
            self.ready = last + 1
            self.free = max(self.free, last + self.cfg.mem_latency + 1)
        return self.ready

    def _load_cb(self, start: int, n: int, cbd: int) -> int:
        """LOAD CB from ``start``: the cycle of the codebook writer's last word (hw/dma.py).

        Read ``k`` goes out on a free port cycle once fewer than ``mem_latency + 2`` words are
        read and not yet written (``>= pop[k - depth] + 1``); its response is in the word
        queue ``mem_latency + 1`` cycles after the request; the writer takes one cycle per
        codeword a word touches and pops the word in its last one."""
        B = self.cfg.bus_bytes
        L = self.cfg.mem_latency
        depth = L + 2
        pops: list[int] = []
        req = start - 1
        for k in range(n):
            x = req + 1
            if k >= depth:
                x = max(x, pops[k - depth] + 1)
            req = self.port.nth_free(x, 1)
            segs = (k * B + B - 1) // cbd - (k * B) // cbd + 1
            begin = max(req + L + 1, pops[-1] + 1 if pops else 0)
            pops.append(begin + segs - 1)
        return pops[-1]

    def resolve_free(self) -> int:
        """The first cycle DMA busy is low."""
        self.resolve_ready()
        self._leftover()
        return self.free

    def issue(self, c: int, words: int, store: bool, cbd: int = 0) -> None:
        self.pending = (c, words, store, cbd)
        self.free = max(self.free, c + 1)


class _Compute:
    """The compute unit: next-tile slot, active tile, drain."""

    def __init__(self, cfg: CoreConfig) -> None:
        rows = cfg.rows + (cfg.rows % 2)
        self.walk = rows // 2
        self.slot_free = 0      # first cycle a COMPUTE can be accepted (slot empty)
        self.last_emit = -10    # last step cycle of the latest tile
        self.drain_ok = -10     # first cycle a draining tile's last step may be accepted
        self.free = 0           # first cycle busy is low
        # Codebook tiles (WFMT = 1): the index fetcher and the decoder (hw/compute.py).
        self.f_done = -10       # the fetcher's last step of the latest codebook tile
        self.dec_ok = -10       # first cycle the decoder takes the next tile's first index
        self.prev: tuple[int, int] | None = None    # (CB_D, CB_K) of the previous tile if
        self.prev_emit = -10                        # codebook, and its last step

    def issue(self, c: int, steps: int, drain: bool, npix: int,
              cb: tuple[int, int] | None = None) -> None:
        """COMPUTE accepted at ``c``; ``cb``: (effective CB_D, CB_K) of a codebook tile."""
        take = max(c + self.walk + 1, self.last_emit)
        if cb is None:
            e = take + steps
            e_ns = e
        else:
            d = cb[0]
            # the fetcher claims the tile once it is in the slot and done with the previous
            # tile; a tile with another CB_D/CB_K waits until the active one has left
            claim = max(c + 1, self.f_done)
            if self.prev is not None and self.prev != cb:
                claim = max(claim, self.prev_emit + 1)
            push = max(claim + 1, self.dec_ok)   # first index into the decoder
            if self.prev is None and claim - 1 <= self.prev_emit:
                push = max(push, self.prev_emit + 3)   # a raw tile's WGT reads go first
            take = max(take, claim + 1)
            first = max(take + 1, push + 2)      # the decoder's latency is 2
            e_ns = first + steps - 1
            nb = -(-steps // d)
            rest = steps - (nb - 1) * d
            push_last = push if nb == 1 else first + (nb - 1) * d - 2
            self.f_done = push_last + rest - 1
            e = e_ns
        self.slot_free = take + 1
        if drain:
            e = max(e, self.drain_ok)
            self.drain_ok = e + max(4, npix)
            self.free = max(self.free, e + npix + DRAIN_TAIL)
        self.free = max(self.free, e + PIPE)
        self.last_emit = e
        if cb is not None:
            # a block cut short is flushed with the last step: the next index goes in a
            # cycle later; a full last block takes it as its last code is loaded
            self.dec_ok = e + 1 if rest < cb[0] else e_ns - 1
        self.prev = cb
        self.prev_emit = e


def _stall_fraction(stall: float) -> Fraction:
    if isinstance(stall, bool) or not isinstance(stall, (int, float)) or not 0 <= stall < 1:
        raise ValueError(f"memory stall probability must be in [0, 1), not {stall!r}")
    return Fraction(stall).limit_denominator(10_000)


def estimate_program(cfg: CoreConfig, insns: list[Insn],
                     layer_names: dict[int, str] | None = None, *,
                     stall: float = 0.0) -> CycleEstimate:
    """Cycle model of ``insns`` (decoded program from word 0) on ``cfg``.

    ``stall``: the probability that external memory refuses a request in a given cycle (the
    RTL harness's ``stall_pct / 100``); the model spreads that fraction of stalled cycles
    evenly over time (an expected-value model of random stalls). 0: memory never stalls,
    the cycle-exact case."""
    B = cfg.bus_bytes
    L = cfg.mem_latency
    wpi = max(1, INSN_BYTES // B)
    ipw = max(1, B // INSN_BYTES)
    depth = L + 2 * wpi + 1
    n = len(insns)
    for i, insn in enumerate(insns):
        if insn.op == Opcode.END:
            n = i + 1
            break
    nwords = -(-n // ipw) * wpi if ipw == 1 else -(-n // ipw)

    port = _Port(_stall_fraction(stall))
    dma = _Dma(cfg, port)
    cu = _Compute(cfg)
    q: list[int] = []          # fetch request cycle per word
    pop: list[int | None] = [None] * (nwords + depth + 1)

    def fetch() -> None:
        """Request every word whose credit is known (fetch runs ahead of the issue)."""
        while len(q) < len(pop):
            k = len(q)
            t = q[-1] + 1 if q else 0
            if k >= depth:
                p = pop[k - depth]
                if p is None:
                    return
                t = max(t, p + 1)
            t = port.next_ready(t)
            q.append(t)
            port.taken.append(t)

    def avail(k: int) -> int:
        fetch()
        if k >= len(q):
            raise AssertionError(f"word {k} fetched before its credit")
        return q[k] + L + 1

    # Per-instruction move (into the issue register) and consume cycles.
    move: list[int] = []
    cons: list[int] = []
    regs: dict[int, int] = {}

    def pops(i: int) -> None:
        """Pop instruction i's words into the assembler (wpi > 1; needs move[i-1])."""
        if i >= n:
            return
        t = move[i - 1] if i else -1
        last_pop = pop[i * wpi - 1] if i else -1
        for j in range(wpi):
            k = i * wpi + j
            t = max(avail(k), t, (last_pop if last_pop is not None else -1) + 1)
            pop[k] = t
            last_pop = t

    def assemble(i: int) -> int:
        """Instruction i's move cycle into the issue register (needs cons[i-1])."""
        prev_move = move[i - 1] if i else -1
        prev_cons = cons[i - 1] if i else -1
        if wpi == 1:
            w = i // ipw
            m = max(avail(w), prev_cons, prev_move + 1)
            if ipw == 1 or i % ipw == ipw - 1 or i == n - 1:
                pop[w] = m
            return m
        if i == 0:
            pops(0)
        last = pop[i * wpi + wpi - 1]
        assert last is not None
        return max(last + 1, prev_cons, prev_move + 1)

    approx: set[str] = set()
    marks: list[tuple[int, int]] = []
    seg_steps = seg_words = seg_insns = 0
    layers: list[LayerCycles] = []
    tot_steps = tot_words = 0
    seg_start = 0
    end_cycle = 0
    for i in range(n):
        insn = insns[i]
        m = assemble(i)
        move.append(m)
        if wpi > 1:
            pops(i + 1)     # the next instruction's words are popped while this one waits
        r = m + 1
        op = insn.op
        seg_insns += 1
        if op in (Opcode.LOAD, Opcode.STORE):
            fetch()
            c = max(r, dma.resolve_ready())
            words = insn.args["words"] * insn.args["runs"]
            cbd = 0
            if op == Opcode.LOAD and insn.args["buf"] == Buf.CB:
                cbd = regs.get(Reg.CB_D, 0)
                cbd = cfg.max_d if cbd <= 0 or cbd > cfg.max_d else cbd
            dma.issue(c, words, op == Opcode.STORE, cbd)
            seg_words += words
        elif op == Opcode.COMPUTE:
            c = max(r, cu.slot_free)
            steps = (max(1, regs.get(Reg.NCH, 1)) * max(1, regs.get(Reg.KH, 1))
                     * max(1, regs.get(Reg.KW, 1)))
            cb = None
            if regs.get(Reg.WFMT, 0) == WFMT_CODEBOOK and regs.get(Reg.MODE, 0) == Mode.MAC:
                d = regs.get(Reg.CB_D, 0)
                cb = (cfg.max_d if d <= 0 or d > cfg.max_d else d, regs.get(Reg.CB_K, 0))
            cu.issue(c, steps, bool(insn.args["drain"]), insn.args["npix"], cb)
            seg_steps += steps
        elif op in (Opcode.SYNC, Opcode.END):
            mask = insn.args.get("mask", 3) if op == Opcode.SYNC else 3
            c = r
            if mask & 1:
                fetch()
                c = max(c, dma.resolve_free())
            if mask & 2:
                c = max(c, cu.free)
        else:
            c = r
            if op == Opcode.SET:
                v = insn.args["value"]
                regs[insn.args["reg"]] = v & 0xFFFF if insn.args["reg"] in (
                    Reg.KH, Reg.KW, Reg.NCH) else v
            elif op == Opcode.MARK:
                mid = insn.args["id"]
                at = c + MARK_OFFSET
                marks.append((mid, at))
                name = (layer_names or {}).get(mid, f"mark{mid}")
                layers.append(LayerCycles(mid, name, at - seg_start, seg_start, at,
                                          seg_steps, seg_words, seg_insns))
                tot_steps += seg_steps
                tot_words += seg_words
                seg_start = at
                seg_steps = seg_words = seg_insns = 0
        cons.append(c)
        if op == Opcode.END:
            end_cycle = c
    total = end_cycle + DONE_OFFSET
    return CycleEstimate(total, marks, layers, tot_steps + seg_steps, tot_words + seg_words,
                         len(q), n, sorted(approx))


def estimate(bundle: Any, *, stall: float = 0.0) -> CycleEstimate:
    """Per-layer cycles of a loaded bundle (``shiftbook.sw.bundle.Bundle``), without RTL;
    ``stall``: external memory's stall probability per cycle (``estimate_program``)."""
    names: dict[int, str] = {}
    for lay in getattr(bundle, "layers", []) or []:
        if isinstance(lay, dict) and "index" in lay:
            names[int(lay["index"])] = str(lay.get("name", lay["index"]))
    return estimate_program(bundle.config, bundle.program, names, stall=stall)


def compare_marks(est: CycleEstimate, rtl_cycles: int,
                  rtl_marks: list[tuple[int, int]]) -> dict[str, Any]:
    """Model vs measured, per MARK segment and in total (error = model/RTL - 1, in %)."""
    segs = []
    if [m for m, _ in est.marks] != [m for m, _ in rtl_marks]:
        raise ValueError(f"model MARKs {[m for m, _ in est.marks]} differ from the RTL's "
                         f"{[m for m, _ in rtl_marks]}")
    prev_r = 0
    for lay, (_, at) in zip(est.layers, rtl_marks, strict=True):
        rtl = at - prev_r
        segs.append({"name": lay.name, "mark": lay.mark, "model": lay.cycles, "rtl": rtl,
                     "error_pct": _pct(lay.cycles, rtl)})
        prev_r = at
    segs.append({"name": "total", "mark": None, "model": est.total, "rtl": rtl_cycles,
                 "error_pct": _pct(est.total, rtl_cycles)})
    worst = max(abs(s["error_pct"]) for s in segs)
    return {"segments": segs, "max_abs_error_pct": worst}


def _pct(model: int, rtl: int) -> float:
    return 100.0 * (model - rtl) / rtl if rtl else 0.0
