"""Issue #14 item 3: bands that hold. A band too narrow is widened from its server's recent errors until it holds 0.75-0.85 of
what happens, cycle after cycle, as the hub serves it; a live hub keeps that calibration per server and shows it."""

import numpy as np
import pandas as pd
import pytest

from qdash.collect.simulate import FleetSimulator
from qdash.model.band import I10, I90, IntervalCalibrator
from qdash.model.data import frame_to_fleet
from qdash.model.trend import forecast_trend
from qdash.testing import HubProcess
import hubhttp
from hubhttp import fed_hub_env, get, next_cycle

STEP, H = 300.0, 96


def test_a_too_narrow_band_holds_75_to_85_percent_after_calibration_over_simulated_cycles():
    "The trend's I/O-wait band on the simulated fleet is too narrow (the held-out week: ~60 %); calibrated online, each series holds 75-85 %."
    sim = FleetSimulator(8, seed=11)
    end = pd.Timestamp("2026-03-10", tz="UTC")
    data = frame_to_fleet(sim.frame(end - pd.Timedelta(days=6), end, "5min"), ["mem_pct", "iowait_pct"])
    Y = data.iowait_pct.transpose("server", "time").values
    cal, day = IntervalCalibrator(H, STEP, every=1), 288
    inside = {s: ([], []) for s in map(str, data.server.values)}
    for o in range(day + 150, data.sizes["time"] - H, 6):                  # a cycle every 30 minutes, 4 days
        d = data.isel(time=slice(o - day - 150, o + 1))                    # what the hub holds at the cycle: nothing after it
        cal.observe_data(d, complete_only=False)
        res = forecast_trend(d, {"mem_pct": 95.0}, STEP, H, also=["iowait_pct"])
        raw = {s: r["quantiles"][:, r["targets"].index("iowait_pct")].copy() for s, r in res.items()}
        cal.calibrate_results(res, None, "trend")
        if o < 2 * day + 150: continue                                      # coverage counted after the first day of learning
        for i, s in enumerate(map(str, data.server.values)):
            if s not in res: continue
            y = Y[i, o + 1:o + 1 + H]
            served = res[s]["quantiles"][:, res[s]["targets"].index("iowait_pct")]
            for acc, q in zip(inside[s], (raw[s], served)): acc.append(((y >= q[:, I10]) & (y <= q[:, I90])).mean())
    cov = pd.DataFrame({s: (np.mean(a), np.mean(b)) for s, (a, b) in inside.items() if a}, index=["raw", "calibrated"]).T
    narrow = cov[cov.raw < 0.7]
    assert len(narrow) >= 4, cov                                            # the raw band is too narrow on most servers
    assert narrow.calibrated.between(0.75, 0.85).all(), cov
    assert cov.calibrated.between(0.75, 0.85).mean() >= 0.85, cov
    s = narrow.index[0]
    info = res[s]["interval"]["iowait_pct"]
    assert info["source"] == "trend" and info["scale"] > 1.2 and info["n"] > 1000, info


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model, forecasting every second; a forecast kept every step, own scales after 20 values."
    env = {**fed_hub_env(tmp_path_factory.mktemp("models")), "QDASH__MODEL__INTERVAL_EVERY": "1", "QDASH__MODEL__INTERVAL_MIN_POINTS": "20"}
    with HubProcess(env) as h:
        yield h


def records(server, times, mem, cpu):
    return [{"server_name": server, "timestamp": t.isoformat(), "profile": "web", "mem_pct": round(float(m), 3), "cpu_pct": round(float(c), 3)}
            for t, m, c in zip(times, mem, cpu)]


def test_a_live_hub_serves_a_calibrated_band_whose_state_advances_across_cycles(hub):
    "A day of a quiet server, then an hour whose memory swings ten times wider: the hub scores its forecasts as the values come and widens the band."
    rng = np.random.default_rng(14)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    start = now - pd.Timedelta(minutes=75)                                  # the live hour is fed after, step by step
    hist = pd.date_range(start - pd.Timedelta(hours=27), start, freq="5min")
    r = hubhttp.feed(hub, records("swing-01", hist, 50 + rng.normal(0, 0.3, len(hist)), 30 + rng.normal(0, 0.3, len(hist))))
    assert r.status_code == 200, r.text
    body = next_cycle(hub, pd.Timestamp.now(tz="UTC"), lambda b: "swing-01" in b["predictions"])
    p = body["predictions"]["swing-01"]
    assert p["status"] == "ok" and p["history"] == "full", p
    first = p["interval"]["mem_pct"]
    # the model's forecast combined with last value and the last hour's median is the default where the model forecasts (qdash.model.skill)
    assert first["source"] == p["forecast_source"]["mem_pct"] == "combined" and first["n"] == 0 and first["scale"] == 1.0, first
    width0 = np.subtract(p["forecast"]["p90"]["mem_pct"], p["forecast"]["p10"]["mem_pct"])
    seen, t = [first], start
    for _ in range(14):                                                     # 70 minutes, one 5-minute step at a time
        t = t + pd.Timedelta(minutes=5)
        r = hubhttp.feed(hub, records("swing-01", [t], [50 + rng.normal(0, 6)], [30 + rng.normal(0, 0.3)]))
        assert r.status_code == 200, r.text
        body = next_cycle(hub, pd.Timestamp.now(tz="UTC"), lambda b: b["predictions"].get("swing-01", {}).get("interval"))
        seen.append(body["predictions"]["swing-01"]["interval"]["mem_pct"])
    ns = [x["n"] for x in seen]
    assert ns == sorted(ns) and ns[-1] > ns[len(ns) // 2] > 0, ns           # the state advances as forecasts come due
    last, p = seen[-1], body["predictions"]["swing-01"]
    assert last["coverage_recent"] is not None and last["coverage_recent"] < 0.8, last   # the wide swings fell outside the bands served
    assert last["scale"] > 2.0, seen                                        # so the band is widened
    width = np.subtract(p["forecast"]["p90"]["mem_pct"], p["forecast"]["p10"]["mem_pct"])
    assert width[:12].mean() > 2 * width0[:12].mean(), (width[:12], width0[:12])
    st = get(hub, "/predictions/current").json()["predictions"]["swing-01"]["interval"]["mem_pct"]
    assert st["n"] >= last["n"], (st, last)                                  # kept between cycles: no cycle starts it over
