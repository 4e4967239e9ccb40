"""Alerts, all in one place: the engine's lifecycle (hysteresis, ack, silence, restart) in Python, then issue #14 through a
real hub over HTTP (fed telemetry forecast and alerted, a breach critical at once, a silent server stale), the alert
actions' bad input, and an active alert's drivers."""
import math
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from qdash.collect.simulate import FleetSimulator
from qdash.config import NotFound, load_settings
from qdash.model.alerts import AlertEngine
from qdash.store import open_store
from qdash.testing import HubProcess
from hubhttp import SHIPPED, fed_hub_env, feed, get, post

MODELS = SHIPPED.parent
T0 = pd.Timestamp("2026-01-05T00:00Z")


def _feed(eng, xs, server="db-01", start=0):
    out = []
    for i, x in enumerate(xs):
        ev = eng.update({server: {"risk_score": x, "profile": "database", "target": "mem_pct", "time_to_issue_min": 45.0,
                                  "message": "Memory exhaustion predicted in 45 minutes" if x >= 50 else ""}}, T0 + pd.Timedelta(minutes=start + i))
        out += [e["event"] for e in ev]
    return out


def test_alert_hysteresis_no_flapping():
    st = open_store(load_settings(environ={}).updated({"store": {"path": ":memory:"}}))
    eng = AlertEngine(st)
    # wobbling around the warning bound and the healthy bound: one alert, one escalation, no flapping
    events = _feed(eng, [55, 61, 58, 62, 56, 61, 57])
    assert events == ["opened", "escalated"]
    assert eng.active(T0)["alerts"][0]["level"] == "warning"
    events = _feed(eng, [52, 47, 51, 46, 48, 49], start=10)
    assert events == ["deescalated"] and eng.active(T0)["alerts"][0]["level"] == "degraded"
    events = _feed(eng, [44, 46, 44, 43], start=20)
    assert events == ["resolved"] and eng.active(T0)["count"] == 0
    assert [a["status"] for a in eng.history("db-01")] == ["resolved"]


def test_ack_and_silence():
    st = open_store(load_settings(environ={}).updated({"store": {"path": ":memory:"}}))
    eng = AlertEngine(st)
    _feed(eng, [65]); _feed(eng, [75], server="web-01")
    a = next(a for a in eng.active(T0)["alerts"] if a["server_name"] == "db-01")
    assert eng.ack(a["id"], by="ops", now=T0)["acked"] is True
    assert st.get_record("alert", a["id"])["acked_by"] == "ops"
    eng.silence("web-01", "30min", now=T0)
    assert [x["server_name"] for x in eng.active(T0 + pd.Timedelta("10min"))["alerts"]] == ["db-01"]
    assert eng.active(T0 + pd.Timedelta("31min"))["count"] == 2
    eng.silence(None, "1h", now=T0)
    assert eng.active(T0 + pd.Timedelta("10min"))["count"] == 0
    with pytest.raises(NotFound): eng.ack("alert-unknown")
    restarted = AlertEngine(st, now=T0)
    assert restarted.active(T0 + pd.Timedelta("2h"))["count"] == 2 and restarted.silenced("db-01", T0 + pd.Timedelta("5min"))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model, forecasting every second."
    # [alerts] for = 2 samples and stale = 3 × [collect] interval (1 s) are the defaults; thresholds cpu_pct:90, mem_pct:95
    with HubProcess(fed_hub_env(tmp_path_factory.mktemp("models"))) as h:
        yield h



def iso(t: pd.Timestamp) -> str: return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> pd.Timestamp: return pd.Timestamp.now(tz="UTC").floor("s")


def history(server, end, mem, cpu=20.0, step=300, profile="database"):
    "Seed 004 records of one server ending at `end`, one per `step` seconds, mem_pct from the list `mem`."
    n = len(mem)
    return [{"server_name": server, "timestamp": iso(end - pd.Timedelta(seconds=step * (n - 1 - i))), "profile": profile,
             "mem_pct": float(m), "cpu_pct": cpu} for i, m in enumerate(mem)]


def next_cycle(hub, after: pd.Timestamp, until=lambda body: True, timeout=60.0) -> dict:
    "The first /predictions/current payload of a cycle started after `after` (whole seconds) for which `until` holds."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        body = get(hub, "/predictions/current").json()
        if pd.Timestamp(body["timestamp"]) > after and until(body): return body
        time.sleep(0.2)
    raise AssertionError(f"no cycle after {after} within {timeout}s; last payload at {body['timestamp']}")


def test_fleet_health_is_unknown_until_a_server_reports(hub):
    # runs first on this module's hub: nothing fed yet, so nothing is forecast and a score of 100 would be a guess
    h = get(hub, "/cascade/health").json()
    assert (h["health_score"], h["status"], h["reasons"]) == (None, "unknown", ["no server has reported yet"]), h


def test_fed_breach_is_critical_within_one_cycle(hub):
    t = now()
    leak = list(np.full(290, 60.0)) + [97.0, 98.2, 99.5]                 # a day at 60 %, then three samples over 95 %
    r = feed(hub, history("leak-01", t - pd.Timedelta(minutes=5), leak[:290], step=300, profile="web")
                  + history("leak-01", t, leak[290:], step=30, profile="web")
                  + history("young-01", t, [96.0, 98.7], step=60))      # too little history to forecast
    assert r.status_code == 200, r.text
    body = next_cycle(hub, now())                                         # the first cycle that starts after the feed
    p, y = body["predictions"]["leak-01"], body["predictions"]["young-01"]
    assert p["status"] == "ok" and y["status"] == "insufficient_data"
    for q, value in ((p, "99.5"), (y, "98.7")):
        assert q["risk_score"] == 100 and q["alert"]["level"] == "critical", q
        assert q["message"].startswith(f"Memory at {value} %, over 95 % for "), q["message"]
    al = {a["server_name"]: a for a in get(hub, "/alerts/active").json()["alerts"] if a["kind"] == "risk"}
    assert al["leak-01"]["level"] == "critical" and al["leak-01"]["message"] == p["message"]
    assert al["young-01"]["level"] == "critical" and al["young-01"]["risk_score"] == 100


def test_fleet_health_is_one_answer(hub):
    "The header, /cascade/health and the predictions summary say the same, and never 'healthy' under a critical alert."
    t = now()
    r = feed(hub, history("calm-01", t, [40.0] * 12, step=60) + history("hot-01", t, [60.0] * 10 + [97.0, 98.0], step=60))
    assert r.status_code == 200, r.text
    body = next_cycle(hub, now(), until=lambda b: b["predictions"].get("hot-01", {}).get("risk_score") == 100)
    summ, h = body["summary"], get(hub, "/cascade/health").json()
    assert summ["fleet_status"] == h["status"] == "critical", (summ, h)
    assert any(x.endswith("critical alert") or x.endswith("critical alerts") for x in h["reasons"]), h["reasons"]
    assert h["health_score"] <= summ["forecast_health"] and summ["fleet_health"] <= summ["forecast_health"]
    assert h["health_score"] == min(h["cascade_health_score"], h["forecast_health_score"])


def test_silent_server_goes_stale_and_resolves_when_it_reports_again(hub):
    t = now()
    assert feed(hub, history("gone-01", t, [40.0, 41.0, 42.0], step=10)).status_code == 200
    silent = next_cycle(hub, t, lambda b: b["predictions"].get("gone-01", {}).get("stale"))
    assert silent["predictions"]["gone-01"]["last_seen"] == iso(t) and silent["summary"]["stale"] >= 1
    stale = [a for a in get(hub, "/alerts/active").json()["alerts"] if a["server_name"] == "gone-01" and a["kind"] == "stale"]
    assert len(stale) == 1 and stale[0]["level"] == "warning" and stale[0]["risk_score"] is None
    assert stale[0]["message"].startswith("No data for ") and iso(t) in stale[0]["message"]
    t2, stop = now(), threading.Event()

    def report():                                                           # it reports again, every half second
        while not stop.is_set():
            feed(hub, [{"server": "gone-01", "time": pd.Timestamp.now(tz="UTC").isoformat(), "mem_pct": 43.0, "cpu_pct": 20.0}])
            stop.wait(0.5)
    th = threading.Thread(target=report, daemon=True)
    th.start()
    try: back = next_cycle(hub, t2, lambda b: b["predictions"]["gone-01"]["stale"] is False)
    finally: stop.set(); th.join()
    assert pd.Timestamp(back["predictions"]["gone-01"]["last_seen"]) >= t2
    assert stale[0]["id"] not in [a["id"] for a in back["alerts"]]
    recs = {a["id"]: a for a in get(hub, "/historical/alerts", params={"time_range": "1h", "server_name": "gone-01"}).json()["alerts"]}
    assert recs[stale[0]["id"]]["status"] == "resolved" and recs[stale[0]["id"]]["resolved_at"] is not None


def test_fed_ints_for_float_fields_are_accepted(hub):
    t = now()
    assert feed(hub, [{"server": "ints-01", "time": iso(t - pd.Timedelta(seconds=2)), "cpu_pct": 50.5, "mem_pct": 40.0}]).status_code == 200
    r = feed(hub, [{"server": "ints-01", "time": iso(t - pd.Timedelta(seconds=1)), "cpu_pct": 50, "mem_pct": 41}])
    assert r.status_code == 200, r.text
    rows = get(hub, "/api/history/metrics", params={"measurement": "vm", "server": "ints-01", "fields": "cpu_pct,mem_pct"}).json()
    assert [(x["cpu_pct"], x["mem_pct"]) for x in rows] == [(50.5, 40.0), (50.0, 41.0)]


def test_seed_004_records_are_stored_at_their_own_time(hub):
    t1, t2 = now().floor("min") - pd.Timedelta(minutes=20), now().floor("min") - pd.Timedelta(minutes=10)
    r = feed(hub, [{"server_name": "feedtest-02", "timestamp": iso(t1), "cpu_pct": 30.0, "mem_pct": 50.0},
                   {"server_name": "feedtest-02", "timestamp": t2.timestamp(), "cpu_pct": 31.0, "mem_pct": 51.0}])
    assert r.status_code == 200 and r.json()["measurements"] == ["vm"], r.text
    h = get(hub, "/historical/server/feedtest-02", params={"time_range": "1h"})
    assert h.status_code == 200, h.text
    h = h.json()
    assert h["timestamps"] == [iso(t1), iso(t2)] and h["metrics"]["cpu_pct"] == [30.0, 31.0]
    rows = get(hub, "/api/history/metrics", params={"measurement": "vm", "server": "feedtest-02"}).json()
    assert [x["time"][:19] for x in rows] == [iso(t1)[:19], iso(t2)[:19]]
    assert not any("timestamp" in x or "server_name" in x for x in rows)           # neither became a tag


def test_unreadable_timestamp_is_refused_with_its_index(hub):
    t = now()
    r = feed(hub, [{"server_name": "badtime-01", "timestamp": iso(t), "cpu_pct": 1.0},
                   {"server_name": "badtime-01", "timestamp": "half past ten", "cpu_pct": 2.0},
                   {"server_name": "badtime-01", "timestamp": None, "cpu_pct": 3.0},
                   {"server_name": "badtime-01", "timestamp": t.timestamp() * 1000, "cpu_pct": 4.0}])   # milliseconds
    assert r.status_code == 422, r.text
    errs = r.json()["errors"]
    assert [e["index"] for e in errs] == [1, 2, 3] and all(e["reason"].startswith("timestamp") for e in errs), errs
    assert "record 1: timestamp 'half past ten' is not ISO 8601" in r.json()["detail"]
    assert get(hub, "/historical/server/badtime-01").status_code == 404            # nothing of the batch was written


def test_leaking_server_ranks_above_a_quiet_one(hub):
    t = now()
    rng = np.random.default_rng(14)
    quiet = 45 + rng.normal(0, 0.5, 300)
    leaky = quiet.copy()
    leaky[-36:] += np.linspace(0, 43, 36)                                   # the last 3 h: memory climbs to ~88 %, under 95
    assert leaky.max() < 95
    r = feed(hub, history("quiet-01", t, quiet) + history("leaky-01", t, leaky))
    assert r.status_code == 200, r.text
    body = next_cycle(hub, now())
    pq, pl = body["predictions"]["quiet-01"], body["predictions"]["leaky-01"]
    assert pq["status"] == pl["status"] == "ok" and "breach" not in pl
    assert pl["risk_score"] > pq["risk_score"] and not math.isclose(pl["risk_score"], pq["risk_score"]), (pl["risk_score"], pq["risk_score"])
    ranked = sorted(body["predictions"], key=lambda s: -(body["predictions"][s]["risk_score"] or 0))
    assert ranked.index("leaky-01") < ranked.index("quiet-01")


def test_alert_actions_bad_input(hub):
    assert post(hub, "/alerts/nope/ack").status_code == 404
    r = post(hub, "/alerts/silence", json={"server": "web-01", "duration": "soon"})
    assert r.status_code == 422 and "duration" in r.json()["detail"]
    r = post(hub, "/alerts/silence", json={"server": "web-01", "duration": "30min", "reason": "maintenance"})
    assert r.status_code == 200 and r.json()["server"] == "web-01"
    assert post(hub, "/alerts/silence", json={"minutes": 5}).status_code == 422


def test_active_alert_carries_drivers(tmp_path):
    server = FleetSimulator(6, seed=42).servers.server[0]
    # an alert left open by an earlier run of the hub: the alert engine picks it up from the records
    store = open_store(load_settings(environ={}).updated({"store": {"path": str(tmp_path / "qdash.duckdb")}}))
    AlertEngine(store).update({server: {"risk_score": 85.0, "profile": "web", "target": "cpu_pct", "time_to_issue_min": 30.0,
                                        "message": "CPU saturation predicted in 30 minutes"}})
    store.close()
    env = {"QDASH__MODEL__DIR": str(MODELS), "QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "6",
           "QDASH__LIMITS__ALERTS_ACTIVE": "100000/minute"}
    with HubProcess(env, data_dir=tmp_path) as hub:
        H = {"X-API-Key": hub.api_key}
        end, alert = time.monotonic() + 90, None
        while time.monotonic() < end:
            body = httpx.get(hub.url + "/alerts/active", headers=H, timeout=30).json()
            alert = next((a for a in body["alerts"] if a["server_name"] == server), None)
            if alert and alert["drivers"]:
                break
            time.sleep(0.5)
    assert alert is not None, body
    assert 1 <= len(alert["drivers"]) <= 3
    assert all(set(d) == {"feature", "importance", "stars"} and 0 <= d["importance"] <= 1 for d in alert["drivers"])
