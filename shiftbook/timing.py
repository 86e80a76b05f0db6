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

The units' rules live in ``shiftbook/timing_units.py``; this module replays a program through
them. It is the project's one timing model: the compiler ranks candidate tilings with it,
the functional simulator reports its cycles (and enforces its cycle limit on them),
``shiftbook layer``/``simulate``/``estimate`` report it, and the energy model takes its
per-layer traffic counts (:class:`LayerTraffic`).

Measured against the RTL (bench/bench_cycle_model.py, tests/sw/test_cycles.py) the model is
cycle-exact on every layer of the corpus, ResNet-8/20 conv layers included, with memory that
never stalls, and on codebook programs (pq ResNet-8, codebook micro programs; see
docs/estimates.md). Memory that refuses requests on a fraction ``stall`` of cycles (the RTL
harness's random stalls) is modelled by spreading that fraction evenly (``estimate(...,
stall=p)``): within 3.5 % of the RTL with 25 % random stalls on the corpus, where the
no-stall model is off by up to 22 %.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

from shiftbook.config import CoreConfig
from shiftbook.isa import INSN_BYTES, WFMT_CODEBOOK, Buf, Insn, Mode, Opcode, Reg
from shiftbook.timing_units import ComputeUnit, DmaUnit, MemoryPort

__all__ = ["CycleEstimate", "LayerCycles", "LayerTraffic", "estimate", "estimate_program",
           "compare_marks"]

# Fixed offsets (hw/controller.py, hw/compute.py), checked against the RTL harness.
MARK_OFFSET = 1       # the MARK's reported counter is the cycle after it issues
DONE_OFFSET = 2       # `done` is sampled two edges after END issues


@dataclass
class LayerTraffic:
    """What one MARK segment moves and reads, counted from its instructions with the
    registers as the core latches them: the event counts of the energy model
    (``sw/estimate/energy.py``, docs/energy.md)."""

    load_words: dict[int, int] = field(default_factory=dict)   # Buf -> bus words loaded
    store_words: int = 0
    mac_steps: int = 0     # reduction steps of MAC-mode COMPUTEs (one WGT row each if raw)
    drains: int = 0        # COMPUTEs that drain (one BIAS row read each)
    wgt_reads: int = 0     # WGT rows read: raw MAC steps + packed index rows of codebook tiles
    cb_steps: int = 0      # steps of codebook (WFMT = 1) tiles: one decoded code per column
    cb_codes: int = 0      # codes LOAD CB writes into each decoder lane

    def words(self, *bufs: int) -> int:
        """Bus words loaded into the buffers ``bufs``."""
        return sum(self.load_words.get(int(b), 0) for b in bufs)


@dataclass
class LayerCycles:
    """One MARK segment: the cycles from the previous MARK (or start) to this MARK.

    ``compute_steps`` counts the reduction steps of every COMPUTE (all modes), ``dma_words``
    the bus words of every LOAD and STORE; ``traffic`` breaks them down for the energy model
    (it is not part of :meth:`to_dict`)."""

    mark: int
    name: str
    cycles: int
    start: int
    end: int
    compute_steps: int = 0
    dma_words: int = 0
    instructions: int = 0
    traffic: LayerTraffic = field(default_factory=LayerTraffic)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if k != "traffic"}


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
    # With ``estimate_program(..., per_insn=True)``: per instruction up to END, the cycle the
    # controller is done with it (accepted by its unit, or its wait over).
    insn_cycles: list[int] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {"total": self.total, "marks": [list(m) for m in self.marks],
                "approximate": list(self.approximate),
                "layers": [lay.to_dict() for lay in self.layers],
                "compute_steps": self.compute_steps, "dma_words": self.dma_words,
                "fetch_words": self.fetch_words, "instructions": self.instructions}


def _stall_fraction(stall: float) -> Fraction:
    if isinstance(stall, bool) or not isinstance(stall, (int, float)) or not 0 <= stall < 1:
        raise ValueError(f"memory stall probability must be in [0, 1), not {stall!r}")
    return Fraction(stall).limit_denominator(10_000)


class _Segment:
    """Counts of the MARK segment being replayed."""

    def __init__(self, start: int) -> None:
        self.start = start
        self.steps = 0
        self.words = 0
        self.insns = 0
        self.traffic = LayerTraffic()


class _Replay:
    """One pass of a program (decoded from word 0, up to END) through the controller's fetch
    and issue and the DMA and compute units."""

    def __init__(self, cfg: CoreConfig, insns: list[Insn], stall: Fraction) -> None:
        self.cfg = cfg
        self.insns = insns
        B = cfg.bus_bytes
        self.L = cfg.mem_latency
        self.wpi = wpi = max(1, INSN_BYTES // B)
        self.ipw = ipw = max(1, B // INSN_BYTES)
        self.depth = self.L + 2 * wpi + 1
        n = len(insns)
        for i, insn in enumerate(insns):
            if insn.op == Opcode.END:
                n = i + 1
                break
        self.n = n
        nwords = -(-n // ipw) * wpi if ipw == 1 else -(-n // ipw)
        self.port = MemoryPort(stall)
        self.dma = DmaUnit(cfg, self.port)
        self.cu = ComputeUnit(cfg)
        self.q: list[int] = []          # fetch request cycle per word
        self.pop: list[int | None] = [None] * (nwords + self.depth + 1)
        # Per-instruction move (into the issue register) and consume cycles.
        self.move: list[int] = []
        self.cons: list[int] = []
        self.regs: dict[int, int] = {}
        self.seg = _Segment(0)

    # ---- fetch and issue ----
    def fetch(self) -> None:
        """Request every word whose credit is known (fetch runs ahead of the issue)."""
        q, pop = self.q, self.pop
        while len(q) < len(pop):
            k = len(q)
            t = q[-1] + 1 if q else 0
            if k >= self.depth:
                p = pop[k - self.depth]
                if p is None:
                    return
                t = max(t, p + 1)
            t = self.port.next_ready(t)
            q.append(t)
            self.port.taken.append(t)

    def avail(self, k: int) -> int:
        self.fetch()
        if k >= len(self.q):
            raise AssertionError(f"word {k} fetched before its credit")
        return self.q[k] + self.L + 1

    def pops(self, i: int) -> None:
        """Pop instruction i's words into the assembler (wpi > 1; needs move[i-1])."""
        if i >= self.n:
            return
        wpi, pop = self.wpi, self.pop
        t = self.move[i - 1] if i else -1
        last_pop = pop[i * wpi - 1] if i else -1
        for j in range(wpi):
            k = i * wpi + j
            t = max(self.avail(k), t, (last_pop if last_pop is not None else -1) + 1)
            pop[k] = t
            last_pop = t

    def assemble(self, i: int) -> int:
        """Instruction i's move cycle into the issue register (needs cons[i-1])."""
        prev_move = self.move[i - 1] if i else -1
        prev_cons = self.cons[i - 1] if i else -1
        if self.wpi == 1:
            ipw = self.ipw
            w = i // ipw
            m = max(self.avail(w), prev_cons, prev_move + 1)
            if ipw == 1 or i % ipw == ipw - 1 or i == self.n - 1:
                self.pop[w] = m
            return m
        if i == 0:
            self.pops(0)
        last = self.pop[i * self.wpi + self.wpi - 1]
        assert last is not None
        return max(last + 1, prev_cons, prev_move + 1)

    # ---- the units ----
    def _steps(self) -> int:
        regs = self.regs
        return (max(1, regs.get(Reg.NCH, 1)) * max(1, regs.get(Reg.KH, 1))
                * max(1, regs.get(Reg.KW, 1)))

    def _transfer(self, insn: Insn, r: int) -> int:
        """LOAD / STORE issued at ``r`` at the earliest: the cycle the DMA accepts it."""
        self.fetch()
        c = max(r, self.dma.resolve_ready())
        words = insn.args["words"] * insn.args["runs"]
        cbd = 0
        if insn.op == Opcode.LOAD and insn.args["buf"] == Buf.CB:
            cbd = self.regs.get(Reg.CB_D, 0)
            cbd = self.cfg.max_d if cbd <= 0 or cbd > self.cfg.max_d else cbd
        self.dma.issue(c, words, insn.op == Opcode.STORE, cbd)
        self.seg.words += words
        return c

    def _compute(self, insn: Insn, r: int) -> int:
        """COMPUTE issued at ``r`` at the earliest: the cycle its next-tile slot takes it."""
        regs, cfg = self.regs, self.cfg
        c = max(r, self.cu.slot_free)
        steps = self._steps()
        cb = None
        if regs.get(Reg.WFMT, 0) == WFMT_CODEBOOK and regs.get(Reg.MODE, 0) == Mode.MAC:
            d = regs.get(Reg.CB_D, 0)
            cb = (cfg.max_d if d <= 0 or d > cfg.max_d else d, regs.get(Reg.CB_K, 0))
        self.cu.issue(c, steps, bool(insn.args["drain"]), insn.args["npix"], cb)
        self.seg.steps += steps
        return c

    def _wait(self, insn: Insn, r: int) -> int:
        """SYNC / END: the cycle the masked units are idle."""
        mask = insn.args.get("mask", 3) if insn.op == Opcode.SYNC else 3
        c = r
        if mask & 1:
            self.fetch()
            c = max(c, self.dma.resolve_free())
        if mask & 2:
            c = max(c, self.cu.free)
        return c

    def _count(self, insn: Insn) -> None:
        """Add ``insn``'s traffic to the segment (registers as the core latches them)."""
        tr, regs, a = self.seg.traffic, self.regs, insn.args
        if insn.op == Opcode.LOAD:
            b = int(a["buf"])
            n = a["words"] * a["runs"]
            tr.load_words[b] = tr.load_words.get(b, 0) + n
            if b == Buf.CB:     # CB_K * CB_D codes into every lane (fewer if fewer arrive)
                tr.cb_codes += min(n * self.cfg.bus_bytes,
                                   max(1, regs.get(Reg.CB_K, 1)) * max(1, regs.get(Reg.CB_D, 1)))
        elif insn.op == Opcode.STORE:
            tr.store_words += a["words"] * a["runs"]
        elif insn.op == Opcode.COMPUTE:
            steps = self._steps()
            tr.drains += 1 if a.get("drain") else 0
            if regs.get(Reg.MODE, 0) == Mode.MAC:
                tr.mac_steps += steps
                if regs.get(Reg.WFMT, 0) == WFMT_CODEBOOK:
                    # one index row per block, IDX_PER_ROW index rows per WGT row; a tile's
                    # first index row starts a WGT row (docs/decoder.md)
                    blocks = -(-steps // max(1, regs.get(Reg.CB_D, 1)))
                    tr.wgt_reads += -(-blocks // max(1, regs.get(Reg.IDX_PER_ROW, 1)))
                    tr.cb_steps += steps
                else:
                    tr.wgt_reads += steps

    def step(self, i: int) -> int:
        """Replay instruction ``i``: the cycle the controller is done with it (accepted by
        its unit, or its wait over)."""
        insn = self.insns[i]
        m = self.assemble(i)
        self.move.append(m)
        if self.wpi > 1:
            self.pops(i + 1)    # the next instruction's words are popped while this one waits
        r = m + 1
        op = insn.op
        self.seg.insns += 1
        self._count(insn)
        if op in (Opcode.LOAD, Opcode.STORE):
            c = self._transfer(insn, r)
        elif op == Opcode.COMPUTE:
            c = self._compute(insn, r)
        elif op in (Opcode.SYNC, Opcode.END):
            c = self._wait(insn, r)
        else:
            c = r
            if op == Opcode.SET:
                v = insn.args["value"]
                self.regs[insn.args["reg"]] = v & 0xFFFF if insn.args["reg"] in (
                    Reg.KH, Reg.KW, Reg.NCH) else v
        self.cons.append(c)
        return c

    def run(self, layer_names: dict[int, str], per_insn: bool) -> CycleEstimate:
        marks: list[tuple[int, int]] = []
        layers: list[LayerCycles] = []
        steps = words = 0
        end_cycle = 0
        for i in range(self.n):
            c = self.step(i)
            op = self.insns[i].op
            if op == Opcode.MARK:
                mid = self.insns[i].args["id"]
                at = c + MARK_OFFSET
                marks.append((mid, at))
                s = self.seg
                layers.append(LayerCycles(mid, layer_names.get(mid, f"mark{mid}"), at - s.start,
                                          s.start, at, s.steps, s.words, s.insns, s.traffic))
                steps += s.steps
                words += s.words
                self.seg = _Segment(at)
            elif op == Opcode.END:
                end_cycle = c
        return CycleEstimate(end_cycle + DONE_OFFSET, marks, layers, steps + self.seg.steps,
                             words + self.seg.words, len(self.q), self.n, [],
                             list(self.cons) if per_insn else None)


def estimate_program(cfg: CoreConfig, insns: list[Insn],
                     layer_names: dict[int, str] | None = None, *,
                     stall: float = 0.0, per_insn: bool = False) -> CycleEstimate:
    """Cycle model of ``insns`` (decoded program from word 0) on ``cfg``.

    ``stall``: the probability that external memory refuses a request in a given cycle (the
    RTL harness's ``stall_pct / 100``); the model spreads that fraction of stalled cycles
    evenly over time (an expected-value model of random stalls). 0: memory never stalls,
    the cycle-exact case. ``per_insn``: also return every instruction's cycle
    (``CycleEstimate.insn_cycles``, e.g. for a cycle-limit watchdog)."""
    return _Replay(cfg, insns, _stall_fraction(stall)).run(layer_names or {}, per_insn)


def estimate(bundle: Any, *, stall: float = 0.0) -> CycleEstimate:
    """Per-layer cycles of a loaded bundle (``shiftbook.sw.bundle.Bundle``), without RTL;
    ``stall``: external memory's stall probability per cycle (``estimate_program``)."""
    names = {lay.index: lay.name for lay in bundle.layers}
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
