"""Timing rules of the core's units for the cycle model (``shiftbook/timing.py``): the memory
port shared by instruction fetch and DMA, the DMA unit and the compute unit (hw/controller.py,
hw/dma.py, hw/compute.py; docs/hw.md). Each unit is told when an instruction reaches it and
answers when it can take the next one and when it is idle; the replay in ``timing.py`` drives
them in program order.
"""

from __future__ import annotations

import bisect
from fractions import Fraction

from shiftbook.config import CoreConfig

__all__ = ["MemoryPort", "DmaUnit", "ComputeUnit", "PIPE", "DRAIN_TAIL"]

PIPE = 4              # cycles after a tile's last step until its accumulators are written
DRAIN_TAIL = 9        # cycles after a draining tile's last step, beyond npix, until idle


class MemoryPort:
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


class DmaUnit:
    """The DMA unit. An instruction's timing is resolved lazily, only when the controller
    waits on it (then every fetch request that can take a port cycle before is known); a
    store's last write may stay pending past the walker's release and is resolved with the
    instruction after it."""

    def __init__(self, cfg: CoreConfig, port: MemoryPort) -> None:
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


class ComputeUnit:
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
