"""Issue #14, real series: the forecast served per server is chosen by recent skill. Through a live hub fed over HTTP, a server
whose memory is a random walk in steps (held between jumps: the value now is the best forecast there is) ends up served a present-tense
forecast (last value, or the combination that mostly is it) once enough of its forecasts have matured, a leaking one keeps its trend or model
path, and the risk stays the model's and the trend's. Until then, a target the model forecasts is served the combination (the median of the
model's P50, last value and the last hour's median) in its own calibrated band."""

import numpy as np
import pandas as pd
import pytest

from qdash.testing import HubProcess
import hubhttp
from hubhttp import fed_hub_env, next_cycle


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model every second; a forecast kept every step, judged after 30 matured values."
    env = {**fed_hub_env(tmp_path_factory.mktemp("models")), "QDASH__MODEL__INTERVAL_EVERY": "1", "QDASH__MODEL__SKILL_MIN_POINTS": "30"}
    with HubProcess(env) as h:
        yield h


def records(server, times, mem, cpu):
    return [{"server_name": server, "timestamp": t.isoformat(), "profile": "web", "mem_pct": round(float(m), 3), "cpu_pct": round(float(c), 3)}
            for t, m, c in zip(times, mem, cpu)]


def test_a_random_walk_is_served_the_value_now_and_a_leak_keeps_its_trend(hub):
    rng = np.random.default_rng(21)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    start = now - pd.Timedelta(minutes=100)                                 # the live part is fed after, step by step
    hist = pd.date_range(start - pd.Timedelta(hours=27), start, freq="5min")
    n, live = len(hist), 18
    jumps = np.where(np.arange(n + live) % 6 == 0, rng.normal(0, 3.0, n + live), 0.0)   # a random walk in steps: a jump every half hour
    walk = np.clip(50 + np.cumsum(jumps), 5, 85) + rng.normal(0, 0.05, n + live)        # held between jumps
    leak = 30 + 1.2 * np.arange(n + live) / 12 + rng.normal(0, 0.3, n + live)  # 1.2 %/h: 68 % at the end, far below 95
    cpu = 30 + rng.normal(0, 0.5, n + live)
    pad = 36                                                                # three quiet hours before: a full window (288 steps)
    hist = pd.date_range(hist[0] - pd.Timedelta(minutes=5 * pad), start, freq="5min")   # whatever minute the cycle runs in
    walk, leak, cpu = (np.concatenate([np.full(pad, x[0]), x]) for x in (walk, leak, cpu))
    n = len(hist)
    r = hubhttp.feed(hub, records("walk-01", hist, walk[:n], cpu[:n]) + records("leak-01", hist, leak[:n], cpu[:n]))
    assert r.status_code == 200, r.text
    body = next_cycle(hub, pd.Timestamp.now(tz="UTC"),
                      lambda b: all(b["predictions"].get(s, {}).get("history") == "full" for s in ("walk-01", "leak-01")))   # all of it written
    for s in ("walk-01", "leak-01"):                                        # nothing has matured: the default, the model's combination (or a warning trend)
        p = body["predictions"][s]
        assert p["status"] == "ok" and p["history"] == "full" and p["skill"]["mem_pct"]["n"] == 0, p
        assert p["forecast_source"]["mem_pct"] in ("combined", "trend"), p["forecast_source"]
        assert p["forecast_source"]["cpu_pct"] == "combined" and p["interval"]["cpu_pct"]["source"] == "combined", (p["forecast_source"], p["interval"])
        assert p["forecast"]["p10"]["cpu_pct"][-1] < p["forecast"]["cpu_pct"][-1] < p["forecast"]["p90"]["cpu_pct"][-1]   # its own band about it
    t = start
    for i in range(live):                                                   # 90 minutes, one 5-minute step at a time
        t = t + pd.Timedelta(minutes=5)
        r = hubhttp.feed(hub, records("walk-01", [t], [walk[n + i]], [cpu[n + i]]) + records("leak-01", [t], [leak[n + i]], [cpu[n + i]]))
        assert r.status_code == 200, r.text
        body = next_cycle(hub, pd.Timestamp.now(tz="UTC"), lambda b: b["predictions"].get("walk-01", {}).get("skill"))
    w, k = body["predictions"]["walk-01"], body["predictions"]["leak-01"]
    ws, ks = w["skill"]["mem_pct"], k["skill"]["mem_pct"]
    assert ws["n"] >= 30 and ks["n"] >= 30, (ws, ks)                        # judged on matured values
    assert set(ws["mae"]) == {"model", "trend", "last_value", "combined"}, ws   # the combination was judged beside its members
    assert ws["mae"]["last_value"] < min(ws["mae"]["model"], ws["mae"]["trend"]), ws   # a walk: the value now beats the model and the trend
    # served: the value now, or the combination (the default), which on a walk is mostly the value now: last value only if it beats it by the margin (20 %)
    assert ws["served"] == w["forecast_source"]["mem_pct"] == ("last_value" if ws["mae"]["last_value"] < 0.8 * ws["mae"]["combined"] else "combined"), ws
    assert ws["mae"][ws["served"]] < 0.9 * min(ws["mae"]["model"], ws["mae"]["trend"]), ws
    if ws["served"] == "last_value":
        assert set(w["forecast"]["mem_pct"]) == {round(float(walk[n + live - 1]), 2)}, w["forecast"]["mem_pct"][:3]   # flat at the newest value
    assert w["forecast"]["p10"]["mem_pct"][-1] < w["forecast"]["mem_pct"][-1] < w["forecast"]["p90"]["mem_pct"][-1]
    assert w["interval"]["mem_pct"]["source"] == ws["served"], w["interval"]  # its band is calibrated as its own source
    assert w["source"] in ("model", "trend") and w["risk_score"] < 50, w     # the risk is still the model's and the trend's
    assert ks["served"] == k["forecast_source"]["mem_pct"] in ("trend", "model"), ks
    assert ks["mae"][ks["served"]] < ks["mae"]["last_value"], ks            # a ramp: holding the value now falls behind
    assert k["forecast"]["mem_pct"][-1] > k["forecast"]["mem_pct"][0] + 1, k["forecast"]["mem_pct"]   # its path still rises, not flat
