"""Board targets: an amaranth-boards platform, a CoreConfig that fits it, clock and UART.

Each target's CoreConfig is the one the compiler must use for bundles that run on the board:
its ``mem_words`` is the board memory (on-chip block RAM standing in for external memory) and
the host refuses a bundle compiled for another config (docs/boards.md).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from shiftbook.config import CoreConfig, load_config

__all__ = ["Target", "TARGETS", "DEFAULT_TARGET", "get_target", "TargetError"]


class TargetError(ValueError):
    """An unknown board name or a config that the board cannot take."""


@dataclass(frozen=True)
class Target:
    """One board.

    Members
    -------
    name:
        CLI name (``--board``).
    description:
        Board and device, for messages.
    platform:
        A callable returning a fresh amaranth-boards platform instance.
    family:
        ``"ecp5"``, ``"ice40"`` or ``"xilinx7"``; only the first two build bitstreams here.
    config:
        The CoreConfig that fits the board.
    clk_hz:
        The design clock (the platform's default clock).
    baud:
        UART rate of the host link (8N1).
    uart_pins:
        ``(rx, tx)`` FPGA pins of the USB-serial bridge, as in the platform.
    stage_words, mark_depth:
        Link engine sizes (largest WRITE frame in words, MARK log entries).
    synth_opts, nextpnr_opts:
        Extra options for ``synth_*`` and nextpnr.
    spram:
        Board memory in iCE40 UltraPlus SPRAM instead of block RAM.
    """

    name: str
    description: str
    platform: Callable[[], Any]
    family: str
    config: CoreConfig
    clk_hz: float
    baud: int
    uart_pins: tuple[str, str]
    leds: int = 3
    stage_words: int = 64
    mark_depth: int = 128
    synth_opts: str = ""
    nextpnr_opts: str = ""
    spram: bool = False

    @property
    def bitstream(self) -> bool:
        """Whether the open flow here can build a bitstream (ECP5, iCE40)."""
        return self.family in ("ecp5", "ice40")

    @property
    def link_timeout(self) -> int:
        """Link engine idle timeout: 50 ms of clock cycles (USB serial bridges can pause
        between packets)."""
        return int(self.clk_hz * 0.05)

    def with_config(self, spec: str | None) -> CoreConfig:
        """The target's config, or ``spec`` (preset or JSON file) checked against the
        board: the board memory comes from the target unless the config sets a smaller one."""
        if spec is None:
            return self.config
        cfg = load_config(spec)
        if cfg.mem_words > self.config.mem_words:
            raise TargetError(f"config {cfg.name!r} wants mem_words={cfg.mem_words}, but "
                              f"{self.name} has {self.config.mem_words} words of board memory")
        return cfg


def _ulx3s() -> Any:
    from amaranth_boards.ulx3s import ULX3S_85F_Platform
    return ULX3S_85F_Platform()


def _icebreaker() -> Any:
    from amaranth_boards.icebreaker import ICEBreakerPlatform
    return ICEBreakerPlatform()


def _arty() -> Any:
    from amaranth_boards.arty_a7 import ArtyA7_35Platform
    return ArtyA7_35Platform()


TARGETS: dict[str, Target] = {t.name: t for t in [
    Target(
        name="ulx3s-85f",
        description="Radiona ULX3S with a Lattice ECP5 LFE5U-85F (208 DP16KD, 156 MULT18)",
        platform=_ulx3s, family="ecp5",
        # 4x8 array, 32-bit accumulators; 128 KiB board memory (64 DP16KD of the 208).
        config=CoreConfig(rows=4, cols=8, bus_bytes=8, mem_latency=2, mem_words=1 << 14,
                          abuf_bytes=8192, wbuf_rows=1024, bbuf_rows=64, obuf_bytes=2048,
                          max_k=256, max_d=18, name="ulx3s-85f"),
        clk_hz=25e6, baud=1_000_000, uart_pins=("M1", "L4"),
    ),
    Target(
        name="icebreaker",
        description="1BitSquared iCEBreaker with a Lattice iCE40UP5K (5280 LC, 30 EBR, 4 SPRAM)",
        platform=_icebreaker, family="ice40",
        # One PE, 24-bit accumulator, 3-bit exponents, codebooks up to k=16, d=4; the 64 KiB
        # board memory lives in two of the four SPRAMs, the buffers in block RAM (BIAS and
        # the fetch FIFO too: the UP5K has no distributed RAM). Measured with the core's
        # config-sized instruction latches and requantizer: 4966 of 5280 logic cells (94.1%),
        # 2310 FF, 17 of 30 EBR, 2 SPRAM, Fmax 19.9 MHz at 12 MHz (full-ISA-width latches
        # needed 6205 LCs).
        config=CoreConfig(rows=1, cols=1, acc_bits=24, exp_bits=3, bus_bytes=4, mem_latency=1,
                          mem_words=1 << 14, abuf_bytes=1024, wbuf_rows=256, bbuf_rows=4,
                          obuf_bytes=256, max_k=16, max_d=4, name="icebreaker"),
        clk_hz=12e6, baud=1_000_000, uart_pins=("6", "9"), leds=2,
        stage_words=16, mark_depth=0, spram=True, synth_opts="-dsp",
    ),
    Target(
        name="arty-a7",
        description="Digilent Arty A7-35T with a Xilinx XC7A35T (Verilog and XDC only)",
        platform=_arty, family="xilinx7",
        config=CoreConfig(rows=4, cols=8, bus_bytes=8, mem_latency=2, mem_words=1 << 14,
                          abuf_bytes=8192, wbuf_rows=1024, bbuf_rows=64, obuf_bytes=2048,
                          max_k=256, max_d=18, name="arty-a7"),
        clk_hz=100e6, baud=1_000_000, uart_pins=("A9", "D10"), leds=3,
    ),
]}

DEFAULT_TARGET = "ulx3s-85f"


def get_target(name: str | None) -> Target:
    key = (name or DEFAULT_TARGET).lower()
    if key not in TARGETS:
        raise TargetError(f"unknown board {name!r} (known: {', '.join(TARGETS)})")
    return TARGETS[key]
