"Drift and history routes of a live hub, fed over HTTP: drift found and retraining started, history, CSV exports, 422s."
import csv, io, time

import httpx
import pandas as pd
import pytest

from qdash.bench.drift import shift_frame
from qdash.testing import HubProcess
from qdash.collect.simulate import FleetSimulator

FIELDS = ["cpu_pct", "mem_pct", "swap_pct", "iowait_pct", "load1"]
ROUTES = ["/historical/summary", "/historical/alerts", "/historical/server/web-01", "/historical/export/alerts",
          "/historical/export/environment"]


@pytest.fixture(scope="module")
def hub():
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__LIMITS__FEED_DATA": "100000/minute", "QDASH__LIMITS__DEFAULT": "100000/minute",
           "QDASH__LIMITS__DRIFT_STATUS": "100000/minute", "QDASH__LIMITS__DRIFT_REPORT": "3/minute",
           "QDASH__DRIFT__CHECK_EVERY": "1s", "QDASH__DRIFT__WINDOW": "6h", "QDASH__DRIFT__RETRAIN_WINDOW": "2d",
           "QDASH__DRIFT__RETRAIN_EPOCHS": "1", "QDASH__MODEL__AUTO_RETRAIN": "true", "QDASH__MODEL__DRIFT_PATIENCE": "2",
           "QDASH__MODEL__ENCODER_LENGTH": "12", "QDASH__MODEL__HORIZON": "6", "QDASH__JOBS__WORKERS": "1"}
    with HubProcess(env) as h:
        yield h


@pytest.fixture(scope="module")
def fed(hub):
    "A day of an unchanged 6-server fleet, then six hours in which CPU and memory run much higher, ending now."
    sim = FleetSimulator(6, seed=4)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    old = sim.frame(now - pd.Timedelta(hours=30), now - pd.Timedelta(hours=6), "5min")
    new = shift_frame(sim.frame(now - pd.Timedelta(hours=6), now, "5min"), now - pd.Timedelta(hours=6), None,
                      {"cpu_pct": ("add", 30.0), "mem_pct": ("mul", 1.3)}, ramp="5min")
    frame = pd.concat([old, new])
    H = {"X-API-Key": hub.api_key}
    with httpx.Client(base_url=hub.url, headers=H, timeout=60) as c:
        for i in range(0, len(frame), 500):
            b = frame.iloc[i:i + 500]
            recs = [{"measurement": "vm", "server": r.server, "profile": r.profile, "time": r.time.isoformat(),
                     **{f: float(getattr(r, f)) for f in FIELDS}} for r in b.itertuples()]
            r = c.post("/feed/data", json=recs)
            assert r.status_code == 200, r.text
    return frame


def client(hub):
    return httpx.Client(base_url=hub.url, headers={"X-API-Key": hub.api_key}, timeout=60)


def test_drift_is_detected_and_retraining_starts_as_a_job(hub, fed):
    with client(hub) as c:
        end, st = time.monotonic() + 60, {}
        while time.monotonic() < end:
            st = c.get("/drift/status").json()
            if st["drift_detected"] and st["metrics"]["fds"] is not None: break
            time.sleep(0.5)
        assert st["drift_detected"] and st["auto_retrain_enabled"], st
        assert st["metrics"]["fds"] >= st["thresholds"]["fds"] == 0.15 and set(st["metrics"]) == {"per", "dss", "fds", "anomaly_rate"}
        jobs = []
        while time.monotonic() < end and not jobs:
            jobs = [j for j in c.get("/api/jobs", params={"job_type": "training"}).json() if j["task"] == "retrain"]
            time.sleep(0.5)
        assert jobs and jobs[0]["name"] == "retrain after drift", jobs
        rep = c.get("/drift/report")
        assert rep.status_code == 200
        rep = rep.json()
        assert rep["overall_health"] == "poor" and rep["auto_retrain"]["total_drift_trainings"] >= 1
        assert rep["feature_drift"]["mem_pct"]["status"] == "drifting" and rep["recommendations"]
        assert rep["reference"]["source"].startswith("the store's first data")
        codes = [c.get("/drift/report").status_code for _ in range(3)]
        assert codes[-1] == 429                                          # [limits] drift_report = 3/minute here
    assert httpx.get(hub.url + "/drift/status").status_code == 401


def test_history_routes(hub, fed):
    with client(hub) as c:
        sm = c.get("/historical/summary", params={"time_range": "1w"}).json()
        assert sm["success"] and sm["time_range"] == "1w" and set(sm["alerts_by_level"]) == {"critical", "warning", "degraded"}
        al = c.get("/historical/alerts", params={"time_range": "8h", "server_name": "web-01"}).json()
        assert al["success"] and al["server_name"] == "web-01" and al["count"] == len(al["alerts"])
        srv = c.get("/historical/server/web-01", params={"time_range": "1d"}).json()
        assert srv["server_name"] == "web-01" and srv["points"] > 100 and srv["stats"]["cpu_pct"]["max"] > 30
        assert c.get("/historical/server/nobody").status_code == 404


def test_csv_exports(hub, fed):
    with client(hub) as c:
        r = c.get("/historical/export/environment", params={"time_range": "8h", "server_name": "web-01"})
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
        assert r.headers["content-disposition"].startswith('attachment; filename="qdash-environment-8h-')
        rows = list(csv.DictReader(io.StringIO(r.text)))
        want = fed[(fed.server == "web-01") & (fed.time >= pd.Timestamp.now(tz="UTC") - pd.Timedelta(hours=8))]
        assert abs(len(rows) - len(want)) <= 1 and {r["server"] for r in rows} == {"web-01"}
        got = {pd.Timestamp(r["time"]): float(r["cpu_pct"]) for r in rows}
        w = want.iloc[-1]
        assert got[w.time] == pytest.approx(w.cpu_pct)
        r = c.get("/historical/export/environment", params={"time_range": "1w", "every": "1h"})
        df = pd.read_csv(io.StringIO(r.text))
        assert set(df.server) == set(fed.server) and 28 * 6 <= len(df) <= 32 * 6
        r = c.get("/historical/export/alerts", params={"time_range": "1M"})
        assert r.status_code == 200 and r.text.splitlines()[0].startswith("id,server_name,profile,peak_level")
        assert 'filename="qdash-alerts-1M-' in r.headers["content-disposition"]


@pytest.mark.parametrize("path", ROUTES)
def test_bad_time_range_is_422_listing_the_ranges(hub, path):
    with client(hub) as c:
        r = c.get(path, params={"time_range": "2d"})
        assert r.status_code == 422 and r.json()["detail"] == "time_range='2d': expected one of 30m, 1h, 8h, 1d, 1w, 1M"
        assert c.get(path, params={"time_rnage": "1d"}).status_code == 422


def test_admin_trigger_training_gets_its_data_from_the_monitor(tmp_path):
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__DRIFT__RETRAIN_WINDOW": "2d", "QDASH__MODEL__ENCODER_LENGTH": "12",
           "QDASH__MODEL__HORIZON": "6", "QDASH__JOBS__WORKERS": "1", "QDASH__LIMITS__FEED_DATA": "100000/minute"}
    sim = FleetSimulator(3, seed=8)
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    frame = sim.frame(now - pd.Timedelta(hours=12), now, "5min")
    with HubProcess(env, data_dir=tmp_path) as h, client(h) as c:
        recs = [{"measurement": "vm", "server": r.server, "profile": r.profile, "time": r.time.isoformat(),
                 **{f: float(getattr(r, f)) for f in FIELDS}} for r in frame.itertuples()]
        assert c.post("/feed/data", json=recs).status_code == 200
        r = c.post("/admin/trigger-training", params={"epochs": 1})
        assert r.status_code == 200, r.text
        job = c.get(f"/api/jobs/{r.json()['job_id']}").json()
        assert (job["task"], job["job_type"], job["params"]["max_epochs"]) == ("retrain", "training", 1)
        assert job["params"]["data_path"].startswith(str(tmp_path / "drift"))
        assert c.post("/admin/trigger-training").status_code in (200, 409)   # 409 while the first is still running
