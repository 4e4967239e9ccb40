"Drift and history at the library level: reference comparisons, PER from snapshots, the check loop, retraining through a real job runner."
import csv, io, time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qdash.config import ConfigError, ValidationError, load_settings
from qdash.bench.drift import shift_frame
from qdash.drift import DriftMonitor, Reference
from qdash.model.registry import ModelRegistry
from qdash.history import export_alerts, export_environment, summary
from qdash.model.alerts import AlertEngine
from qdash.jobs import JobRunner
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

END = pd.Timestamp("2026-01-19", tz="UTC")


@pytest.fixture(scope="module")
def fleet():
    sim = FleetSimulator(12, seed=5)
    return sim, Reference(sim.frame(END - pd.Timedelta(days=7), END, "5min"), window="1D")


def test_calm_day_does_not_drift_and_a_shift_names_its_feature(fleet):
    sim, ref = fleet
    day = sim.frame(END, END + pd.Timedelta(days=1), "5min")
    calm = ref.compare(day)
    assert calm["fds"] < 0.15 and calm["dss"] < 0.2 and calm["anomaly_rate"] < 0.05
    hot = ref.compare(shift_frame(day, END, None, {"mem_pct": ("mul", 1.25)}))
    assert hot["fds"] >= 0.15 and max(hot["features"], key=lambda f: hot["features"][f]["drift"]) == "mem_pct"
    assert hot["anomaly_rate"] > calm["anomaly_rate"]


def test_unknown_threshold_metric_is_a_config_error():
    s = load_settings(environ={"QDASH__DRIFT__THRESHOLDS": "per:0.1, banana:3"}).updated({"store": {"path": ":memory:"}})
    with pytest.raises(ConfigError, match="unknown metric 'banana'"):
        DriftMonitor(open_store(s), s)


def test_per_from_snapshots_and_actuals():
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"}, "drift": {"window": "6h"}})
    st = open_store(s)
    mon = DriftMonitor(st, s)
    fc = type("F", (), {"targets": ["cpu_pct"], "step": 300.0, "name": "f", "card": {}})()
    t0 = pd.Timestamp("2026-01-19T12:00Z")
    q = np.full((12, 1, 7), 50.0)
    ts = [t0 + pd.Timedelta(minutes=5 * (h + 1)) for h in range(12)]
    mon.observe({"a": {"status": "ok", "quantiles": q, "timestamps": ts}}, fc, now=t0)
    st.write("vm", pd.DataFrame({"time": ts, "server": "a", "cpu_pct": 45.0}))
    pe = mon.prediction_error(t0 + pd.Timedelta(hours=2))
    assert pe["points"] == 12 and pe["value"] == pytest.approx(0.05)
    st3 = mon.check(t0 + pd.Timedelta(hours=2))
    assert st3["metrics"]["per"] == pytest.approx(0.05) and st3["metrics"]["dss"] is None   # no reference: half a day needed


def test_history_counts_and_exports():
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"}})
    st = open_store(s)
    eng = AlertEngine(st)
    t0 = pd.Timestamp("2026-01-05T08:00Z")
    for i, x in enumerate([85, 85, 20, 20]):
        eng.update({"db-01": {"risk_score": x, "target": "mem_pct", "message": "m" if x >= 50 else ""}}, t0 + pd.Timedelta(minutes=15 * i))
    sm = summary(st, "1d", s, now=t0 + pd.Timedelta(hours=1))
    assert (sm["total_alerts"], sm["alerts_by_level"]["critical"], sm["avg_resolution_time_minutes"]) == (1, 1, 45.0)
    with pytest.raises(ValidationError, match="expected one of 30m, 1h, 8h, 1d, 1w, 1M"):
        summary(st, "7d", s)
    rows = list(csv.DictReader(io.StringIO("".join(export_alerts(st, "1d", now=t0 + pd.Timedelta(hours=1))))))
    assert [(r["server_name"], r["peak_level"], r["status"]) for r in rows] == [("db-01", "critical", "resolved")]
    FleetSimulator(3, seed=1).backfill(st, days=2, end=t0)
    chunks = export_environment(st, "1d", now=t0, every="10min")
    head = next(chunks)
    assert head.startswith("time,") and "cpu_pct" in head
    n = sum(c.count("\n") for c in chunks)
    assert n == 3 * 144                                                   # 3 servers, a day of 10-minute buckets


def test_auto_retrain_runs_a_training_job_that_registers_a_model(tmp_path, monkeypatch):
    for k, v in {"QDASH__MODEL__DIR": str(tmp_path / "models"), "QDASH__MODEL__ENCODER_LENGTH": "12", "QDASH__MODEL__HORIZON": "6",
                 "QDASH__MODEL__MIN_HISTORY": "12", "QDASH__MODEL__AUTO_RETRAIN": "true", "QDASH__MODEL__DRIFT_PATIENCE": "2",
                 "QDASH__DRIFT__WINDOW": "6h", "QDASH__DRIFT__RETRAIN_WINDOW": "2d", "QDASH__DRIFT__RETRAIN_EPOCHS": "1",
                 "QDASH__JOBS__WORKERS": "1"}.items():
        monkeypatch.setenv(k, v)
    monkeypatch.chdir(tmp_path)                 # the worker reads its settings as the hub would: environment, ./settings.ini
    s = load_settings().updated({"store": {"path": ":memory:"}})
    st = open_store(s)
    sim = FleetSimulator(6, seed=2)
    now = END + pd.Timedelta(hours=12)
    st.write("vm", sim.frame(END - pd.Timedelta(days=1), END, "5min"))
    st.write("vm", shift_frame(sim.frame(END, now, "5min"), END, None, {"cpu_pct": ("add", 30.0), "mem_pct": ("mul", 1.3)}, ramp="5min"))
    runner = JobRunner(st, s).start()
    try:
        mon = DriftMonitor(st, s, runner=runner, registry=ModelRegistry(s.model.dir), retrain_params={"limit_train_batches": 2})
        first = mon.check(now)
        assert first["drift_detected"] and first["consecutive_drift_checks"] == 1 and mon.state["last_job"] is None
        mon.check(now + pd.Timedelta(minutes=5))
        jid = mon.state["last_job"]
        assert jid and mon.report()["auto_retrain"]["total_drift_trainings"] == 1
        job = runner.get(jid)
        assert (job["task"], job["job_type"]) == ("retrain", "training")
        end = time.monotonic() + 150
        while runner.get(jid)["status"] not in ("completed", "failed", "cancelled") and time.monotonic() < end: time.sleep(0.5)
        job = runner.get(jid)
        assert job["status"] == "completed", (job, runner.logs(jid)[-5:])
        assert ModelRegistry(s.model.dir).names() == [job["metrics"]["model"]]
        assert not Path(job["params"]["data_path"]).exists()                             # the exported data is removed
        mon.check(now + pd.Timedelta(minutes=10))
        assert mon.state["total_drift_trainings"] == 1 or runner.get(mon.state["last_job"])["job_type"] == "training"
    finally:
        runner.stop()


def test_a_fresh_demo_hub_does_not_cry_drift(tmp_path):
    "The demo's hub: the simulator's own two backfilled days and the shipped model. Its drift report must not say drift."
    import httpx
    from qdash.testing import HubProcess
    models = tmp_path / "models"
    import shutil
    shutil.copytree(Path(__file__).resolve().parents[1] / "models" / "tft-fleet45", models / "tft-fleet45")
    env = {"QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "12", "QDASH__MODEL__DIR": str(models)}
    with HubProcess(env) as hub:
        H = {"X-API-Key": hub.api_key}
        end = time.monotonic() + 90
        while time.monotonic() < end:   # the first check runs once the backfill is in the store
            st = httpx.get(hub.url + "/drift/status", headers=H, timeout=30).json()
            rep = httpx.get(hub.url + "/drift/report", headers=H, timeout=30).json()
            if st["last_check"] and rep["reference"]: break
            time.sleep(1)
        assert rep["reference"] and "first data" in rep["reference"]["source"], rep["reference"]
        assert st["drift_detected"] is False and rep["needs_retraining"] is False, (st, rep)
        assert rep["overall_health"] != "poor" and not any(f["status"] == "drifting" for f in rep["feature_drift"].values())
        assert any(r.startswith("Input drift not judged yet") for r in rep["recommendations"]), rep["recommendations"]
