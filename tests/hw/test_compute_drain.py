"""Drain (hw/compute_drain.py) against its model: random jobs back to back through a stand-in
of the array's drain chains and the BIAS and RES buffers; the documented latency."""

import random

import pytest

from shiftbook.config import PRESETS
from shiftbook.hw.compute_drain import Drain

from .helpers import run_sim

CFG = PRESETS["small"]
LOAD_DELAY = 3     # the array's drain registers load at the end of accept + 3 (S1, S2, bcast)


def _bias_row(rng):
    word = 0
    for c in range(CFG.cols):
        bias = rng.randint(-(1 << 20), 1 << 20) & 0xFFFFFFFF
        shift = rng.choice([0, 1, 4, rng.randint(0, 16), CFG.acc_bits])
        res_shift = rng.randint(-12, CFG.acc_bits - 8) & 0xFF
        word |= (bias | shift << 32 | res_shift << 40) << (64 * c)
    return word


def _job(rng):
    R, C = CFG.rows, CFG.cols
    col0 = rng.randrange(C)
    return dict(oo=[rng.randrange(CFG.obuf_bytes) for _ in range(R)],
                npix=rng.choice([0] + [R] * 3 + list(range(1, R + 1))),
                col0=col0, ncols=rng.randint(0, C - col0 + 1), relu=rng.random() < 0.5,
                resid=rng.random() < 0.5, bias_row=rng.randrange(CFG.bbuf_rows),
                accs=[[rng.randint(-(1 << 22), 1 << 22) for _ in range(C)] for _ in range(R)])


def _run(jobs, bias, res, rng, *, gap_p: float):
    """Feed ``jobs`` (each held on ``req`` until accepted); returns the OUT writes as
    ``(cycle, addr, col, byte)``, the accept cycles and the cycle the drain went idle."""
    dut = Drain(CFG)
    writes, accepts = [], []
    state = {"idle_at": None}

    async def tb(ctx):
        R, C = CFG.rows, CFG.cols
        chain = [[0] * C for _ in range(R)]
        loads = {}                 # edge cycle -> rows to load into the chain
        queue = list(jobs)
        res_q = bias_q = None
        for cycle in range(5000):
            job = queue[0] if queue and rng.random() >= gap_p else None
            ctx.set(dut.req, int(job is not None))
            for n, v in (job or {}).items():
                if n == "oo":
                    for r in range(R):
                        ctx.set(dut.oo[r], v[r])
                elif n != "accs":
                    ctx.set(getattr(dut, n), int(v))
            for c in range(C):
                ctx.set(dut.acc[c], chain[0][c])
                ctx.set(dut.res_data[c], res[res_q][c] if res_q is not None else 0)
            ctx.set(dut.bias_data, bias[bias_q] if bias_q is not None else 0)
            _, _, free, shift, en, addr, raddr, baddr, idle, *data = await ctx.tick().sample(
                dut.free, dut.shift, dut.out_en, dut.out_addr, dut.res_addr, dut.bias_addr,
                dut.idle, *dut.out_data)
            for c in range(C):
                if en >> c & 1:
                    writes.append((cycle, addr, c, int(data[c])))
            if job is not None and free:
                accepts.append(cycle)
                loads[cycle + LOAD_DELAY] = job["accs"]
                queue.pop(0)
            # the array's drain chains at this edge (a load wins over a shift)
            if cycle in loads:
                chain = [list(row) for row in loads.pop(cycle)]
            elif shift:
                chain = chain[1:] + [[0] * C]
            res_q, bias_q = raddr, baddr
            if not queue and not loads and idle:
                state["idle_at"] = cycle
                break

    run_sim(dut, tb)
    return dut, writes, accepts, state["idle_at"]


def _memories(rng):
    bias = [_bias_row(rng) for _ in range(CFG.bbuf_rows)]
    res = [[rng.randint(-128, 127) for _ in range(CFG.cols)] for _ in range(CFG.obuf_bytes)]
    return bias, res


@pytest.mark.parametrize("seed, gap_p", [(0, 0.0), (1, 0.3), (2, 0.7)])
def test_drain_matches_model(seed, gap_p):
    rng = random.Random(seed)
    bias, res = _memories(rng)
    jobs = [_job(rng) for _ in range(25)]
    dut, writes, accepts, idle_at = _run(jobs, bias, res, rng, gap_p=gap_p)
    assert len(accepts) == len(jobs) and idle_at is not None
    want = []
    for j in jobs:
        want += dut.model(oo=j["oo"], npix=j["npix"], col0=j["col0"], ncols=j["ncols"],
                          relu=j["relu"], resid=j["resid"], accs=j["accs"],
                          bias_data=bias[j["bias_row"]], res=lambda a, c: res[a][c])
    assert [w[1:] for w in writes] == want


def test_drain_latency_and_back_to_back_jobs():
    rng = random.Random(5)
    bias, res = _memories(rng)
    jobs = []
    for _ in range(3):
        j = _job(rng)
        j.update(npix=CFG.rows, col0=0, ncols=CFG.cols)
        jobs.append(j)
    dut, writes, accepts, _ = _run(jobs, bias, res, rng, gap_p=0.0)
    R = CFG.rows
    rows = sorted({w[0] for w in writes})
    # the first job (drain idle) writes row r at accept + latency + r
    assert rows[:R] == [accepts[0] + Drain.latency + r for r in range(R)]
    # a job is taken while the previous one has at most 4 rows left to shift, and its rows
    # follow with no gap (each job has npix = rows here)
    assert rows == list(range(rows[0], rows[0] + 3 * R))
