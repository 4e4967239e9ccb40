"The hub's forecasting routes against a real model: train tiny -> register -> serve -> reload, over HTTP."
import json
import shutil
import time

import httpx
import pytest

from qdash.config import load_settings
from qdash.testing import HubProcess
from hubhttp import SHIPPED, get, post
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

MODEL_ENV = {"QDASH__MODEL__ENCODER_LENGTH": "24", "QDASH__MODEL__HORIZON": "6", "QDASH__MODEL__MIN_HISTORY": "24",
             "QDASH__MODEL__STEP": "5min", "QDASH__MODEL__PREDICT_EVERY": "2s"}


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    "A registry with one tiny TFT trained on two simulated days."
    from qdash.model.data import load_fleet
    from qdash.model.train import fit_tft
    d = tmp_path_factory.mktemp("models")
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"},
                                            "model": {"dir": str(d), "encoder_length": 24, "horizon": 6, "min_history": 24}})
    store = open_store(s)
    FleetSimulator(6, seed=1).backfill(store, days=2)
    card = fit_tft(load_fleet(store), s, max_epochs=1, hidden_size=4, limit_train_batches=2, limit_val_batches=1,
                   name="tiny", targets=["cpu_pct", "mem_pct"])
    store.close()
    assert card["name"] == "tiny"
    return d


@pytest.fixture(scope="module")
def hub(models):
    env = {**MODEL_ENV, "QDASH__MODEL__DIR": str(models), "QDASH__COLLECT__SOURCES": "simulator",
           "QDASH__COLLECT__SIMULATOR_SERVERS": "6", "QDASH__LIMITS__DEFAULT": "100000/minute",
           "QDASH__LIMITS__PREDICTIONS_CURRENT": "100000/minute", "QDASH__LIMITS__ALERTS_ACTIVE": "100000/minute"}
    with HubProcess(env) as h:
        yield h


def test_predictions_for_every_server(hub):
    r = get(hub, "/predictions/current")
    assert r.status_code == 200
    body = r.json()
    assert set(body) >= {"predictions", "summary", "alerts", "timestamp"} and body["model"]["name"] == "tiny"
    preds = body["predictions"]
    assert len(preds) == 6 and all(p["status"] == "ok" for p in preds.values()), preds
    p = next(iter(preds.values()))
    assert len(p["forecast"]["cpu_pct"]) == 6 and len(p["forecast"]["timestamps"]) == 6
    assert 0 <= p["risk_score"] <= 100 and p["alert"]["level"] in ("critical", "warning", "degraded", "healthy")
    assert body["summary"]["total_servers"] == 6 and 0 <= body["summary"]["fleet_health"] <= 100
    a = get(hub, "/alerts/active").json()
    assert set(a) == {"timestamp", "count", "alerts"} and a["count"] == len(a["alerts"])


def test_admin_models_and_reload(hub, models):
    r = get(hub, "/admin/models").json()
    assert r["active"] == "tiny" and r["models"][0]["name"] == "tiny" and r["models"][0]["valid"]
    ok = post(hub, "/admin/reload-model", params={"model_path": "tiny"})
    assert ok.status_code == 200 and ok.json()["model"]["name"] == "tiny"
    assert post(hub, "/admin/reload-model", params={"model_path": "nope"}).status_code == 404
    # a corrupt copy is refused with the reason, and the serving model stays
    bad = models / "broken"
    shutil.copytree(models / "tiny", bad)
    card = json.loads((bad / "card.json").read_text())
    (bad / "card.json").write_text(json.dumps({**card, "name": "broken"}))
    (bad / "model.ckpt").write_bytes(b"not a checkpoint")
    r = post(hub, "/admin/reload-model", params={"model_path": "broken"})
    assert 400 <= r.status_code < 500, r.text
    assert "corrupt" in r.json()["detail"], r.json()
    assert get(hub, "/predictions/current").json()["model"]["name"] == "tiny"
    shutil.rmtree(bad)



class _Shell:
    "Unpickling this runs a shell command: what a crafted checkpoint did to the hub before the fix."
    def __init__(self, marker): self.marker = marker
    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


@pytest.mark.parametrize("where", ["outside", "inside"])
def test_reload_refuses_code_execution(hub, models, tmp_path, where):
    "Issue 20 item 1: a crafted checkpoint with a valid card and checksum, outside and inside the registry."
    import torch
    from qdash.model.registry import _sha256
    d = tmp_path / "evil" if where == "outside" else models / "evil"
    d.mkdir()
    marker = tmp_path / "pwned"
    torch.save({"state_dict": {}, "hyper_parameters": {"x": _Shell(marker)}}, d / "model.ckpt")
    card = json.loads((models / "tiny" / "card.json").read_text())
    (d / "card.json").write_text(json.dumps({**card, "name": "evil", "sha256": _sha256(d / "model.ckpt")}))
    try:
        r = post(hub, "/admin/reload-model", params={"model_path": str(d) if where == "outside" else "evil"})
        assert r.status_code == (404 if where == "outside" else 422), r.text   # outside: not a model of the registry, unread
        assert not marker.exists(), "the checkpoint's code ran"
        assert "refused" in r.json()["detail"] and "model" in r.json()["detail"], r.json()
        assert get(hub, "/predictions/current").json()["model"]["name"] == "tiny"
    finally:
        shutil.rmtree(d)


@pytest.mark.parametrize("path", ["/etc", "/", "../../etc", "models/../../etc", "/nonexistent/dir", "sub/dir/x", "a\\..\\b"])
def test_reload_refuses_paths_outside_the_registry(hub, path):
    "Every path outside [model] dir is refused alike: the answer does not tell what exists on disk."
    r = post(hub, "/admin/reload-model", params={"model_path": path})
    assert r.status_code in (404, 422), r.text
    detail = r.json()["detail"]
    assert "card.json" not in detail and "cannot be read" not in detail, detail
    assert get(hub, "/predictions/current").json()["model"]["name"] == "tiny"


def test_training_status_and_stats(hub):
    st = get(hub, "/admin/training-status").json()
    assert st["training"] is False
    stats = get(hub, "/admin/training-stats").json()
    assert stats["serving_model"] == "tiny" and stats["inference_cycle"] >= 1




def _wait_status(hub, until, timeout=180.0) -> dict:
    "GET /status until `until(body)` holds (or `timeout` seconds pass); the last body."
    end = time.monotonic() + timeout
    while True:
        body = httpx.get(hub.url + "/status", timeout=30).json()
        if until(body) or time.monotonic() > end: return body
        time.sleep(0.5)


@pytest.mark.parametrize("shipped", [True, False], ids=["shipped-model", "empty-model-dir"])
def test_status_tells_the_truth_through_a_live_hub(tmp_path, shipped):
    "/status and /api/status say what the hub serves: the shipped model after its first cycle, or no model at all."
    models = tmp_path / "models"
    models.mkdir()
    if shipped: shutil.copytree(SHIPPED, models / SHIPPED.name)
    env = {"QDASH__MODEL__DIR": str(models), "QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "6",
           "QDASH__MODEL__PREDICT_EVERY": "2s"}
    (tmp_path / "hub").mkdir()
    with HubProcess(env, data_dir=tmp_path / "hub") as hub:
        if shipped:
            st = _wait_status(hub, lambda b: b["last_prediction"] is not None)
            assert st["model_loaded"] is True and st["model_name"] == "tft-fleet45", st
            assert st["last_prediction"] is not None and st["servers_forecast"] >= 1, st
        else:
            st = _wait_status(hub, lambda b: b["collecting"] and b["servers_tracked"] > 0)
            assert st["collecting"] and st["servers_tracked"] > 0, st          # the hub runs; it just has no model
            assert st["model_loaded"] is False and st["model_name"] is None, st
        api = get(hub, "/api/status").json()
        assert api["backend_health"]["model"] is shipped, api
        assert api["backend_health"]["store"] is True, api
