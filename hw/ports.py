"""Interfaces shared by more than one gateware block, each defined once as a
``wiring.Signature`` and joined with ``wiring.connect``.

- :class:`MemPortSignature`: a requester's memory port (docs/isa.md "Core ports"): the core's
  top-level port, the arbiter's three ports, the controller's fetch port, the DMA's port and
  the board memory.
- :class:`IssueSignature`: instruction issue from the controller to a unit (an
  ``amaranth.lib.stream`` of the instruction, plus the unit's ``busy`` for SYNC and END).
- :class:`BufferPortSignature`: the DMA's access to the compute unit's buffers (load writes,
  OUT reads for stores, the decoder's codebook write port).
- :class:`ControlSignature`: start, status, marks and the cycle counter of a run.

Top-level names stay flat (``cmd_valid``, ``rsp_data``, ``start`` ...): the core and the board
memory carry these members directly in their own signatures, and :func:`flat_port` gives
the interface object that ``wiring.connect`` needs over them.
"""

from __future__ import annotations

from typing import Any

from amaranth.hdl import ShapeCastable, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["ADDR_BITS", "BUF_ADDR_BITS", "MemPortSignature", "IssueSignature",
           "BufferPortSignature", "ControlSignature", "flat_port"]

#: Word address bits of the external memory port.
ADDR_BITS = 28
#: Buffer word address bits of the DMA's buffer port (docs/isa.md LOAD ``buf_addr``).
BUF_ADDR_BITS = 22


class MemPortSignature(wiring.Signature):
    """A memory requester's port (the requester's view: commands out, responses in).

    A request moves when ``cmd_valid & cmd_ready``; a write (``cmd_we``) has no response;
    read data comes back on ``rsp_valid``/``rsp_data`` in order, after the memory's latency.

    Parameters
    ----------
    data_bits : int
        Bus word width (``8 * bus_bytes``).
    writes : bool
        With ``cmd_we``/``cmd_wdata`` (``False``: a read-only requester, instruction fetch).

    Members
    -------
    cmd_valid : Out(1), cmd_ready : In(1), cmd_addr : Out(28)
    cmd_we : Out(1), cmd_wdata : Out(data_bits)
        Only with ``writes``.
    rsp_valid : In(1), rsp_data : In(data_bits)
    """

    def __init__(self, *, data_bits: int, writes: bool = True) -> None:
        if not isinstance(data_bits, int) or data_bits < 8:
            raise ValueError(f"data_bits must be an integer >= 8, not {data_bits!r}")
        self._data_bits = data_bits
        self._writes = bool(writes)
        members: dict[str, Any] = {"cmd_valid": Out(1), "cmd_ready": In(1),
                                   "cmd_addr": Out(ADDR_BITS)}
        if writes:
            members.update(cmd_we=Out(1), cmd_wdata=Out(data_bits))
        members.update(rsp_valid=In(1), rsp_data=In(data_bits))
        super().__init__(members)

    @property
    def data_bits(self) -> int:
        return self._data_bits

    @property
    def writes(self) -> bool:
        return self._writes

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, MemPortSignature) and other.data_bits == self._data_bits
                and other.writes == self._writes)

    def __hash__(self) -> int:
        return hash((MemPortSignature, self._data_bits, self._writes))

    def __repr__(self) -> str:
        return f"MemPortSignature(data_bits={self._data_bits}, writes={self._writes})"


class IssueSignature(wiring.Signature):
    """Instruction issue from the controller (the issuer's view).

    Parameters
    ----------
    layout : ShapeCastable
        The instruction as issued (``hw.layouts.dma_insn_layout()`` for the DMA,
        ``hw.layouts.compute_insn_layout(cfg)`` for the compute unit).

    Members
    -------
    insn : Out(stream.Signature(layout))
        The instruction; moves when ``valid & ready``.
    busy : In(1)
        The unit has work queued or in flight (SYNC and END wait for it).
    """

    def __init__(self, layout: ShapeCastable) -> None:
        self._layout = layout
        super().__init__({"insn": Out(stream.Signature(layout)), "busy": In(1)})

    @property
    def layout(self) -> ShapeCastable:
        return self._layout

    def __eq__(self, other: object) -> bool:
        return isinstance(other, IssueSignature) and other.layout == self._layout

    def __hash__(self) -> int:
        return hash(IssueSignature)

    def __repr__(self) -> str:
        return f"IssueSignature({self._layout!r})"


class BufferPortSignature(wiring.Signature):
    """The DMA's port into the compute unit's buffers (the DMA's view).

    Parameters
    ----------
    data_bits : int
        Bus word width.
    cb_addr_bits, code_bits, max_d : int
        The decoder's codebook: row address bits, bits of one code, codes per row.

    Members
    -------
    wr_en : Out(1), wr_buf : Out(2), wr_addr : Out(22), wr_data : Out(data_bits)
        A bus word into ACT/WGT/BIAS/RES (``wr_buf`` as ``shiftbook.isa.Buf``) at a buffer word
        address.
    out_r_en : Out(1), out_r_addr : Out(22), out_r_data : In(data_bits)
        OUT reads by word address, latency 1, data held while ``out_r_en`` is low.
    cb_addr : Out(cb_addr_bits), cb_data : Out(ArrayLayout(code_bits, max_d)), cb_en : Out(max_d)
        Codebook write: row ``cb_addr`` gets code ``j`` of ``cb_data`` where bit ``j`` of
        ``cb_en`` is set (``hw.decoder``).
    """

    def __init__(self, *, data_bits: int, cb_addr_bits: int, code_bits: int,
                 max_d: int) -> None:
        self._params = (data_bits, cb_addr_bits, code_bits, max_d)
        super().__init__({
            "wr_en": Out(1), "wr_buf": Out(2), "wr_addr": Out(BUF_ADDR_BITS),
            "wr_data": Out(data_bits),
            "out_r_en": Out(1), "out_r_addr": Out(BUF_ADDR_BITS), "out_r_data": In(data_bits),
            "cb_addr": Out(cb_addr_bits),
            "cb_data": Out(data.ArrayLayout(unsigned(code_bits), max_d)),
            "cb_en": Out(max_d),
        })

    def __eq__(self, other: object) -> bool:
        return isinstance(other, BufferPortSignature) and other._params == self._params

    def __hash__(self) -> int:
        return hash((BufferPortSignature, self._params))

    def __repr__(self) -> str:
        d, a, c, m = self._params
        return (f"BufferPortSignature(data_bits={d}, cb_addr_bits={a}, code_bits={c}, "
                f"max_d={m})")


class ControlSignature(wiring.Signature):
    """Run control and status of the core (the core's view).

    Members
    -------
    start : In(1)
        Pulse: begin fetching at word 0.
    busy, done, error : Out(1)
    mark_valid : Out(1), mark_id : Out(16)
        One pulse per MARK.
    cycles : Out(48)
        Cycles since start.
    """

    def __init__(self) -> None:
        super().__init__({"start": In(1), "busy": Out(1), "done": Out(1), "error": Out(1),
                          "mark_valid": Out(1), "mark_id": Out(16), "cycles": Out(48)})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, ControlSignature)

    def __hash__(self) -> int:
        return hash(ControlSignature)


class _FlatPort:
    """An interface object of ``signature`` whose members are attributes of ``owner``."""

    def __init__(self, owner: object, signature: wiring.Signature) -> None:
        self.signature = signature
        for name in signature.members:
            if not hasattr(owner, name):
                raise TypeError(f"{type(owner).__name__} has no member {name!r} of "
                                f"{signature!r}")
            setattr(self, name, getattr(owner, name))


def flat_port(owner: object, signature: wiring.Signature) -> Any:
    """The members of ``signature`` that ``owner`` carries under their own names (a top level
    with flat port names, e.g. ``Core.cmd_valid``) as one interface object for
    ``wiring.connect``. ``signature`` is ``owner``'s view of them (flip it for the inside of
    ``owner``'s own ``elaborate``: ``wiring.flipped(flat_port(self, sig))``)."""
    return _FlatPort(owner, signature)
