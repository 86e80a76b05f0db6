"""Functional simulator (L1): executes a program one instruction at a time, exactly per
docs/isa.md, over an external memory image, in numpy.

Products and requantization come from ``sw/numerics``. Beyond the ISA semantics it checks what
the compiler promises (the hardware does not): ACT reads at valid positions inside ACT, no
accumulator overflow, buffer addresses in range and -- with ``check_hazards`` -- that SYNCs
order every pair of instructions on different units that touch the same buffer bytes (the
conservative rule: everything a unit was given since its last SYNC may still be running).

Cycles (``FunctionalResult.cycles``, the MARK stamps and the ``max_cycles`` watchdog) come
from the project's one timing model, ``shiftbook.timing`` (equal to the RTL's count): before
executing, the simulator decodes the program as loaded (word 0 up to END) and replays it
through that model once.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
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
from shiftbook.timing import CycleEstimate, estimate_program

__all__ = ["SimError", "HazardError", "FunctionalResult", "FunctionalSim", "run_program"]


# Instructions decoded past a cycle limit before the watchdog's program is timed: more than
# the cycle model's fetch runs ahead of the issue (a few words), so the cut changes no
# instruction's cycle up to the limit.
WATCHDOG_LOOKAHEAD = 1024


class SimError(RuntimeError):
    """The program did something the hardware contract forbids (the message says what)."""


class HazardError(SimError):
    """Two instructions on different units touch the same buffer bytes without a SYNC."""


@dataclass
class FunctionalResult:
    memory: bytes
    cycles: int
    marks: list[tuple[int, int]]
    stats: dict[str, Any]


_BUFS = ("ACT", "WGT", "BIAS", "RES", "OUT")


class FunctionalSim:
    """Executes one program on a memory image for ``cfg``."""

    def __init__(self, cfg: CoreConfig, memory: bytes, *, check_hazards: bool = True) -> None:
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
        self.timing: CycleEstimate | None = None    # the cycle model's replay (run())
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

    def program(self, limit: int) -> list[Insn]:
        """The program as loaded: instructions from word 0 up to END, stopping early (at most
        ``limit``) where one does not decode or memory ends (execution reports those)."""
        insns: list[Insn] = []
        mem = self.mem
        for pc in range(min(limit, mem.size // INSN_BYTES)):
            off = pc * INSN_BYTES
            try:
                insn = decode(int.from_bytes(mem[off: off + INSN_BYTES].tobytes(), "little"))
            except ValueError:
                break
            insns.append(insn)
            if insn.op == Opcode.END:
                break
        return insns

    def _watchdog(self, insn: Insn, max_cycles: int) -> None:
        """Raise if the model's count when ``insn`` (at ``pc``) is done exceeds the limit (for
        END: the program's cycles, when ``done`` rises)."""
        t = self.timing
        assert t is not None and t.insn_cycles is not None
        if insn.op == Opcode.END:
            now = t.total
        elif self.pc < len(t.insn_cycles):
            now = t.insn_cycles[self.pc]
        else:
            return      # past the program as loaded (it overwrote itself); not timed
        if now > max_cycles:
            raise SimError(f"no END within the cycle limit of {max_cycles} (cycle "
                           f"{now} at instruction {self.pc}); raise the limit "
                           f"(--timeout-cycles) or check the program")

    def run(self, max_insns: int = 50_000_000, *,
            max_cycles: int | None = None) -> FunctionalResult:
        """Execute to END; ``max_cycles`` (``None`` or 0: no limit) is the watchdog of the
        RTL runner's ``timeout_cycles``, on the cycle count of the timing model."""
        if max_cycles is not None and max_cycles < 0:
            raise SimError(f"max_cycles={max_cycles} must be >= 0 (0: no limit)")
        # Every instruction takes at least one cycle, so one past the limit (with room for the
        # model's fetch run-ahead) is as far as a watchdog needs the program timed.
        limit = min(max_insns, max_cycles + WATCHDOG_LOOKAHEAD) if max_cycles else max_insns
        self.timing = estimate_program(self.cfg, self.program(limit), per_insn=True)
        while not self.done:
            if self.pc >= max_insns:
                raise SimError(f"no END after {max_insns} instructions")
            insn = self.fetch()
            self.execute(insn)
            if max_cycles:
                self._watchdog(insn, max_cycles)
            self.pc += 1
        end = max(self.image_len, self.top)
        mem = self.mem[:end].tobytes()
        cycles = self.timing.total
        stats = {
            "instructions": dict(sorted((k.name, v) for k, v in self.counts.items())),
            "dma_words": dict(self.dma_words),
            "compute_steps": self.timing.compute_steps,
            "cycles": cycles,
        }
        return FunctionalResult(mem, cycles, list(self.marks), stats)

    def execute(self, insn: Insn) -> None:
        self.counts[insn.op] += 1
        op, a = insn.op, insn.args
        if op == Opcode.SET:
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
            self.marks.append((a["id"], self._mark_cycle()))
        elif op == Opcode.END:
            self.done = True
        elif op == Opcode.NOP:
            pass
        else:  # pragma: no cover - decode() rejects unknown opcodes
            raise SimError(f"instruction {self.pc}: unknown opcode {op}")

    def _mark_cycle(self) -> int:
        """The cycle the model reports for the MARK being executed (the RTL's stamp)."""
        t = self.timing
        n = len(self.marks)
        if t is None or n >= len(t.marks):
            raise SimError(f"instruction {self.pc}: MARK beyond the program as loaded "
                           f"(did the program overwrite itself?)")
        return t.marks[n][1]

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
        rows_a = self._walk(a, g)
        spans: list[tuple[str, Any, Any]] = []
        x, valid = self._gather(rows_a, g, spans)
        if a["clear"]:
            self.acc[:] = nx.int_range(cfg.acc_bits)[0] if mode == Mode.MAX else 0
        acc = self.acc
        if g[Reg.WFMT] not in (WFMT_RAW, WFMT_CODEBOOK):
            raise SimError(f"instruction {self.pc}: unknown WFMT {g[Reg.WFMT]}")
        if mode == Mode.MAC:
            # A shift product ±(x << e) equals x * decode_shift(code) exactly (int64), so the
            # reduction is one integer matrix product (invalid positions contribute 0).
            acc[:npix] += np.where(valid, x, 0) @ self._mac_weights(a, g, x.shape[1], spans)
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
            self._drain(a, g, rows_a, spans)
        self._touch("compute", self.pc, spans)

    def _walk(self, a: dict[str, int], g: dict[Reg, int]) -> np.ndarray:
        """The pixel walk: per PE row (the first ``npix``), its first input row and column,
        ACT address and OUT offset, shape ``(npix, 4)``."""
        ox, iy0, ix0, ab, oo = a["ox0"], a["iy0"], a["ix0"], a["act_base"], a["o_off"]
        rows = []
        for _ in range(self.cfg.rows):
            rows.append((iy0, ix0, ab, oo))
            if ox + 1 < g[Reg.OUT_W]:
                ox, ix0, ab, oo = ox + 1, ix0 + g[Reg.STRIDE_X], ab + g[Reg.STRIDE_X], oo + 1
            else:
                ox, ix0, iy0 = 0, -g[Reg.PAD_L], iy0 + g[Reg.STRIDE_Y]
                ab, oo = ab + g[Reg.A_WRAP], oo + g[Reg.O_WRAP]
        return np.array(rows[:a["npix"]], dtype=np.int64).reshape(-1, 4)

    def _gather(self, rows_a: np.ndarray, g: dict[Reg, int],
                spans: list[tuple[str, Any, Any]]) -> tuple[np.ndarray, np.ndarray]:
        """The activations each row reads per reduction step (0 where padding) and where
        they are valid, both ``(npix, NCH*KH*KW)``; ACT reads recorded in ``spans``."""
        nch, kh, kw = g[Reg.NCH], g[Reg.KH], g[Reg.KW]
        c, ky, kx = np.meshgrid(np.arange(nch), np.arange(kh), np.arange(kw), indexing="ij")
        c, ky, kx = c.reshape(-1), ky.reshape(-1), kx.reshape(-1)
        iy = rows_a[:, 0:1] + ky[None]
        ix = rows_a[:, 1:2] + kx[None]
        valid = (iy >= 0) & (iy < g[Reg.IN_H]) & (ix >= 0) & (ix < g[Reg.IN_W])
        addr = rows_a[:, 2:3] + c[None] * g[Reg.A_PLANE] + ky[None] * g[Reg.A_PITCH] + kx[None]
        act = self.bufs["ACT"]
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
        return x, valid

    def _mac_weights(self, a: dict[str, int], g: dict[Reg, int], K: int,
                     spans: list[tuple[str, Any, Any]]) -> np.ndarray:
        """The ``(K, cols)`` weight values of a MAC reduction (raw WGT rows or codebook
        decoded); WGT (and CB) reads recorded in ``spans``."""
        cfg, NC = self.cfg, self.cfg.cols
        wb = a["wgt_base"]
        wrow = cfg.wbuf_row_bytes
        if g[Reg.WFMT] == WFMT_CODEBOOK:
            w = self._codebook_weights(g, K, wb, spans)
        else:
            if wb + K > cfg.wbuf_rows:
                raise SimError(f"instruction {self.pc}: WGT rows [{wb}, {wb + K}) beyond "
                               f"{cfg.wbuf_rows}")
            w = self.bufs["WGT"][wb * wrow: (wb + K) * wrow].reshape(K, wrow)[:, :NC]
            spans.append(("WGT", wb * wrow, (wb + K) * wrow))
        if cfg.pe == "mult":
            return w.view(np.int8).astype(np.int64)
        return np.asarray(nx.decode_shift(w.astype(np.int64), cfg.exp_bits), np.int64)

    def _drain(self, a: dict[str, int], g: dict[Reg, int], rows_a: np.ndarray,
               spans: list[tuple[str, Any, Any]]) -> None:
        """Requantize the tile's accumulators of columns ``[col0, col0 + ncols)`` into OUT
        (with the residual from RES if FLAGS says so); BIAS, OUT, RES recorded in ``spans``."""
        cfg, NC, npix = self.cfg, self.cfg.cols, a["npix"]
        flags = g[Reg.FLAGS]
        cols = np.arange(a["col0"], a["col0"] + a["ncols"])
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
        out = nx.requantize(self.acc[:npix][:, cols], bias[None], shift[None],
                            relu=bool(flags & Flag.RELU), residual=res,
                            res_shift=res_shift[None])
        self.bufs["OUT"][idx] = np.asarray(out).astype(np.int8).view(np.uint8)
        for j in cols:
            span = (int(j * cfg.obuf_bytes + oo.min()), int(j * cfg.obuf_bytes + oo.max() + 1))
            spans.append(("OUT", *span))
            if res is not None:
                spans.append(("RES", *span))


def run_program(cfg: CoreConfig, memory: bytes, *, check_hazards: bool = True,
                max_cycles: int | None = None) -> FunctionalResult:
    """Run the program at word 0 of ``memory`` to END (``max_cycles``: see
    :meth:`FunctionalSim.run`)."""
    return FunctionalSim(cfg, memory, check_hazards=check_hazards).run(max_cycles=max_cycles)
