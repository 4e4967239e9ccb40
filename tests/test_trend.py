"Issue #14 item 2 through a real hub over HTTP: a fed ramp is warned of before it breaches, a flat server is not, a young server is forecast from its trend."

import numpy as np
import pandas as pd
import pytest

from qdash.testing import HubProcess
import hubhttp
from hubhttp import fed_hub_env, get, next_cycle



@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model, forecasting every second (thresholds cpu_pct:90, mem_pct:95)."
    with HubProcess(fed_hub_env(tmp_path_factory.mktemp("models"))) as h:
        yield h


def feed(hub, records):
    r = hubhttp.feed(hub, records)
    assert r.status_code == 200, r.text


def now() -> pd.Timestamp: return pd.Timestamp.now(tz="UTC").floor("s")


def series(server, end, mem, step, cpu=25.0, profile="web"):
    "Seed 004 records (server_name, timestamp) of one server ending at `end`, one per `step` seconds, mem_pct from `mem`."
    n = len(mem)
    return [{"server_name": server, "timestamp": (end - pd.Timedelta(seconds=step * (n - 1 - i))).isoformat(), "profile": profile,
             "mem_pct": round(float(m), 3), "cpu_pct": cpu} for i, m in enumerate(mem)]



def test_fed_linear_leaks_are_warned_before_they_breach_and_a_flat_server_is_not(hub):
    rng, t = np.random.default_rng(14), now()
    h26 = np.arange(26 * 12) / 12                                  # 26 hours at 5-minute steps
    leak26 = 40 + 1.85 * h26 + rng.normal(0, 0.4, len(h26))         # 88 % now; 95 % in about 3.8 hours
    flat26 = 55 + rng.normal(0, 0.4, len(h26))
    h4 = np.arange(4 * 60) / 60                                     # 4 hours at 1-minute steps
    leak4 = 65 + 4.5 * h4 + rng.normal(0, 0.4, len(h4))             # 83 % now; 95 % in about 2.7 hours
    feed(hub, series("leak-26h", t, leak26, 300) + series("flat-26h", t, flat26, 300) + series("leak-4h", t, leak4, 60))
    body = next_cycle(hub, now(), lambda b: {"leak-26h", "flat-26h", "leak-4h"} <= set(b["predictions"]))
    p = body["predictions"]
    for s, hours_left, history in (("leak-26h", (95 - 88) / 1.85, "full"), ("leak-4h", (95 - 83) / 4.5, "short")):
        w = p[s]
        assert w["status"] == "ok" and w["source"] == "trend" and w["history"] == history, w
        assert w["alert"]["level"] in ("warning", "critical") and w["risk_score"] >= 60, w
        assert "breach" not in w                                    # a warning, not a breach in progress
        assert 60 <= w["time_to_issue_min"] <= 1.5 * 60 * hours_left, (s, w["time_to_issue_min"], hours_left)   # warned >= 1 h ahead
        assert w["message"].startswith("Memory exhaustion predicted in"), w["message"]
        assert w["forecast_source"]["mem_pct"] == "trend" and max(w["forecast"]["mem_pct"]) >= 95    # the P50 runs on into the breach
    assert max(leak26[-12:]) < 95 and max(leak4[-12:]) < 95                 # nothing has breached yet: these are warnings
    f = p["flat-26h"]
    assert f["status"] == "ok" and f["alert"]["level"] == "healthy" and f["risk_score"] < 50, f
    al = {a["server_name"]: a for a in get(hub, "/alerts/active").json()["alerts"] if a["kind"] == "risk"}
    assert al["leak-26h"]["source"] == "trend" and al["leak-26h"]["time_to_issue_min"] >= 60, al["leak-26h"]
    assert "leak-4h" in al and "flat-26h" not in al
    for s in ("leak-26h", "leak-4h"):         # the Why says what the alert says: the trend, whether or not the model forecasts
        ex = get(hub, f"/explain/{s}").json()
        assert ex["risk"]["source"] == "trend" and ex["prediction"]["alert_level"] in ("warning", "critical"), ex
        assert ex["risk"]["message"].startswith("Memory exhaustion predicted in") and ex["risk"]["trend"]["slope_per_h"] > 1, ex


def test_a_server_with_two_hours_of_history_is_forecast_and_flagged_short(hub):
    rng, t = np.random.default_rng(6), now()
    feed(hub, series("young-2h", t, 48 + rng.normal(0, 0.5, 120), 60, cpu=30.0))
    body = next_cycle(hub, now(), lambda b: "young-2h" in b["predictions"])
    y = body["predictions"]["young-2h"]
    assert y["status"] == "ok" and y["history"] == "short" and y["source"] == "trend", y
    assert y["points"] < y["required"] == 288, y
    assert len(y["forecast"]["mem_pct"]) == len(y["forecast"]["timestamps"]) == 96 and 40 < y["forecast"]["mem_pct"][-1] < 56
    assert y["alert"]["level"] == "healthy" and y["risk_score"] < 50
    r = get(hub, "/explain/young-2h")                                   # the model has not forecast it: nothing to explain yet
    assert 400 <= r.status_code < 500 and "trend" in r.json()["detail"], r.text


def test_a_cpu_creep_is_warned_before_it_breaches_and_a_job_that_levels_off_is_not(hub):
    "CPU is a rate: a rise seen for under 6 hours is continued for half its window, so a creep still climbing warns and a job's plateau does not."
    rng, t = np.random.default_rng(19), now()
    n = 27 * 12                                                          # 27 hours at 5-minute steps
    creep = np.r_[np.full(n - 36, 35.0), 35 + 15 * np.arange(1, 37) / 12] + rng.normal(0, 0.8, n)   # 15 %/h for 3 h: 80 % now, 90 % in 40 min
    job = np.r_[np.full(n - 18, 15.0), np.full(18, 72.0)] + 3 * np.sin(np.arange(n) / 9) + rng.normal(0, 0.8, n)  # a job started 90 min ago, at 72 %
    mem = 45 + rng.normal(0, 0.3, n)
    rec = lambda s, cpu: [{"server_name": s, "timestamp": (t - pd.Timedelta(minutes=5 * (n - 1 - i))).isoformat(), "profile": "batch",
                           "cpu_pct": round(float(c), 3), "mem_pct": round(float(m), 3)} for i, (c, m) in enumerate(zip(cpu, mem))]
    feed(hub, rec("creep-cpu", creep) + rec("job-cpu", job))
    body = next_cycle(hub, now(), lambda b: {"creep-cpu", "job-cpu"} <= set(b["predictions"]))
    c, j = body["predictions"]["creep-cpu"], body["predictions"]["job-cpu"]
    assert max(creep) < 90 and "breach" not in c                         # nothing over 90 % yet: a warning, not a breach
    assert c["source"] == "trend" and c["alert"]["level"] in ("warning", "critical") and c["risk_score"] >= 60, c
    assert c["trend"]["slope_per_h"] > 10 and c["trend"]["window_h"] <= 3, c["trend"]     # read from the short window
    assert 10 <= c["time_to_issue_min"] <= 90, c["time_to_issue_min"]
    assert j["alert"]["level"] == "healthy" and j["risk_score"] < 50, j   # the job levelled off at 72 %: no trend to 90 %
    assert max(j["forecast"]["cpu_pct"]) < 90, j["forecast"]["cpu_pct"][:12]
