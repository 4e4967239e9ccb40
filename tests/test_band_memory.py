"""Issue #19 (memory): a band calibration's state stops growing once its window is full, and stays small (a young series
far smaller: its arrays grow as they are used), while the bands it serves still hold 80 %.
Three simulated days at the hub's cadence through the calls the hub makes each cycle
(`observe_data` on the cycle's telemetry, `calibrate_results` on its forecasts)."""
import pickle

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy.special import ndtri

from qdash.config import ValidationError
from qdash.model.band import I10, I90, IntervalCalibrator
from qdash.model.data import QUANTILES

STEP, H, DAY = 300.0, 96, 288
BOUND = 16 * 1024                                                    # bytes a series may hold (issue #19: 1,000 servers in 500 MB)


def test_a_series_memory_stops_growing_and_its_bands_still_hold_80_percent():
    rng = np.random.default_rng(7)
    days, t0 = 3, 100
    T = t0 + days * DAY + H + 1
    time = pd.date_range("2026-03-01", periods=T, freq="5min")
    sigma = {"noisy": 2.0, "quiet": 0.3}                             # the raw band says sigma = 1: one series twice that, one quiet
    Y = np.stack([50 + rng.normal(0, s, T) for s in sigma.values()])
    data = xr.Dataset({"mem_pct": (("server", "time"), Y)}, coords={"server": list(sigma), "time": time})
    raw = 50 + ndtri(np.array(QUANTILES))[None, None] * np.ones((H, 1, 1))   # (H, target, quantile)
    cal = IntervalCalibrator(H, STEP)                                 # the hub's defaults: every 3 steps kept, a 2-day window
    size, served = {}, {s: [] for s in sigma}
    for o in range(t0, t0 + days * DAY):                              # a cycle each step, seeing the last hour up to its origin
        cal.observe_data(data.isel(time=slice(o - 12, o + 1)))        # the newest step is left out, as the hub does: still filling
        res = {s: {"status": "ok", "quantiles": raw.copy(), "timestamps": list(time[o + 1:o + 1 + H]), "targets": ["mem_pct"]}
               for s in sigma}
        cal.calibrate_results(res, None, "model")
        for i, s in enumerate(sigma):
            q, y = res[s]["quantiles"][:, 0], Y[i, o + 1:o + 1 + H]
            served[s].append((((y >= q[:, I10]) & (y <= q[:, I90])).mean(), (q[:, I90] - q[:, I10]).mean()))
        if o - t0 + 1 == 12: young = {s: cal.series[(s, "mem_pct", "model")].nbytes for s in sigma}   # after an hour
        if (o - t0 + 1) % DAY == 0:
            d = (o - t0 + 1) // DAY
            size[d] = {s: len(pickle.dumps(cal.series[(s, "mem_pct", "model")])) for s in sigma}
    for s in sigma:                                                   # (a) it stops growing, under the bound
        assert size[3][s] <= size[2][s] * 1.02 + 256 and size[3][s] < BOUND, size
        assert cal.series[(s, "mem_pct", "model")].nbytes < BOUND, cal.series[(s, "mem_pct", "model")].nbytes
        assert young[s] < cal.series[(s, "mem_pct", "model")].nbytes / 3, (young, s)   # a young series pays for the hours it has run
    info = {s: cal.summary((s, "mem_pct", "model")) for s in sigma}
    assert all(v["n"] > 1000 and v["matured"] > v["n"] for v in info.values()), info   # the window is full, and older values forgotten
    last = {s: np.mean(served[s][-DAY:], axis=0) for s in sigma}      # (b) over the last day: coverage and mean width served
    raw_width = raw[0, 0, I90] - raw[0, 0, I10]
    assert 0.75 <= last["noisy"][0] <= 0.85, last                     # raw, this band holds ~0.47
    assert last["noisy"][1] > 1.5 * raw_width and info["noisy"]["scale"] > 1.3, (last, info)
    assert last["quiet"][1] < 0.5 * raw_width and info["quiet"]["scale"] < 0.5, (last, info)   # the quiet band narrows
    assert 0.7 <= last["quiet"][0] <= 0.9, last


def test_the_calibrator_refuses_a_sample_or_step_count_below_one():
    for field in ("keep_steps", "sample", "every", "min_points"):
        with pytest.raises(ValidationError, match=f"{field}=0") as e:
            IntervalCalibrator(H, STEP, **{field: 0})
        assert e.value.field == field
