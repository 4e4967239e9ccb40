"""Issue #17, seed 004's five targets through a real hub over HTTP: swap, I/O wait and load are forecast beside CPU and
memory; a swap fill and an I/O-wait rise are warned of on their own target; a disk saturation in progress is a breach of iowait_pct."""

import numpy as np
import pandas as pd
import pytest

from qdash.testing import HubProcess
import hubhttp
from hubhttp import fed_hub_env, get, next_cycle

NEW = ("swap_pct", "iowait_pct", "load1")


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model (CPU and memory), with the default thresholds (swap_pct:80, iowait_pct:30 among them)."
    with HubProcess(fed_hub_env(tmp_path_factory.mktemp("models"))) as h:
        yield h


def now() -> pd.Timestamp: return pd.Timestamp.now(tz="UTC").floor("s")


def records(server, end, step=300, **fields):
    "Seed 004 records of one server ending at `end`, one per `step` seconds; each field an array (or a constant)."
    n = max(len(v) for v in fields.values() if np.ndim(v))
    cols = {k: np.broadcast_to(np.asarray(v, float), (n,)) for k, v in fields.items()}
    return [{"server_name": server, "timestamp": (end - pd.Timedelta(seconds=step * (n - 1 - i))).isoformat(), "profile": "database",
             **{k: round(float(v[i]), 3) for k, v in cols.items()}} for i in range(n)]



def test_swap_and_iowait_incidents_are_forecast_and_alerted_on_their_target(hub):
    rng, t = np.random.default_rng(17), now()
    h = np.arange(26 * 12) / 12                                       # 26 hours at 5-minute steps, the newest last
    noise = lambda sd=0.3: rng.normal(0, sd, len(h))
    base = dict(cpu_pct=30 + noise(1), mem_pct=55 + noise(), load1=2 + noise(0.1))
    since = lambda hours: np.clip(h - (h[-1] - hours), 0, None)       # hours since `hours` ago (0 before)
    swap_fill = 2 + 10 * since(6) + noise()                           # 62 % now, 80 % in about 1.8 hours
    io_creep = 3 + 2.5 * since(9) + noise()                           # 25.5 % now, 30 % in about 1.8 hours
    disk_sat = np.where(h > h[-5], 55.0, 3.0) + noise()               # at 55 % for the last 4 samples: in progress
    fed = (records("swap-fill", t, **base, swap_pct=swap_fill, iowait_pct=3 + noise())
           + records("io-creep", t, **base, swap_pct=2 + noise(), iowait_pct=io_creep)
           + records("disk-sat", t, **base, swap_pct=2 + noise(), iowait_pct=disk_sat)
           + records("quiet", t, **base, swap_pct=2 + noise(), iowait_pct=3 + noise()))
    r = hubhttp.feed(hub, fed)
    assert r.status_code == 200, r.text
    names = {"swap-fill", "io-creep", "disk-sat", "quiet"}
    p = next_cycle(hub, now(), lambda b: names <= set(b["predictions"]))["predictions"]
    for s, target, phrase, level in (("swap-fill", "swap_pct", "Swap exhaustion", 80), ("io-creep", "iowait_pct", "I/O saturation", 30)):
        w = p[s]
        assert w["status"] == "ok" and w["source"] == "trend" and w["target"] == target and "breach" not in w, w
        assert w["alert"]["level"] in ("warning", "critical") and w["risk_score"] >= 60, w
        assert w["message"].startswith(f"{phrase} predicted in") and 30 <= w["time_to_issue_min"] <= 300, w["message"]
        assert w["forecast_source"][target] == "trend" and max(w["forecast"][target]) >= level, w["forecast_source"]
    assert max(swap_fill[-3:]) < 80 and max(io_creep[-3:]) < 30          # neither has breached: these are warnings
    d = p["disk-sat"]
    assert d["source"] == "breach" and d["breach"]["target"] == "iowait_pct" and d["alert"]["level"] == "critical", d
    q = p["quiet"]
    assert q["status"] == "ok" and q["alert"]["level"] == "healthy" and q["risk_score"] < 50, q
    assert q["forecast_source"] == {"cpu_pct": "combined", "mem_pct": "combined", **{k: "trend" for k in NEW}}, q["forecast_source"]   # the model's, combined
    for k in NEW: assert len(q["forecast"][k]) == len(q["forecast"]["p90"][k]) == 96
    assert abs(q["forecast"]["swap_pct"][-1] - 2) < 2 and abs(q["forecast"]["load1"][-1] - 2) < 1
    al = {a["server_name"]: a for a in get(hub, "/alerts/active").json()["alerts"] if a["kind"] == "risk"}
    assert al["swap-fill"]["target"] == "swap_pct" and al["io-creep"]["target"] == "iowait_pct", al
    assert al["disk-sat"]["target"] == "iowait_pct" and al["disk-sat"]["level"] == "critical", al["disk-sat"]
    assert "quiet" not in al
