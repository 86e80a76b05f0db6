"""On-chip buffers of docs/isa.md, with the DMA's flat word view and the compute unit's view.

All memories are ``amaranth.lib.memory.Memory`` created in ``elaborate()``; every read port is
synchronous (latency 1) and non-transparent.
"""

from __future__ import annotations

from amaranth.hdl import Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

__all__ = ["ActBuffer", "RowBuffer", "ResBuffer", "OutBuffer", "WordFIFO", "is_ice40", "log2"]


def log2(v: int) -> int:
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{v} is not a power of two")
    return v.bit_length() - 1


def is_ice40(platform) -> bool:
    """Whether ``platform`` is a Lattice iCE40 (SiliconBlue) platform: no distributed RAM, so
    small memories that other FPGAs keep in LUT RAM are better asked into block RAM there."""
    if platform is None:
        return False
    from amaranth.vendor import SiliconBluePlatform
    return isinstance(platform, SiliconBluePlatform)


def _check_pow2(name: str, v: int) -> None:
    if v <= 0 or v & (v - 1):
        raise ValueError(f"{name}={v} must be a power of two")


def _byte_of(word, index, bus_bytes: int):
    """Byte ``index`` of a bus word (``index`` a signal of log2(bus_bytes) bits)."""
    if bus_bytes == 1:
        return word[:8]
    return word.word_select(index, 8)


class ActBuffer(wiring.Component):
    """Activation buffer, replicated once per PE row so each row reads its own byte per cycle.

    Parameters
    ----------
    rows : int
        Number of replicas (PE rows).
    size : int
        Bytes (power of two).
    bus_bytes : int
        Write word width.

    Members
    -------
    w_en, w_addr, w_data : In
        Write a bus word at a word address (all replicas).
    r_addr : In(abits).array(rows)
        Byte address per row.
    r_data : Out(signed(8)).array(rows)
        The byte, one cycle later.
    """

    latency = 1

    def __init__(self, *, rows: int, size: int, bus_bytes: int):
        _check_pow2("size", size)
        _check_pow2("bus_bytes", bus_bytes)
        if size < bus_bytes:
            raise ValueError(f"size={size} is smaller than a bus word")
        self._rows, self._size, self._b = rows, size, bus_bytes
        self.abits = log2(size)
        self.wbits = log2(size // bus_bytes)
        super().__init__({
            "w_en": In(1), "w_addr": In(max(1, self.wbits)), "w_data": In(8 * bus_bytes),
            "r_addr": In(max(1, self.abits)).array(rows),
            "r_data": Out(signed(8)).array(rows),
        })

    def elaborate(self, platform):
        m = Module()
        b = self._b
        lb = log2(b)
        for r in range(self._rows):
            mem = Memory(shape=8 * b, depth=self._size // b, init=[])
            m.submodules[f"act_{r}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.en.eq(self.w_en), wp.addr.eq(self.w_addr), wp.data.eq(self.w_data),
                         rp.addr.eq(self.r_addr[r][lb:])]
            sel = Signal(max(1, lb), name=f"sel_{r}")
            m.d.sync += sel.eq(self.r_addr[r][:lb] if lb else 0)
            m.d.comb += self.r_data[r].eq(_byte_of(rp.data, sel, b))
        return m


class RowBuffer(wiring.Component):
    """WGT or BIAS buffer: ``depth`` rows of ``row_words`` bus words; written a word at a time
    at a flat word address (row ``a // row_words``, word ``a % row_words``), read a row at a
    time.

    Parameters
    ----------
    depth : int
        Rows (power of two).
    row_words : int
        Bus words per row (a power of two: ``CoreConfig.row_bytes`` pads rows).
    bus_bytes : int
    ram_style : str or None
        Yosys ``ram_style`` attribute of the memory (e.g. ``"block"``: block RAM even when
        the memory is small); None lets the synthesizer choose.

    Members
    -------
    w_en, w_addr, w_data : In
        Word write at a flat word address: row ``a // row_words``, word ``a % row_words``.
    r_addr : In
        Row address.
    r_data : Out(8 * bus_bytes * row_words)
        The row, one cycle later.
    """

    latency = 1

    def __init__(self, *, depth: int, row_words: int, bus_bytes: int,
                 ram_style: str | None = None):
        _check_pow2("depth", depth)
        _check_pow2("row_words", row_words)
        self._depth, self._rw, self._b = depth, row_words, bus_bytes
        self._ram_style = ram_style
        self.rbits = log2(depth)
        self.lane_bits = (row_words - 1).bit_length()
        self.wbits = self.rbits + self.lane_bits
        super().__init__({
            "w_en": In(1), "w_addr": In(max(1, self.wbits)), "w_data": In(8 * bus_bytes),
            "r_addr": In(max(1, self.rbits)),
            "r_data": Out(8 * bus_bytes * row_words),
        })

    def elaborate(self, platform):
        m = Module()
        ww = 8 * self._b
        rw = self._rw
        lb = self.lane_bits
        attrs = {"ram_style": self._ram_style} if self._ram_style else None
        mem = Memory(shape=ww * rw, depth=self._depth, init=[], attrs=attrs)
        m.submodules.mem = mem
        wp = mem.write_port(granularity=ww) if rw > 1 else mem.write_port()
        rp = mem.read_port()
        m.d.comb += [wp.addr.eq(self.w_addr[lb:]), wp.data.eq(Cat(*[self.w_data] * rw)),
                     rp.addr.eq(self.r_addr), self.r_data.eq(rp.data)]
        if rw > 1:
            onehot = Signal(1 << lb)
            m.d.comb += [onehot.eq(Const(1) << self.w_addr[:lb]),
                         wp.en.eq(self.w_en.replicate(rw) & onehot[:rw])]
        else:
            m.d.comb += wp.en.eq(self.w_en)
        return m


class _Banked(wiring.Component):
    def __init__(self, members, *, banks: int, bank_bytes: int, bus_bytes: int):
        _check_pow2("bank_bytes", bank_bytes)
        _check_pow2("bus_bytes", bus_bytes)
        if bank_bytes < bus_bytes:
            raise ValueError(f"bank_bytes={bank_bytes} is smaller than a bus word")
        self._banks, self._bank_bytes, self._b = banks, bank_bytes, bus_bytes
        self.abits = log2(bank_bytes)           # byte address within a bank
        self.obits = log2(bank_bytes // bus_bytes)  # word address within a bank
        self.kbits = max(1, (banks - 1).bit_length())
        self.wbits = self.obits + self.kbits    # flat word address
        super().__init__(members(self))

    def _mems(self, m):
        mems = []
        for k in range(self._banks):
            mem = Memory(shape=8 * self._b, depth=self._bank_bytes // self._b, init=[])
            m.submodules[f"bank_{k}"] = mem
            mems.append(mem)
        return mems


class ResBuffer(_Banked):
    """Residual buffer: ``banks`` banks of ``bank_bytes``; the DMA writes bus words at flat
    word addresses (bank ``a // (bank_bytes/B)``), the drain reads one byte per bank at a shared
    byte address.

    Members
    -------
    w_en, w_addr, w_data : In
        Flat word write (words past the last bank are dropped).
    r_addr : In
        Byte address within every bank.
    r_data : Out(signed(8)).array(banks)
        One cycle later.
    """

    latency = 1

    def __init__(self, *, banks: int, bank_bytes: int, bus_bytes: int):
        super().__init__(lambda s: {
            "w_en": In(1), "w_addr": In(s.wbits), "w_data": In(8 * bus_bytes),
            "r_addr": In(max(1, s.abits)), "r_data": Out(signed(8)).array(banks),
        }, banks=banks, bank_bytes=bank_bytes, bus_bytes=bus_bytes)

    def elaborate(self, platform):
        m = Module()
        lb = log2(self._b)
        sel = Signal(max(1, lb))
        m.d.sync += sel.eq(self.r_addr[:lb] if lb else 0)
        bank = self.w_addr[self.obits:]
        for k, mem in enumerate(self._mems(m)):
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.en.eq(self.w_en & (bank == k)), wp.addr.eq(self.w_addr[:self.obits]),
                         wp.data.eq(self.w_data), rp.addr.eq(self.r_addr[lb:]),
                         self.r_data[k].eq(_byte_of(rp.data, sel, self._b))]
        return m


class OutBuffer(_Banked):
    """Output buffer: the drain writes one byte per bank at a shared byte address (per-bank
    enables); the DMA reads bus words at flat word addresses.

    Members
    -------
    w_en : In(banks)
        Bank write enables.
    w_addr : In
        Byte address within the banks.
    w_data : In(8).array(banks)
    r_en : In(1)
        Read enable (``r_data`` holds while low).
    r_addr : In
        Flat word address.
    r_data : Out(8 * bus_bytes)
        One cycle after ``r_en``; 0 past the last bank.
    """

    latency = 1

    def __init__(self, *, banks: int, bank_bytes: int, bus_bytes: int):
        super().__init__(lambda s: {
            "w_en": In(banks), "w_addr": In(max(1, s.abits)), "w_data": In(8).array(banks),
            "r_en": In(1), "r_addr": In(s.wbits), "r_data": Out(8 * bus_bytes),
        }, banks=banks, bank_bytes=bank_bytes, bus_bytes=bus_bytes)

    def elaborate(self, platform):
        m = Module()
        b = self._b
        lb = log2(b)
        bank_q = Signal(self.kbits)
        with m.If(self.r_en):
            m.d.sync += bank_q.eq(self.r_addr[self.obits:])
        datas = []
        for k, mem in enumerate(self._mems(m)):
            wp = mem.write_port(granularity=8) if b > 1 else mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.addr.eq(self.w_addr[lb:]),
                         wp.data.eq(Cat(*[self.w_data[k]] * b)),
                         rp.addr.eq(self.r_addr[:self.obits]), rp.en.eq(self.r_en)]
            if b > 1:
                m.d.comb += wp.en.eq(self.w_en[k].replicate(b) & (Const(1) << self.w_addr[:lb]))
            else:
                m.d.comb += wp.en.eq(self.w_en[k])
            datas.append(rp.data)
        with m.Switch(bank_q):
            for k, d in enumerate(datas):
                with m.Case(k):
                    m.d.comb += self.r_data.eq(d)
        return m


class WordFIFO(wiring.Component):
    """A first-word-fall-through FIFO that behaves cycle for cycle like Amaranth's
    ``SyncFIFO`` (``r_data`` valid while ``r_rdy``; a word written in one cycle is readable
    the next) but reads its storage through a *synchronous* read port, so block RAM can hold
    it: the port reads the entry that will be at the head in the next cycle (the next one
    when this cycle reads), transparent to this cycle's write. On iCE40, which has no
    distributed RAM, an asynchronously read FIFO becomes ``depth * width`` flip-flops and a
    read multiplexer.

    Parameters
    ----------
    width, depth : int
    ram_style : str or None
        Yosys ``ram_style`` attribute of the storage (``"block"``), or None.

    Members
    -------
    w_en : In(1), w_data : In(width), w_rdy : Out(1)
        Write (taken when ``w_en & w_rdy``).
    r_en : In(1), r_data : Out(width), r_rdy : Out(1)
        Read the head (taken when ``r_en & r_rdy``).
    level : Out(range(depth + 1))
    """

    def __init__(self, *, width: int, depth: int, ram_style: str | None = None):
        if depth < 1:
            raise ValueError(f"depth={depth} must be at least 1")
        self._width, self._depth, self._ram_style = width, depth, ram_style
        super().__init__({
            "w_en": In(1), "w_data": In(width), "w_rdy": Out(1),
            "r_en": In(1), "r_data": Out(width), "r_rdy": Out(1),
            "level": Out(range(depth + 1)),
        })

    def elaborate(self, platform):
        m = Module()
        D = self._depth
        attrs = {"ram_style": self._ram_style} if self._ram_style else None
        mem = m.submodules.storage = Memory(shape=self._width, depth=D, init=[], attrs=attrs)
        wp = mem.write_port()
        rp = mem.read_port(transparent_for=(wp,))
        produce = Signal(range(D))
        consume = Signal(range(D))
        do_w, do_r = Signal(), Signal()
        m.d.comb += [self.w_rdy.eq(self.level != D), self.r_rdy.eq(self.level != 0),
                     do_w.eq(self.w_en & self.w_rdy), do_r.eq(self.r_en & self.r_rdy)]

        def incr(v):
            return Mux(v == D - 1, 0, v + 1)

        head = Signal(range(D))        # the head in the next cycle
        m.d.comb += head.eq(Mux(do_r, incr(consume), consume))
        m.d.comb += [wp.addr.eq(produce), wp.data.eq(self.w_data), wp.en.eq(do_w),
                     rp.addr.eq(head), self.r_data.eq(rp.data)]
        m.d.sync += consume.eq(head)
        with m.If(do_w):
            m.d.sync += produce.eq(incr(produce))
        with m.If(do_w & ~do_r):
            m.d.sync += self.level.eq(self.level + 1)
        with m.Elif(do_r & ~do_w):
            m.d.sync += self.level.eq(self.level - 1)
        return m
