"""Issue #19 (memory): the skill selector's state per (server, target) stops growing once its window is full, stays a few KB,
and a young series holds far less; scoring a sample of each forecast's steps picks what scoring every step picks, with nearly
the same errors. Three simulated days at the hub's cadence through the calls the hub makes each cycle (`observe_data` on the
cycle's telemetry, then a record and a choice per series)."""
import numpy as np
import pandas as pd
import pytest
import xarray as xr

from qdash.config import ValidationError
from qdash.model.skill import SkillSelector

STEP, H, DAY, EVERY = 300.0, 96, 288, 3
BOUND = 8 * 1024                                                     # bytes a series may hold (it was 94 KB)


class WholePaths:
    "The reference: every kept forecast's whole paths, every step scored, errors of values in the last day (by value step)."
    def __init__(self): self.kept, self.err = [], []               # [(origin, (H, C) paths)], [(value step, (C,) abs errors)]
    def record(self, origin, P):
        if not self.kept or origin - self.kept[-1][0] >= EVERY: self.kept.append((origin, P))
    def observe(self, t, y):                                        # the value of step t came
        self.err += [(t, np.abs(P[t - o - 1] - y)) for o, P in self.kept if 0 <= t - o - 1 < H]
    def mae(self, newest):
        e = np.array([x for t, x in self.err if t > newest - DAY])
        return len(e), e.mean(0)


def paths(kind, y, o, i):
    h = np.arange(1, H + 1)
    model = 40 + 10 * np.sin(2 * np.pi * (o + h) / DAY + i) if kind == "rhythm" else np.full(H, y[o - DAY:o + 1].mean())
    b = np.polyfit(np.arange(36), y[o - 35:o + 1], 1)
    lv, lev = y[o], np.median(y[o - 11:o + 1])
    return {"model": model, "trend": b[1] + b[0] * (35 + h), "last_value": np.full(H, lv),
            "combined": np.median(np.stack([model, np.full(H, lv), np.full(H, lev)]), 0)}


def test_a_series_memory_stops_growing_and_its_choice_is_what_whole_paths_choose():
    rng = np.random.default_rng(11)
    t0, days = DAY + 40, 3
    T = t0 + days * DAY + 2
    t = np.arange(T)
    Y = {"rhythm": 40 + 10 * np.sin(2 * np.pi * t / DAY) + rng.normal(0, 1.5, T),          # the "model" knows its rhythm
         "walk": np.clip(50 + np.cumsum(np.where(t % 6 == 0, rng.normal(0, 3, T), 0)), 5, 95) + rng.normal(0, .05, T),   # held between jumps
         "leak": 20 + 0.03 * t + rng.normal(0, .3, T)}
    kinds = list(Y)
    time = pd.date_range("2026-03-01", periods=T, freq="5min")
    data = xr.Dataset({"mem_pct": (("server", "time"), np.stack([Y[k] for k in kinds]))}, coords={"server": kinds, "time": time})
    base = int(time[0].value // 10**9 // STEP)
    sel, ref, size = SkillSelector(H, STEP), {k: WholePaths() for k in kinds}, {}   # the hub's defaults: a day's window, every 3 steps
    order = ["model", "trend", "last_value", "combined"]
    for o in range(t0, t0 + days * DAY):
        sel.observe_data(data.isel(time=slice(o - 12, o + 1)))     # the newest step is left out, as the hub does: still filling
        for i, k in enumerate(kinds):
            ref[k].observe(o - 1, Y[k][o - 1])
            p = paths(k, Y[k], o, i)
            sel.record((k, "mem_pct"), base + o, p)
            ref[k].record(o, np.stack([p[c] for c in order], 1))
        if (o - t0 + 1) % 12 == 0: size[(o - t0 + 1) // 12] = {k: sel.tracks[(k, "mem_pct")].nbytes for k in kinds}   # after each hour
    for k in kinds:                                                 # (a) flat once the window is full, small; a young series far less
        assert size[48][k] == size[72][k] < BOUND, (k, size[48], size[72])
        assert size[1][k] < size[72][k] / 3, (k, size[1], size[72])
    chosen = {}
    for k in kinds:                                                 # (b) the errors and the choice of whole paths
        w, sk = sel.choose((k, "mem_pct"), "combined", order)
        n, mae = ref[k].mae(t0 + days * DAY - 2)
        assert abs(sk["n"] - n) < 0.03 * n, (k, sk["n"], n)         # the sample's values count for their blocks: the same n, to within a slot
        for c, m in zip(order, mae): assert abs(sk["mae"][c] - m) < 0.05 * m, (k, c, sk["mae"][c], m)
        best = min(order, key=lambda c: (mae[order.index(c)], c != "combined"))
        chosen[k] = w
        assert w == best or (best in ("model", "combined") and w in ("model", "combined")) or mae[order.index(best)] >= 0.8 * mae[3], (k, w, best, mae)
    assert chosen["walk"] in ("last_value", "combined") and chosen["leak"] == "trend" and chosen["rhythm"] in ("model", "combined"), chosen


def test_the_selector_refuses_a_step_sample_below_one():
    for field in ("keep_steps", "horizon", "min_points"):
        kw = {"horizon": H, "step": STEP, field: 0}
        with pytest.raises(ValidationError, match=f"{field}=0") as e:
            SkillSelector(**kw)
        assert e.value.field == field
