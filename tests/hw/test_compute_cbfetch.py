"""Codebook index fetcher (hw/compute_cbfetch.py) against its model: random tiles back to
back, a decoder with random back-pressure, and a WGT read port shared with raw reads."""

import random

import pytest

from shiftbook.config import PRESETS
from shiftbook.hw.compute_cbfetch import IndexFetcher

from .helpers import run_sim

CFG = PRESETS["tiny"]


def _tiles(rng, n, *, oob: bool):
    cfg = CFG
    W = 8 * cfg.wbuf_row_bytes
    tiles = []
    for _ in range(n):
        ib = rng.randint(1, cfg.index_bits_max)
        per_row = rng.randint(1, W // (cfg.cols * ib))
        k = min(1 << ib, cfg.max_k)
        if oob and rng.random() < 0.3:
            k = rng.randint(1, k)
        same = tiles and rng.random() < 0.4      # same codebook as the previous tile
        d = tiles[-1]["cb_d"] if same else rng.randint(1, cfg.max_d)
        k = tiles[-1]["cb_k"] if same else k
        ib = tiles[-1]["idx_bits"] if same else ib
        per_row = min(per_row, W // (cfg.cols * ib))
        tiles.append(dict(cb_d=d, cb_k=k, idx_bits=ib, idx_per_row=per_row,
                          kh=rng.randint(1, 3), kw=rng.randint(1, 3), nch=rng.randint(1, 4),
                          wgt_base=rng.randrange(cfg.wbuf_rows)))
    return tiles


def _run(tiles, wgt, rng, *, ready_p: float, raw_p: float, gap_p: float):
    """Offer ``tiles`` one after the other; returns (pushed rows, claim cycles, push cycles,
    final error)."""
    dut = IndexFetcher(CFG)
    pushed, claims, push_cycles = [], [], []
    state = {"cycle": 0, "error": None}

    async def wgt_port(ctx):
        # one-cycle read port; a raw-read cycle reads some other row
        async for _, _, addr, raw in ctx.tick().sample(dut.wgt_addr, dut.raw_rd):
            row = rng.randrange(CFG.wbuf_rows) if raw else addr
            ctx.set(dut.wgt_data, wgt[row])

    async def tb(ctx):
        ctx.set(dut.clear_error, 1)
        await ctx.tick()
        ctx.set(dut.clear_error, 0)
        queue = list(tiles)
        prev = None
        for cycle in range(20000):
            state["cycle"] = cycle
            tile = queue[0] if queue and rng.random() >= gap_p else None
            ctx.set(dut.offer, int(tile is not None))
            for n, v in (tile or {}).items():
                ctx.set(getattr(dut, n), v)
            same = tile is not None and prev is not None and \
                (tile["cb_d"], tile["cb_k"]) == (prev["cb_d"], prev["cb_k"])
            ctx.set(dut.active_cb, int(same and rng.random() < 0.5))
            ctx.set(dut.idx.ready, int(rng.random() < ready_p))
            ctx.set(dut.raw_rd, int(rng.random() < raw_p))
            _, _, claim, valid, ready, payload, active = await ctx.tick().sample(
                dut.claim, dut.idx.valid, dut.idx.ready, dut.idx.payload, dut.active)
            if claim:
                claims.append(cycle)
                prev = queue.pop(0)
            if valid and ready:
                pushed.append([int(payload[j]) for j in range(CFG.cols)])
                push_cycles.append(cycle)
            if not queue and not active and not claim:
                break
        state["error"] = ctx.get(dut.error)

    run_sim(dut, tb, processes=[wgt_port])
    return dut, pushed, claims, push_cycles, state["error"]


@pytest.mark.parametrize("seed", range(4))
def test_fetcher_matches_model(seed):
    rng = random.Random(seed)
    W = 8 * CFG.wbuf_row_bytes
    wgt = [rng.getrandbits(W) for _ in range(CFG.wbuf_rows)]
    tiles = _tiles(rng, 12, oob=seed % 2 == 1)
    dut, pushed, claims, _, error = _run(tiles, wgt, rng, ready_p=0.6, raw_p=0.3, gap_p=0.2)
    assert len(claims) == len(tiles)
    want, oob = [], False
    for t in tiles:
        rows = dut.model(wgt, **{k: v for k, v in t.items() if k != "cb_k"})
        oob |= any(i >= t["cb_k"] for r in rows for i in r)
        want += rows
    assert pushed == want
    assert error == int(oob)


def test_fetcher_first_row_one_cycle_after_claim():
    rng = random.Random(7)
    wgt = [rng.getrandbits(8 * CFG.wbuf_row_bytes) for _ in range(CFG.wbuf_rows)]
    tiles = [dict(cb_d=1, cb_k=256, idx_bits=8, idx_per_row=4, kh=1, kw=1, nch=6,
                  wgt_base=3)]
    dut, pushed, claims, push_cycles, _ = _run(tiles, wgt, rng, ready_p=1.0, raw_p=0.0,
                                               gap_p=0.0)
    assert push_cycles[0] == claims[0] + 1
    # no raw reads and no back-pressure: one index row per cycle (the next WGT row is read
    # while the held one is shifted out)
    assert push_cycles == list(range(claims[0] + 1, claims[0] + 7))
    assert pushed == dut.model(wgt, **{k: v for k, v in tiles[0].items() if k != "cb_k"})
