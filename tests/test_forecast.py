"Forecasting end to end: train a tiny TFT, register, reload (and refuse a corrupt one), predict. Alerts are in test_alerts.py."
import json, shutil
import numpy as np, pandas as pd, pytest
from qdash.config import load_settings, NotFound
from qdash.store import open_store
from qdash.collect.simulate import FleetSimulator
from qdash.model.data import load_fleet
from qdash.model.registry import ModelRegistry, ModelError
from qdash.model.train import fit_tft, TrainingCancelled
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
    from qdash.hub.http import dumps                  # the payload keeps its paths as arrays; the API writes them as JSON lists
    back = json.loads(dumps(pay))
    assert back["predictions"][sim.servers.server[0]]["forecast"]["mem_pct"] == pytest.approx(list(q["mem_pct"]))


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
