"GET /explain/{server} of a live hub: a tiny model serving a prepared store, explained over HTTP."
import httpx
import pandas as pd
import pytest

from qdash.config import load_settings
from qdash.testing import HubProcess
from hubhttp import get
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

MODEL = {"encoder_length": 24, "horizon": 6, "min_history": 24}
MODEL_ENV = {"QDASH__MODEL__ENCODER_LENGTH": "24", "QDASH__MODEL__HORIZON": "6", "QDASH__MODEL__MIN_HISTORY": "24"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub without collection over a store holding two days of six servers (db-01's CPU ran away 3 h ago) and a young server."
    from qdash.model.data import load_fleet
    from qdash.model.train import fit_tft
    d = tmp_path_factory.mktemp("why")
    s = load_settings(environ={}).updated({"store": {"path": str(d / "qdash.duckdb")}, "model": {"dir": str(d / "models"), **MODEL}})
    end = pd.Timestamp.now(tz="UTC").floor("5min")
    store = open_store(s)
    sim = FleetSimulator(6, seed=2)
    sim.inject("cpu_runaway", "db-01", start=end - pd.Timedelta("3h"), duration="6h")
    sim.backfill(store, days=2, end=end)
    store.write("vm", FleetSimulator(1, seed=9).frame(end - pd.Timedelta("25min"), end, "5min").assign(server="new-01"))
    fit_tft(load_fleet(store), s, max_epochs=1, hidden_size=4, batch_size=16, limit_train_batches=2, limit_val_batches=1,
            name="tiny", targets=["cpu_pct", "mem_pct"])
    store.close()
    env = {**MODEL_ENV, "QDASH__MODEL__DIR": str(d / "models"), "QDASH__COLLECT__SOURCES": "",
           "QDASH__LIMITS__EXPLAIN": "100000/minute", "QDASH__LIMITS__PREDICTIONS_CURRENT": "100000/minute"}
    with HubProcess(env, data_dir=d) as h:
        yield h


def test_explain_body(hub):
    preds = get(hub, "/predictions/current").json()["predictions"]
    r = get(hub, "/explain/db-01")
    assert r.status_code == 200, r.text
    ex = r.json()
    assert set(ex) >= {"server_name", "prediction", "shap", "attention", "counterfactuals"} and ex["server_name"] == "db-01"
    assert ex["prediction"]["risk_score"] == preds["db-01"]["risk_score"]
    assert ex["prediction"]["alert_level"] in ("critical", "warning", "degraded", "healthy")
    tf = ex["shap"]["top_features"]
    assert tf[0]["feature"] == "cpu_pct" and {f["feature"] for f in tf} == {"cpu_pct", "mem_pct"}
    assert all(set(f) >= {"feature", "importance", "stars"} and 0 <= f["importance"] <= 1 and len(f["stars"]) == 5 for f in tf)
    assert ex["shap"]["baseline"] == {"cpu_pct": "typical_day", "mem_pct": "typical_day"}
    att = ex["attention"]
    assert att["focus_periods"] and all(isinstance(p, str) for p in att["focus_periods"]) and att["analysis"].startswith("Model focused on")
    assert len(att["weights"]) == 24
    cf = ex["counterfactuals"]
    assert cf and all(set(c) >= {"scenario", "impact", "recommendation"} for c in cf) and cf[0]["scenario"] == "Cap CPU at 70%"
    assert get(hub, "/explain/db-01").json() == ex          # the same cycle: the cached explanation


def test_explain_errors(hub):
    r = get(hub, "/explain/nope")
    assert (r.status_code, r.json()["error"]) == (404, "not_found")
    r = get(hub, "/explain/new-01")
    assert (r.status_code, r.json()["error"]) == (409, "insufficient_data") and "needs 24" in r.json()["detail"]
    assert httpx.get(hub.url + "/explain/db-01").status_code == 401
