"""Instruction emission with hazard tracking.

Every on-chip buffer is cut into *slots* (:class:`Slot`). The emitter remembers, per slot, the
last DMA instruction and the last COMPUTE that touched it, and how far each unit is known to
be complete (the last SYNC). Before an instruction goes out it emits the SYNC that its
conflicts need: a DMA op on a slot that an unsynced COMPUTE touches waits for COMPUTE; a
COMPUTE on a slot that an unsynced DMA op touches waits for DMA. This is the conservative rule
of docs/isa.md (every instruction since the last SYNC of a unit may still be running), so
SYNC placement is correct by construction; the functional simulator re-checks it.

DMA work that need not happen at once goes into a queue; the schedule pops one piece after
each COMPUTE so that DMA and compute interleave in the single in-order instruction stream.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable
from dataclasses import dataclass, field

from shiftbook.isa import Insn, Opcode, Reg, SyncMask

__all__ = ["Slot", "Emitter"]


@dataclass(eq=False)
class Slot:
    buf: str
    index: int
    base: int            # bytes (ACT, OUT/RES offset in every bank) or rows (WGT, BIAS)
    size: int
    key: Hashable | None = None
    last_dma: int = 0
    last_compute: int = 0
    queued: int = 0      # pieces waiting in the DMA queue
    # (tag, DMA index) of emitted pieces that carry a progress tag (e.g. ACT pieces tagged with
    # the first input row they do not cover), so a COMPUTE can wait for just the part it reads.
    progress: list[tuple[int, int]] = field(default_factory=list)

    # The last COMPUTE that read the previous contents: loading a new key must wait for it.
    # (Later pieces of the same key never overlap what COMPUTEs already read: a COMPUTE only
    # reads pieces that were issued before it, see ``need_for``.)
    war_compute: int = 0

    def assign(self, key: Hashable) -> None:
        self.key = key
        self.progress = []
        self.war_compute = self.last_compute

    def need_for(self, tag: int | None) -> int | None:
        """DMA index a reader of everything below ``tag`` waits for; None if not emitted."""
        if tag is None:
            return None if self.queued else self.last_dma
        for t, idx in self.progress:
            if t >= tag:
                return idx
        return None if self.queued else self.last_dma


@dataclass
class Emitter:
    insns: list[Insn] = field(default_factory=list)
    dma_n: int = 0
    dma_synced: int = 0
    comp_n: int = 0
    comp_synced: int = 0
    queue: deque[tuple[Insn, Slot, int | None]] = field(default_factory=deque)
    regs: dict[int, int] = field(default_factory=dict)

    # ---- primitives ----
    def sync(self, mask: int) -> None:
        if not mask:
            return
        if mask & SyncMask.DMA and self.dma_synced == self.dma_n:
            mask &= ~SyncMask.DMA
        if mask & SyncMask.COMPUTE and self.comp_synced == self.comp_n:
            mask &= ~SyncMask.COMPUTE
        if not mask:
            return
        self.insns.append(Insn(Opcode.SYNC, {"mask": int(mask)}))
        if mask & SyncMask.DMA:
            self.dma_synced = self.dma_n
        if mask & SyncMask.COMPUTE:
            self.comp_synced = self.comp_n

    def sync_all(self) -> None:
        self.insns.append(Insn(Opcode.SYNC, {"mask": int(SyncMask.ALL)}))
        self.dma_synced, self.comp_synced = self.dma_n, self.comp_n

    def set(self, reg: Reg, value: int, *, force: bool = False) -> None:
        if not force and self.regs.get(int(reg)) == value:
            return
        self.regs[int(reg)] = value
        self.insns.append(Insn(Opcode.SET, {"reg": int(reg), "value": int(value)}))

    def dma_mask(self, slot: Slot) -> int:
        last = slot.last_compute if slot.key is None else slot.war_compute
        return int(SyncMask.COMPUTE) if last > self.comp_synced else 0

    def ready(self, slot: Slot, tag: int | None = None) -> int:
        """Emit queued pieces until the part of ``slot`` below ``tag`` is issued; returns
        the DMA index a reader must wait for."""
        while True:
            need = slot.need_for(tag)
            if need is not None:
                return need
            self.pop()

    def compute_mask(self, needs: list[int]) -> int:
        return int(SyncMask.DMA) if any(n > self.dma_synced for n in needs) else 0

    def emit_dma(self, insn: Insn, slot: Slot, tag: int | None = None) -> None:
        self.sync(self.dma_mask(slot))
        self.insns.append(insn)
        self.dma_n += 1
        slot.last_dma = self.dma_n
        if tag is not None:
            slot.progress.append((tag, self.dma_n))

    def emit_compute(self, insn: Insn, slots: list[Slot], needs: list[int],
                     extra_mask: int = 0) -> None:
        self.sync(self.compute_mask(needs) | extra_mask)
        self.insns.append(insn)
        self.comp_n += 1
        for s in slots:
            s.last_compute = self.comp_n

    # ---- the DMA queue ----
    def enqueue(self, pieces: list[tuple[Insn, int | None]], slot: Slot, *,
                front: bool = False) -> None:
        items = [(p, slot, tag) for p, tag in pieces]
        slot.queued += len(items)
        if front:
            self.queue.extendleft(reversed(items))
        else:
            self.queue.extend(items)

    def pop(self) -> bool:
        """Emit the next queued piece. A SYNC DMA goes first: issuing to a busy DMA unit waits
        anyway, and it leaves at most one unsynced DMA op for the next COMPUTE to wait on."""
        if not self.queue:
            return False
        self.sync(int(SyncMask.DMA))
        insn, slot, tag = self.queue.popleft()
        slot.queued -= 1
        self.emit_dma(insn, slot, tag)
        return True

    def flush_for(self, slot: Slot) -> None:
        """Emit queued pieces (in order) until none for ``slot`` is left."""
        while slot.queued:
            self.pop()

    def flush(self) -> None:
        while self.pop():
            pass
