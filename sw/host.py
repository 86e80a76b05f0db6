"""Host side of the board's UART link: load a program bundle, run it, read results back.

The protocol is defined in ``shiftbook/protocol.py`` (pure Python) and documented in
docs/boards.md. A *transport* is anything with ``write(bytes)``, ``read(n) -> bytes`` (fewer
bytes only on timeout) and ``idle(seconds)``: ``SerialTransport`` wraps pyserial for a real
board, ``shiftbook.boards.sim_link.SimBoard`` is a simulated board for tests.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from shiftbook import protocol as proto
from shiftbook.config import CoreConfig
from shiftbook.manifest import Manifest
from shiftbook.protocol import Cmd, ProtocolError, Status

__all__ = [
    "Transport", "SerialTransport", "Board", "BoardError", "BoardImage", "Region",
    "RunResult", "load_bundle_and_run", "run_image", "image_from_bundle", "DEFAULT_BAUD",
]

DEFAULT_BAUD = 1_000_000


class BoardError(RuntimeError):
    """The board answered a request with an error status, or does not match the bundle."""


class Transport(Protocol):
    def write(self, data: bytes) -> int: ...

    def read(self, n: int) -> bytes: ...

    def idle(self, seconds: float) -> None: ...


class SerialTransport:
    """A pyserial port as a transport (8N1)."""

    def __init__(self, port: str, *, baud: int = DEFAULT_BAUD, timeout: float = 2.0) -> None:
        try:
            import serial
        except ImportError:  # pragma: no cover - pyserial is a dependency
            raise BoardError("pyserial is not installed (pip install pyserial)") from None
        try:
            self._port = serial.Serial(port, baudrate=baud, timeout=timeout)
        except (serial.SerialException, ValueError) as e:
            raise BoardError(f"cannot open serial port {port!r}: {e}") from None
        self._port.reset_input_buffer()

    def write(self, data: bytes) -> int:
        n = self._port.write(data)
        self._port.flush()
        return n

    def read(self, n: int) -> bytes:
        return self._port.read(n)

    def idle(self, seconds: float) -> None:
        time.sleep(seconds)

    def close(self) -> None:
        self._port.close()


class Board:
    """Requests to one board over a transport.

    Parameters
    ----------
    transport:
        Where the frames go.
    error_wait:
        Seconds to wait after an error reply before the next request (the board swallows
        bytes until its line has been idle for its timeout; a real board's is 50 ms).
    """

    def __init__(self, transport: Transport, *, error_wait: float = 0.0) -> None:
        self.transport = transport
        self.error_wait = error_wait
        self._info: dict[str, Any] | None = None

    # ---- one request
    def request(self, cmd: int, addr: int = 0, length: int = 0, payload: bytes = b"",
                reply_bytes: int = 0) -> bytes:
        """Send one frame; return the reply payload (``reply_bytes`` long when OK)."""
        t = self.transport
        t.write(proto.request(cmd, addr, length, payload))
        head = t.read(2)
        if len(head) < 2:
            raise ProtocolError(f"no reply from the board to {Cmd(cmd).name} "
                                f"(got {len(head)} of 2 bytes)")
        if head[0] != proto.RSP_SYNC:
            raise ProtocolError(f"reply to {Cmd(cmd).name} starts with 0x{head[0]:02x}, "
                                f"not 0x{proto.RSP_SYNC:02x}")
        status = head[1]
        n = reply_bytes if status == Status.OK else 0
        rest = t.read(n + 1)
        if len(rest) < n + 1:
            raise ProtocolError(f"reply to {Cmd(cmd).name} cut short ({len(rest)} of {n + 1} "
                                f"bytes after the status)")
        body, crc = rest[:n], rest[n]
        if proto.crc8(bytes([status]) + body) != crc:
            raise ProtocolError(f"reply to {Cmd(cmd).name} has a bad CRC")
        if status != Status.OK:
            try:
                name = Status(status).name
            except ValueError:
                name = f"status 0x{status:02x}"
            if self.error_wait:
                t.idle(self.error_wait)
            raise BoardError(f"board refused {Cmd(cmd).name} at word {addr} (len {length}): "
                             f"{name}")
        return body

    # ---- commands
    def info(self) -> dict[str, Any]:
        if self._info is None:
            info = proto.parse_info(self.request(Cmd.INFO, reply_bytes=proto.INFO_BYTES))
            # (a zero here would divide the writes into empty frames, or by zero)
            bad = [k for k in ("bus_bytes", "mem_words", "stage_words") if info[k] < 1]
            if bad:
                raise ProtocolError(f"INFO reply gives {bad[0]} = 0: not a working board")
            self._info = info
        return self._info

    def status(self) -> dict[str, Any]:
        return proto.parse_status(self.request(Cmd.STATUS, reply_bytes=proto.STATUS_BYTES))

    def start(self) -> None:
        self.request(Cmd.START)

    def write(self, word_addr: int, data: bytes) -> None:
        """Write ``data`` (a whole number of words) from ``word_addr``, in staging-sized
        frames."""
        info = self.info()
        bb, chunk = info["bus_bytes"], info["stage_words"]
        if len(data) % bb:
            raise BoardError(f"write of {len(data)} bytes is not whole {bb}-byte words")
        words = len(data) // bb
        if word_addr + words > info["mem_words"]:
            raise BoardError(f"{words} words at word {word_addr} do not fit the board memory "
                             f"of {info['mem_words']} words")
        for w in range(0, words, chunk):
            n = min(chunk, words - w)
            self.request(Cmd.WRITE, word_addr + w, n, data[w * bb:(w + n) * bb])

    def read(self, word_addr: int, words: int, *, chunk: int = 1024) -> bytes:
        bb = self.info()["bus_bytes"]
        out = bytearray()
        for w in range(0, words, chunk):
            n = min(chunk, words - w)
            out += self.request(Cmd.READ, word_addr + w, n, reply_bytes=n * bb)
        return bytes(out)

    def marks(self, first: int, count: int) -> list[tuple[int, int]]:
        if count == 0:
            return []
        return proto.parse_marks(self.request(Cmd.MARKS, first, count,
                                              reply_bytes=count * proto.MARK_BYTES))


# ---------------------------------------------------------------- images and bundles
@dataclass(frozen=True)
class Region:
    """A named span of board memory to read back after the run (byte address, bytes)."""
    name: str
    addr: int
    nbytes: int


@dataclass
class BoardImage:
    """What a board run needs: the config it was compiled for, the memory image from word 0
    (program + data) and the regions to read back."""
    config: CoreConfig
    image: bytes
    outputs: list[Region] = field(default_factory=list)


@dataclass
class RunResult:
    """Outputs read back (name -> bytes), the core's cycle count, the MARK log (id, cycles),
    the final STATUS and, with ``read_all``, the memory image's span after the run (feed it
    to ``Bundle.read_tensors`` for every intermediate tensor)."""
    outputs: dict[str, bytes]
    cycles: int
    marks: list[tuple[int, int]]
    status: dict[str, Any]
    memory: bytes | None = None


def image_from_bundle(bundle: Any) -> BoardImage:
    """A ``BoardImage`` from a program bundle (``shiftbook.sw.bundle.Bundle``) or a
    ``BoardImage`` as is.

    Duck-typed: ``config`` (a CoreConfig), the memory image as ``memory`` or
    ``memory_image`` (bytes from word 0), and the regions to read back: the graph outputs
    (names from ``manifest["outputs"]`` or an ``outputs`` list of names, looked up in
    ``tensors``, objects with ``addr`` and ``nbytes``) or an ``outputs`` list of objects with
    ``name``, ``addr`` and ``nbytes``. A compiler ``CompiledProgram`` works too.
    """
    if isinstance(bundle, BoardImage):
        return bundle
    cfg = getattr(bundle, "config", None)
    if not isinstance(cfg, CoreConfig):
        raise BoardError("bundle has no CoreConfig ('config' attribute)")
    image = getattr(bundle, "memory", None)
    if image is None:
        image = getattr(bundle, "memory_image", None)
    if not isinstance(image, (bytes, bytearray)):
        raise BoardError("bundle has no memory image ('memory' bytes)")
    manifest = getattr(bundle, "manifest", None)
    names = list(manifest.outputs) if isinstance(manifest, Manifest) else None
    raw = list(getattr(bundle, "outputs", None) or [])
    if names is None and all(isinstance(o, str) for o in raw):
        names = raw                              # a CompiledProgram: output names
    outs: list[Region] = []
    if names is not None:
        tensors = bundle.tensors
        for name in names:
            if name not in tensors:
                raise BoardError(f"bundle output {name!r} has no tensor placement")
            t = tensors[name]
            outs.append(Region(name, int(t.addr), int(t.nbytes)))
    else:
        outs = [Region(o.name, int(o.addr), int(o.nbytes)) for o in raw]
    return BoardImage(cfg, bytes(image), outs)


def run_image(board: Board, img: BoardImage, *, poll: float = 0.01, timeout: float = 60.0,
              read_all: bool = False, progress: Callable[[str], None] | None = None
              ) -> RunResult:
    """Check the board matches ``img.config``, load the image, start, wait, read back."""
    say = progress or (lambda _msg: None)
    info = board.info()
    cfg = img.config
    if info["config_hash"] != cfg.hash[:16]:
        raise BoardError(f"the board runs core config {info['config_hash']}, the bundle was "
                         f"compiled for {cfg.hash[:16]} ({cfg.name}): rebuild one of them")
    bb = info["bus_bytes"]
    image = img.image + bytes(-len(img.image) % bb)
    say(f"loading {len(image)} bytes")
    board.write(0, image)
    say("running")
    board.start()
    waited = 0.0
    st = board.status()
    while st["busy"] or not (st["done"] or st["error"]):
        if waited > timeout:
            raise BoardError(f"the core is still running after {timeout:g} s "
                             f"({st['cycles']} cycles)")
        board.transport.idle(poll)
        waited += poll
        st = board.status()
    if st["error"]:
        raise BoardError(f"the core stopped on an illegal instruction after {st['cycles']} "
                         f"cycles")
    marks = board.marks(0, min(st["marks"], info["mark_depth"]))
    outputs = {}
    for r in img.outputs:
        first = r.addr // bb
        last = -(-(r.addr + r.nbytes) // bb)
        blob = board.read(first, last - first)
        off = r.addr - first * bb
        outputs[r.name] = blob[off:off + r.nbytes]
    memory = board.read(0, len(image) // bb) if read_all else None
    say(f"done in {st['cycles']} cycles")
    return RunResult(outputs=outputs, cycles=st["cycles"], marks=marks, status=st,
                     memory=memory)


def load_bundle_and_run(port: str | Transport, bundle: Any, *, baud: int = DEFAULT_BAUD,
                        timeout: float = 60.0, poll: float = 0.01, read_all: bool = False,
                        progress: Callable[[str], None] | None = None) -> RunResult:
    """Load ``bundle`` (a bundle object, a ``BoardImage`` or a bundle path) onto the board on
    ``port`` (a serial device name or a transport), run it and read its outputs back."""
    if isinstance(bundle, (str, Path)):
        bundle = _load_bundle_path(Path(bundle))
    img = image_from_bundle(bundle)
    own = isinstance(port, str)
    transport = SerialTransport(port, baud=baud) if own else port
    try:
        board = Board(transport, error_wait=0.1 if own else 0.0)
        return run_image(board, img, poll=poll, timeout=timeout, read_all=read_all,
                         progress=progress)
    finally:
        if own:
            transport.close()


def _load_bundle_path(path: Path) -> Any:
    if not path.exists():
        raise BoardError(f"bundle {str(path)!r} does not exist")
    from shiftbook.sw.bundle import load_bundle  # the one bundle reader

    return load_bundle(path.parent if path.is_file() else path)
