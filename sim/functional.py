"""Functional simulator (L1): executes a program one instruction at a time, exactly per
docs/isa.md, over an external memory image, in numpy.

Products and requantization come from ``sw/numerics``. Beyond the ISA semantics it checks what
the compiler promises (the hardware does not): ACT reads at valid positions inside ACT, no
accumulator overflow, buffer addresses in range and -- with ``check_hazards`` -- that SYNCs
order every pair of instructions on different units that touch the same buffer bytes (the
conservative rule: everything a unit was given since its last SYNC may still be running).

The cycle estimate (:class:`CycleModel`) replays the same instruction stream through a simple
timing model of the controller, the DMA unit and the compute unit (issue to a busy unit waits,
SYNC waits for the named units). Its constants are fields so that a calibrated model can
subclass or replace it.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shiftbook import numerics as nx
from shiftbook.config import CoreConfig
from shiftbook.isa import (
    INSN_BYTES,
    WFMT_CODEBOOK,
    WFMT_RAW,
    Buf,
    Flag,
    Insn,
    Mode,
    Opcode,
    Reg,
    SyncMask,
    decode,
)

__all__ = ["SimError", "HazardError", "CycleModel", "FunctionalResult", "FunctionalSim",
           "estimate_cycles",
           "run_program"]


class SimError(RuntimeError):
    """The program did something the hardware contract forbids (the message says what)."""


class HazardError(SimError):
    """Two instructions on different units touch the same buffer bytes without a SYNC."""


@dataclass
class CycleModel:
    """Analytical timing: per-instruction costs of the three engines.

    ``load = dma_setup + mem_latency + words*runs`` (reads pipelined within an instruction),
    ``store = dma_setup + words*runs``, ``compute = compute_setup + NCH*KH*KW`` (one reduction
    step per cycle), a drain keeps the compute unit busy for ``drain_cycles`` more cycles for
    SYNC/END purposes but overlaps the next COMPUTE. The controller spends ``issue`` cycles per
    instruction and waits when the target unit is busy.
    """

    issue: int = 1
    fetch_latency_per_insn: int = 0
    # Instruction fetch shares the memory port (with priority over the DMA): each instruction
    # takes 16/bus_bytes port cycles, the controller runs at most ``fetch_queue`` instructions
    # ahead of issue, and a fetch during a DMA transfer delays that transfer.
    model_fetch: bool = True
    fetch_queue: int | None = None  # default: (mem_latency + 2*wpi + 1) // wpi
    dma_setup: int = 2
    compute_setup: int = 2
    # WFMT = 1: the codebook decoder's latency (index in -> first code), paid by a COMPUTE
    # that issues to an idle compute unit.
    codebook_setup: int = 2
    drain_cycles: int | None = None  # default: rows

    def load(self, words: int, runs: int, cfg: CoreConfig) -> int:
        return self.dma_setup + cfg.mem_latency + words * runs

    def store(self, words: int, runs: int, cfg: CoreConfig) -> int:
        return self.dma_setup + words * runs

    def compute(self, steps: int, cfg: CoreConfig) -> int:
        return self.compute_setup + steps

    def drain(self, cfg: CoreConfig) -> int:
        return cfg.rows if self.drain_cycles is None else self.drain_cycles


@dataclass
class _Timeline:
    model: CycleModel
    cfg: CoreConfig
    t: int = 0
    dma_free: int = 0
    comp_free: int = 0
    comp_idle: int = 0
    busy: Counter = field(default_factory=Counter)
    fetch_t: int = 0
    issued: list[int] = field(default_factory=list)

    def _fetch(self) -> None:
        m, cfg = self.model, self.cfg
        if not m.model_fetch:
            return
        wpi = max(1, INSN_BYTES // cfg.bus_bytes)
        q = m.fetch_queue or max(1, (cfg.mem_latency + 2 * wpi + 1) // wpi)
        room = self.issued[-q] if len(self.issued) >= q else 0
        start = max(self.fetch_t, room)
        self.fetch_t = start + wpi
        if start < self.dma_free:  # the port was the DMA's: the transfer slips
            self.dma_free += wpi
        self.t = max(self.t, self.fetch_t + cfg.mem_latency)

    def step(self, insn: Insn, regs: dict[int, int]) -> None:
        m, cfg = self.model, self.cfg
        self._fetch()
        self.t += m.fetch_latency_per_insn
        op = insn.op
        if op in (Opcode.LOAD, Opcode.STORE):
            words, runs = insn.args["words"], insn.args["runs"]
            dur = (m.load if op == Opcode.LOAD else m.store)(words, runs, cfg)
            self.t = max(self.t, self.dma_free)
            self.dma_free = self.t + dur
            self.busy["dma"] += dur
        elif op == Opcode.COMPUTE:
            steps = regs.get(Reg.NCH, 0) * regs.get(Reg.KH, 0) * regs.get(Reg.KW, 0)
            dur = m.compute(steps, cfg)
            if regs.get(Reg.WFMT, 0) == WFMT_CODEBOOK and regs.get(Reg.MODE, 0) == Mode.MAC \
                    and self.t >= self.comp_free:
                # The index fetcher runs ahead into a queued COMPUTE, so only a tile that
                # finds the compute unit idle waits for the decoder's latency.
                dur += m.codebook_setup
            self.t = max(self.t, self.comp_free)
            self.comp_free = self.t + dur
            self.comp_idle = max(self.comp_idle, self.comp_free
                                 + (m.drain(cfg) if insn.args["drain"] else 0))
            self.busy["compute"] += dur
        elif op == Opcode.SYNC:
            mask = insn.args["mask"]
            if mask & SyncMask.DMA:
                self.t = max(self.t, self.dma_free)
            if mask & SyncMask.COMPUTE:
                self.t = max(self.t, self.comp_idle, self.comp_free)
        elif op == Opcode.END:
            self.t = max(self.t, self.dma_free, self.comp_free, self.comp_idle)
        self.issued.append(self.t)
        self.t += m.issue


@dataclass
class FunctionalResult:
    memory: bytes
    cycles: int
    marks: list[tuple[int, int]]
    stats: dict[str, Any]


_BUFS = ("ACT", "WGT", "BIAS", "RES", "OUT")


class FunctionalSim:
    """Executes one program on a memory image for ``cfg``."""

    def __init__(self, cfg: CoreConfig, memory: bytes, *, check_hazards: bool = True,
                 cycle_model: CycleModel | None = None) -> None:
        self.cfg = cfg
        total = cfg.mem_words * cfg.bus_bytes
        if len(memory) > total:
            raise SimError(f"memory image of {len(memory)} bytes exceeds the core's "
                           f"{total}-byte address space")
        self.image_len = len(memory)
        self.mem = np.zeros(total, np.uint8)
        self.mem[: len(memory)] = np.frombuffer(bytes(memory), np.uint8)
        self.top = len(memory)
        B = cfg.bus_bytes
        self.bufs = {
            "ACT": np.zeros(cfg.abuf_bytes, np.uint8),
            "WGT": np.zeros(cfg.wbuf_rows * cfg.wbuf_row_bytes, np.uint8),
            "BIAS": np.zeros(cfg.bbuf_rows * cfg.bbuf_row_bytes, np.uint8),
            "RES": np.zeros(cfg.cols * cfg.obuf_bytes, np.uint8),
            "OUT": np.zeros(cfg.cols * cfg.obuf_bytes, np.uint8),
            # The codebook every decoder lane holds: row i = codeword i, max_d codes.
            "CB": np.zeros(cfg.max_k * cfg.max_d, np.uint8),
        }
        self.B = B
        self.regs: dict[int, int] = {}
        self.acc = np.zeros((cfg.rows, cfg.cols), np.int64)
        self.check_hazards = check_hazards
        self.pending: dict[str, dict[str, list[tuple[np.ndarray, np.ndarray, int]]]] = {
            "dma": {}, "compute": {}}
        self.timeline = _Timeline(cycle_model or CycleModel(), cfg)
        self.marks: list[tuple[int, int]] = []
        self.counts: Counter = Counter()
        self.dma_words = Counter()
        self.pc = 0
        self.done = False

    # ---- hazards ----
    def _touch(self, unit: str, pc: int, spans: list[tuple[str, Any, Any]]) -> None:
        """Record byte intervals ``[lo, hi)`` (scalars or arrays) that instruction ``pc`` on
        ``unit`` touches, after checking them against the other unit's unsynced ones."""
        if not self.check_hazards:
            return
        other = self.pending["compute" if unit == "dma" else "dma"]
        mine = self.pending[unit]
        for buf, lo, hi in spans:
            lo = np.atleast_1d(np.asarray(lo, np.int64))
            hi = np.atleast_1d(np.asarray(hi, np.int64))
            keep = hi > lo
            lo, hi = lo[keep], hi[keep]
            if not lo.size:
                continue
            for olo, ohi, opc in other.get(buf, []):
                hit = (lo[:, None] < ohi[None, :]) & (olo[None, :] < hi[:, None])
                if hit.any():
                    i, j = np.argwhere(hit)[0]
                    raise HazardError(
                        f"instruction {pc} ({unit}) touches {buf} bytes [{lo[i]}, {hi[i]}) "
                        f"while instruction {opc} on the other unit may still use "
                        f"[{olo[j]}, {ohi[j]}) (missing SYNC)")
            mine.setdefault(buf, []).append((lo, hi, pc))

    # ---- execution ----
    def fetch(self) -> Insn:
        off = self.pc * INSN_BYTES
        if off + INSN_BYTES > self.mem.size:
            raise SimError(f"program counter {self.pc} ran off the end of memory")
        word = int.from_bytes(self.mem[off: off + INSN_BYTES].tobytes(), "little")
        try:
            return decode(word)
        except ValueError as e:
            raise SimError(f"instruction {self.pc}: {e}") from None

    def run(self, max_insns: int = 50_000_000, *,
            max_cycles: int | None = None) -> FunctionalResult:
        """Execute to END; ``max_cycles`` (``None`` or 0: no limit) is the watchdog of the
        RTL runner's ``timeout_cycles``, on the cycle count of the timing model."""
        if max_cycles is not None and max_cycles < 0:
            raise SimError(f"max_cycles={max_cycles} must be >= 0 (0: no limit)")
        while not self.done:
            if self.pc >= max_insns:
                raise SimError(f"no END after {max_insns} instructions")
            insn = self.fetch()
            self.execute(insn)
            if max_cycles and self.timeline.t > max_cycles:
                raise SimError(f"no END within the cycle limit of {max_cycles} (cycle "
                               f"{self.timeline.t} at instruction {self.pc}); raise the limit "
                               f"(--timeout-cycles) or check the program")
            self.pc += 1
        end = max(self.image_len, self.top)
        mem = self.mem[:end].tobytes()
        stats = {
            "instructions": dict(sorted((k.name, v) for k, v in self.counts.items())),
            "dma_words": dict(self.dma_words),
            "busy": dict(self.timeline.busy),
            "cycles": self.timeline.t,
        }
        return FunctionalResult(mem, self.timeline.t, list(self.marks), stats)

    def execute(self, insn: Insn) -> None:
        self.counts[insn.op] += 1
        op, a = insn.op, insn.args
        regs_snapshot = self.regs
        if op == Opcode.SET:
            self.regs = dict(self.regs)
            self.regs[a["reg"]] = a["value"]
        elif op == Opcode.LOAD:
            self._dma(a, load=True)
        elif op == Opcode.STORE:
            self._dma(a, load=False)
        elif op == Opcode.COMPUTE:
            self._compute(a)
        elif op == Opcode.SYNC:
            if a["mask"] & SyncMask.DMA:
                self.pending["dma"] = {}
            if a["mask"] & SyncMask.COMPUTE:
                self.pending["compute"] = {}
        elif op == Opcode.MARK:
            self.marks.append((a["id"], self.timeline.t))
        elif op == Opcode.END:
            self.done = True
        elif op == Opcode.NOP:
            pass
        else:  # pragma: no cover - decode() rejects unknown opcodes
            raise SimError(f"instruction {self.pc}: unknown opcode {op}")
        self.timeline.step(insn, regs_snapshot if op != Opcode.SET else self.regs)

    def _dma(self, a: dict[str, int], *, load: bool) -> None:
        B = self.B
        try:
            name = Buf(a["buf"]).name
        except ValueError:
            raise SimError(f"instruction {self.pc}: unknown buffer {a['buf']}") from None
        if load and name == "OUT" or not load and name != "OUT":
            raise SimError(f"instruction {self.pc}: {'LOAD into' if load else 'STORE from'} "
                           f"{name} is not allowed")
        if name == "CB":
            if not load:
                raise SimError(f"instruction {self.pc}: STORE from CB is not allowed")
            self._load_cb(a)
            return
        buf = self.bufs[name]
        words, runs = a["words"], a["runs"]
        spans = []
        for r in range(runs):
            e = (a["ext_addr"] + r * a["ext_stride"]) * B
            b = (a["buf_addr"] + r * a["buf_stride"]) * B
            n = words * B
            if b + n > buf.size:
                raise SimError(f"instruction {self.pc}: {name} words [{b // B}, {(b + n) // B}) "
                               f"beyond the buffer ({buf.size // B} words)")
            if e + n > self.mem.size:
                raise SimError(f"instruction {self.pc}: external words beyond memory")
            if load:
                buf[b: b + n] = self.mem[e: e + n]
            else:
                self.mem[e: e + n] = buf[b: b + n]
                self.top = max(self.top, e + n)
            spans.append((name, b, b + n))
        self.dma_words["load" if load else "store"] += words * runs
        self._touch("dma", self.pc, spans)

    def _cb_regs(self) -> tuple[int, int]:
        cfg = self.cfg
        k, d = self.regs.get(int(Reg.CB_K), 0), self.regs.get(int(Reg.CB_D), 0)
        if not 1 <= k <= cfg.max_k:
            raise SimError(f"instruction {self.pc}: CB_K={k} outside [1, {cfg.max_k}]")
        if not 1 <= d <= cfg.max_d:
            raise SimError(f"instruction {self.pc}: CB_D={d} outside [1, {cfg.max_d}]")
        return k, d

    def _load_cb(self, a: dict[str, int]) -> None:
        """LOAD CB: ``CB_K*CB_D`` code bytes from ``ext_addr`` (codeword 0 first, one code per
        byte) into every lane's codebook; bytes past ``CB_K*CB_D`` are ignored."""
        cfg, B = self.cfg, self.B
        k, d = self._cb_regs()
        if a["runs"] != 1:
            raise SimError(f"instruction {self.pc}: LOAD CB takes runs=1, not {a['runs']}")
        e, n = a["ext_addr"] * B, a["words"] * B
        if e + n > self.mem.size:
            raise SimError(f"instruction {self.pc}: external words beyond memory")
        m = min(n, k * d)
        codes = self.mem[e: e + m]
        top = (1 << cfg.code_bits) - 1
        if m and int(codes.max()) > top:
            raise SimError(f"instruction {self.pc}: codebook code {int(codes.max())} does not "
                           f"fit {top.bit_length()} bits")
        cb = self.bufs["CB"].reshape(cfg.max_k, cfg.max_d)
        pos = np.arange(m)
        cb[pos // d, pos % d] = codes
        self.dma_words["load"] += a["words"]
        self.dma_words["load_cb"] += a["words"]
        rows = -(-m // d)
        self._touch("dma", self.pc, [("CB", 0, rows * cfg.max_d)])

    def _codebook_weights(self, g: dict[Reg, int], K: int, wb: int,
                          spans: list[tuple[str, Any, Any]]) -> np.ndarray:
        """The ``(K, cols)`` code rows of a WFMT=1 reduction: index rows from WGT decoded
        through the codebook (docs/isa.md, COMPUTE with WFMT = 1)."""
        cfg, NC = self.cfg, self.cfg.cols
        k, d = self._cb_regs()
        ib, per = g[Reg.IDX_BITS], g[Reg.IDX_PER_ROW]
        wrow = cfg.wbuf_row_bytes
        if not 1 <= ib <= cfg.index_bits_max:
            raise SimError(f"instruction {self.pc}: IDX_BITS={ib} outside "
                           f"[1, {cfg.index_bits_max}]")
        if per < 1 or per * NC * ib > 8 * wrow:
            raise SimError(f"instruction {self.pc}: IDX_PER_ROW={per} index rows of {NC}x{ib} "
                           f"bits do not fit a {wrow}-byte WGT row")
        nblocks = -(-K // d)
        nrows = -(-nblocks // per)
        if wb + nrows > cfg.wbuf_rows:
            raise SimError(f"instruction {self.pc}: WGT rows [{wb}, {wb + nrows}) beyond "
                           f"{cfg.wbuf_rows}")
        spans.append(("WGT", wb * wrow, (wb + nrows) * wrow))
        spans.append(("CB", 0, k * cfg.max_d))
        rows = self.bufs["WGT"][wb * wrow: (wb + nrows) * wrow].reshape(nrows, wrow)
        bits = np.unpackbits(rows, axis=1, bitorder="little")[:, : per * NC * ib]
        bits = bits.reshape(nrows * per, NC, ib)[:nblocks].astype(np.int64)
        idx = (bits << np.arange(ib)).sum(axis=2)  # (nblocks, NC)
        if idx.size and int(idx.max()) >= k:
            b, j = (int(v[0]) for v in np.nonzero(idx >= k))
            raise SimError(f"instruction {self.pc}: index {int(idx[b, j])} of column {j}, block "
                           f"{b} is past the codebook (CB_K={k}): the core stops with error")
        cb = self.bufs["CB"].reshape(cfg.max_k, cfg.max_d)
        step = np.arange(K)
        return cb[idx[step // d], (step % d)[:, None]]  # (K, NC)

    def _bias_entries(self, row: int, cols: np.ndarray) -> tuple[np.ndarray, ...]:
        cfg = self.cfg
        if row >= cfg.bbuf_rows:
            raise SimError(f"instruction {self.pc}: bias_row {row} beyond BIAS")
        base = row * cfg.bbuf_row_bytes
        ent = self.bufs["BIAS"][base: base + 8 * cfg.cols].reshape(cfg.cols, 8)[cols]
        bias = ent[:, 0:4].copy().view("<i4").reshape(-1).astype(np.int64)
        shift = ent[:, 4].astype(np.int64)
        res_shift = ent[:, 5].view(np.int8).astype(np.int64)
        return bias, shift, res_shift

    def _compute(self, a: dict[str, int]) -> None:
        cfg, regs = self.cfg, self.regs
        g = {r: regs.get(int(r), 0) for r in Reg}
        R, NC = cfg.rows, cfg.cols
        npix, col0, ncols = a["npix"], a["col0"], a["ncols"]
        if npix > R or col0 + ncols > NC:
            raise SimError(f"instruction {self.pc}: npix={npix}/col0={col0}/ncols={ncols} "
                           f"exceed the {R}x{NC} array")
        mode = g[Reg.MODE]
        # Pixel walk.
        ox, iy0, ix0, ab, oo = a["ox0"], a["iy0"], a["ix0"], a["act_base"], a["o_off"]
        rows = []
        for _ in range(R):
            rows.append((iy0, ix0, ab, oo))
            if ox + 1 < g[Reg.OUT_W]:
                ox, ix0, ab, oo = ox + 1, ix0 + g[Reg.STRIDE_X], ab + g[Reg.STRIDE_X], oo + 1
            else:
                ox, ix0, iy0 = 0, -g[Reg.PAD_L], iy0 + g[Reg.STRIDE_Y]
                ab, oo = ab + g[Reg.A_WRAP], oo + g[Reg.O_WRAP]
        rows_a = np.array(rows[:npix], dtype=np.int64).reshape(-1, 4)
        nch, kh, kw = g[Reg.NCH], g[Reg.KH], g[Reg.KW]
        K = nch * kh * kw
        c, ky, kx = np.meshgrid(np.arange(nch), np.arange(kh), np.arange(kw), indexing="ij")
        c, ky, kx = c.reshape(-1), ky.reshape(-1), kx.reshape(-1)
        iy = rows_a[:, 0:1] + ky[None]
        ix = rows_a[:, 1:2] + kx[None]
        valid = (iy >= 0) & (iy < g[Reg.IN_H]) & (ix >= 0) & (ix < g[Reg.IN_W])
        addr = rows_a[:, 2:3] + c[None] * g[Reg.A_PLANE] + ky[None] * g[Reg.A_PITCH] + kx[None]
        act = self.bufs["ACT"]
        spans: list[tuple[str, Any, Any]] = []
        if valid.any():
            va = addr[valid]
            if va.min() < 0 or va.max() >= act.size:
                bad = va[(va < 0) | (va >= act.size)][0]
                raise SimError(f"instruction {self.pc}: ACT read at {int(bad)} outside "
                               f"[0, {act.size}) at a valid position")
            if self.check_hazards:
                # One interval per (row, channel): the bytes that row reads from that plane.
                big = np.int64(1) << 60
                a3 = np.where(valid, addr, big).reshape(len(rows_a), nch, kh * kw)
                b3 = np.where(valid, addr, -big).reshape(len(rows_a), nch, kh * kw)
                lo3, hi3 = a3.min(axis=2).reshape(-1), b3.max(axis=2).reshape(-1) + 1
                spans.append(("ACT", lo3, hi3))
        x = np.zeros(addr.shape, np.int64)
        x[valid] = act[addr[valid]].view(np.int8)
        if a["clear"]:
            self.acc[:] = nx.int_range(cfg.acc_bits)[0] if mode == Mode.MAX else 0
        acc = self.acc
        wfmt = g[Reg.WFMT]
        if wfmt not in (WFMT_RAW, WFMT_CODEBOOK):
            raise SimError(f"instruction {self.pc}: unknown WFMT {wfmt}")
        if mode == Mode.MAC:
            wb = a["wgt_base"]
            wrow = cfg.wbuf_row_bytes
            if wfmt == WFMT_CODEBOOK:
                w = self._codebook_weights(g, K, wb, spans)
            else:
                if wb + K > cfg.wbuf_rows:
                    raise SimError(f"instruction {self.pc}: WGT rows [{wb}, {wb + K}) beyond "
                                   f"{cfg.wbuf_rows}")
                w = self.bufs["WGT"][wb * wrow: (wb + K) * wrow].reshape(K, wrow)[:, :NC]
                spans.append(("WGT", wb * wrow, (wb + K) * wrow))
            # A shift product ±(x << e) equals x * decode_shift(code) exactly (int64), so the
            # reduction is one integer matrix product (invalid positions contribute 0).
            if cfg.pe == "mult":
                wv = w.view(np.int8).astype(np.int64)
            else:
                wv = np.asarray(nx.decode_shift(w.astype(np.int64), cfg.exp_bits), np.int64)
            acc[:npix] += np.where(valid, x, 0) @ wv
        elif mode == Mode.MAX:
            m = np.where(valid, x, nx.int_range(cfg.acc_bits)[0]).max(axis=1, initial=-(1 << 62))
            acc[:npix] = np.maximum(acc[:npix], m[:, None])
        elif mode == Mode.SUM:
            acc[:npix] += np.where(valid, x, 0).sum(axis=1)[:, None]
        else:
            raise SimError(f"instruction {self.pc}: unknown MODE {mode}")
        lo, hi = nx.int_range(cfg.acc_bits)
        if acc.min() < lo or acc.max() > hi:
            raise SimError(f"instruction {self.pc}: accumulator overflow "
                           f"({int(acc.min())}..{int(acc.max())} beyond {cfg.acc_bits} bits)")
        if a["drain"] and npix and ncols:
            flags = g[Reg.FLAGS]
            cols = np.arange(col0, col0 + ncols)
            bias, shift, res_shift = self._bias_entries(a["bias_row"], cols)
            spans.append(("BIAS", a["bias_row"] * cfg.bbuf_row_bytes,
                          a["bias_row"] * cfg.bbuf_row_bytes + 8 * NC))
            oo = rows_a[:, 3]
            if oo.min() < 0 or oo.max() >= cfg.obuf_bytes:
                raise SimError(f"instruction {self.pc}: OUT offset {int(oo.max())} outside "
                               f"[0, {cfg.obuf_bytes})")
            idx = cols[None, :] * cfg.obuf_bytes + oo[:, None]
            res = None
            if flags & Flag.RESIDUAL:
                res = self.bufs["RES"][idx].view(np.int8).astype(np.int64)
            out = nx.requantize(acc[:npix][:, cols], bias[None], shift[None],
                                relu=bool(flags & Flag.RELU), residual=res,
                                res_shift=res_shift[None])
            self.bufs["OUT"][idx] = np.asarray(out).astype(np.int8).view(np.uint8)
            for j in cols:
                span = (int(j * cfg.obuf_bytes + oo.min()), int(j * cfg.obuf_bytes + oo.max() + 1))
                spans.append(("OUT", *span))
                if res is not None:
                    spans.append(("RES", *span))
        self._touch("compute", self.pc, spans)


def run_program(cfg: CoreConfig, memory: bytes, *, check_hazards: bool = True,
                cycle_model: CycleModel | None = None,
                max_cycles: int | None = None) -> FunctionalResult:
    """Run the program at word 0 of ``memory`` to END (``max_cycles``: see
    :meth:`FunctionalSim.run`)."""
    return FunctionalSim(cfg, memory, check_hazards=check_hazards,
                         cycle_model=cycle_model).run(max_cycles=max_cycles)


def estimate_cycles(cfg: CoreConfig, insns: list[Insn],
                    cycle_model: CycleModel | None = None) -> int:
    """The cycle estimate of a program without executing its data (timing replay only)."""
    tl = _Timeline(cycle_model or CycleModel(), cfg)
    regs: dict[int, int] = {}
    for insn in insns:
        if insn.op == Opcode.SET:
            regs[insn.args["reg"]] = insn.args["value"]
        tl.step(insn, regs)
        if insn.op == Opcode.END:
            break
    return tl.t
