"Forecasting end to end: train a tiny TFT, register, reload (and refuse a corrupt one), predict; alerts' lifecycle."
import json, shutil
import numpy as np, pandas as pd, pytest
from qdash.config import load_settings, NotFound
from qdash.store import open_store
from qdash.collect.simulate import FleetSimulator
from qdash.model.data import load_fleet
from qdash.model.registry import ModelRegistry, ModelError
from qdash.model.train import fit_tft, TrainingCancelled
from qdash.model.alerts import AlertEngine
from qdash.serving import Forecasting

T0 = pd.Timestamp("2026-01-05T00:00Z")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("fc")
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"}, "model": {
        "dir": str(d / "models"), "encoder_length": 12, "horizon": 6, "min_history": 12}})
    st = open_store(s)
    sim = FleetSimulator(6, seed=3)
    sim.inject("memory_leak", server=sim.servers.server[0], start=T0 - pd.Timedelta("3h"), duration="4h")
    sim.backfill(st, days=0.5, end=T0)
    card = fit_tft(st, s, max_epochs=1, hidden_size=4, batch_size=16, limit_train_batches=2,
                   limit_val_batches=1, name="tiny", command="tests/test_forecast.py::env")
    yield s, st, card, sim
    st.close()


def test_train_register_reload_predict(env):
    s, st, card, sim = env
    reg = ModelRegistry(s.model.dir)
    assert [m["name"] for m in reg.list()] == ["tiny"]
    on_disk = json.loads((reg.dir / "tiny" / "card.json").read_text())
    for k in ("created_at", "data", "settings", "validation", "baselines", "command", "sha256"): assert k in on_disk
    assert on_disk["data"]["n_servers"] == 6 and on_disk["command"] == "tests/test_forecast.py::env"
    assert reg.reload()["name"] == "tiny" and reg.current.name == "tiny"
    pay = Forecasting(s, st, reg).run_cycle(now=T0)   # the hub's forecasting cycle, on the registry's serving model
    assert pay["summary"]["total_servers"] == 6 and len(pay["predictions"]) == 6
    p = pay["predictions"][sim.servers.server[0]]
    assert p["status"] == "ok" and 0 <= p["risk_score"] <= 100 and len(p["forecast"]["mem_pct"]) == 6
    q = p["forecast"]
    lo, mid, hi = np.array(q["p10"]["mem_pct"]), np.array(q["mem_pct"]), np.array(q["p90"]["mem_pct"])
    assert (lo <= mid + 1e-6).all() and (mid <= hi + 1e-6).all()
    json.dumps(pay)


def test_corrupt_or_missing_model_refused_old_keeps_serving(env):
    s, st, card, sim = env
    reg = ModelRegistry(s.model.dir)
    reg.reload("tiny")
    bad = reg.dir / "bad"
    shutil.copytree(reg.dir / "tiny", bad)
    c = json.loads((bad / "card.json").read_text()); c["name"] = "bad"; (bad / "card.json").write_text(json.dumps(c))
    (bad / "model.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="checksum"): reg.reload("bad")
    (bad / "model.ckpt").unlink()
    with pytest.raises(ModelError, match="missing"): reg.reload("bad")
    (bad / "card.json").write_text("{")
    with pytest.raises(ModelError, match="not valid JSON"): reg.reload("bad")
    with pytest.raises(NotFound): reg.reload("nothing-here")
    assert reg.current.name == "tiny" and reg.active_name() == "tiny"
    assert {m["name"]: m["valid"] for m in reg.list()} == {"bad": False, "tiny": True}
    shutil.rmtree(bad)


def test_training_can_be_cancelled(env):
    s, st, card, sim = env
    with pytest.raises(TrainingCancelled):
        fit_tft(load_fleet(st), s, max_epochs=1, hidden_size=4, batch_size=16, limit_train_batches=2, limit_val_batches=1,
                name="cancelled", should_stop=lambda: True)
    assert not (ModelRegistry(s.model.dir).dir / "cancelled").exists()


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
