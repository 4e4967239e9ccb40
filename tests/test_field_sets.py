"A model per field set through a live hub (#17): libvirt VMs (CPU, memory) get the two-target model, a server with all five targets the five-target one."
import shutil
import time
from pathlib import Path

import pandas as pd
import pytest

from qdash.config import load_settings
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store
from qdash.testing import HubProcess
from hubhttp import NO_LIMITS, get

MODELS = Path(__file__).resolve().parent.parent / "models"          # both shipped models, ACTIVE naming the two-target one
URI = f"test://{(Path(__file__).parent / 'fixtures' / 'fleet.xml').resolve()}"   # libvirt's test driver: web-01 is one of its VMs
EXTRA = ("swap_pct", "iowait_pct", "load1")


def wait_for(cond, timeout=240.0, every=0.5):
    end, got = time.monotonic() + timeout, None
    while time.monotonic() < end:
        got = cond()
        if got: return got
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s; last: {got!r}")


def both_forecast(hub):
    "The payload once the libvirt VM web-01 and the five-field host-01 both have an `ok` full-history forecast."
    body = get(hub, "/predictions/current").json()
    p = body.get("predictions") or {}
    ok = all((p.get(s) or {}).get("status") == "ok" and (p.get(s) or {}).get("history") == "full" for s in ("web-01", "host-01"))
    return body if ok else None


@pytest.fixture
def hub(tmp_path, request):
    "A hub collecting the libvirt test fleet, over a store with two days of web-01 (CPU and memory, as a VM reports) and host-01 (all five)."
    models = tmp_path / "models"
    shutil.copytree(MODELS, models)                                  # a hub may write ACTIVE: never in the repo's models/
    s = load_settings(environ={}).updated({"store": {"path": str(tmp_path / "qdash.duckdb")}})
    end = pd.Timestamp.now(tz="UTC").floor("5min")
    fr = FleetSimulator(2, seed=5).frame(end - pd.Timedelta("2D"), end - pd.Timedelta("5min"), "5min")
    a, b = fr.server.unique()
    store = open_store(s)
    store.write("vm", fr[fr.server == a].drop(columns=list(EXTRA)).assign(server="web-01", host="hv"))
    store.write("vm", fr[fr.server == b].assign(server="host-01", host="hv"))
    store.close()
    env = {"QDASH__MODEL__DIR": str(models), "QDASH__COLLECT__SOURCES": "libvirt", "QDASH__COLLECT__LIBVIRT_URI": URI,
           "QDASH__MODEL__PREDICT_EVERY": "2s", "QDASH__MODEL__WORKER": request.param, "QDASH__SERVER__LOG_LEVEL": "info", **NO_LIMITS}
    with HubProcess(env, data_dir=tmp_path) as h:
        yield h


@pytest.mark.parametrize("hub", ["true", "false"], indirect=True, ids=["worker", "in-hub"])
def test_each_server_is_forecast_by_the_model_for_its_fields(hub):
    body = wait_for(lambda: both_forecast(hub))
    vm, host = body["predictions"]["web-01"], body["predictions"]["host-01"]
    assert vm["model"] == "tft-fleet45" and host["model"] == "tft-fleet45-full"
    assert {"cpu_pct", "mem_pct"} <= set(vm["forecast"]) and not set(EXTRA) & set(vm["forecast"])   # a VM has no swap to forecast
    assert all(vm["forecast_source"][k] != "trend" for k in ("cpu_pct", "mem_pct"))
    assert set(EXTRA) <= set(host["forecast"]) and len(host["forecast"]["load1"]) == 96
    assert all(host["forecast_source"][k] != "trend" for k in (*EXTRA, "cpu_pct", "mem_pct")), host["forecast_source"]   # from the model
    assert body["model"]["name"] == "tft-fleet45"
    assert [(m["name"], m["targets"]) for m in body["model"]["serving"]] == [
        ("tft-fleet45", ["cpu_pct", "mem_pct"]), ("tft-fleet45-full", ["cpu_pct", "mem_pct", *EXTRA])]
    st = get(hub, "/status").json()
    assert st["model_loaded"] and st["model_name"] == "tft-fleet45" and st["collecting"]
    assert [m["name"] for m in st["models_serving"]] == ["tft-fleet45", "tft-fleet45-full"]
    if st["model_worker"] is not None:                               # [model] worker: both models in the one worker
        assert st["model_worker"]["alive"] and st["model_worker"]["models"] == ["tft-fleet45", "tft-fleet45-full"]
    models = {m["name"]: m for m in get(hub, "/admin/models").json()["models"]}
    assert models["tft-fleet45"]["serving"] and models["tft-fleet45-full"]["serving"] and models["tft-fleet45"]["active"]
    for server, model in (("web-01", "tft-fleet45"), ("host-01", "tft-fleet45-full")):   # each explained by its own model
        r = get(hub, f"/explain/{server}")
        assert r.status_code == 200, r.text
        ex = r.json()
        assert ex["prediction"]["model"] == model and ex["shap"]["top_features"], ex["prediction"]
        assert len({f["feature"].split("[")[0] for f in ex["shap"]["top_features"]} & {"cpu_pct", "mem_pct", *EXTRA}) >= 1
    log = (hub.dir / "hub.log").read_text(errors="replace")                   # and the hub said so when it started
    assert (f"forecasting with 2 models from {hub.dir / 'models'}: tft-fleet45 (cpu_pct, mem_pct; active), "
            "tft-fleet45-full (cpu_pct, mem_pct, swap_pct, iowait_pct, load1)") in log, log[-2000:]


def test_a_hub_without_a_model_says_so_at_start_and_forecasts_from_trends(tmp_path):
    (tmp_path / "empty").mkdir()
    env = {"QDASH__MODEL__DIR": str(tmp_path / "empty"), "QDASH__COLLECT__SOURCES": "libvirt", "QDASH__COLLECT__LIBVIRT_URI": URI,
           "QDASH__MODEL__PREDICT_EVERY": "2s", **NO_LIMITS}
    with HubProcess(env, data_dir=tmp_path / "hub") as h:
        log = (h.dir / "hub.log").read_text(errors="replace")
        assert f"WARNING qdash.serving: no usable model in {tmp_path / 'empty'} — servers are forecast from their trends alone" in log, log[-2000:]
        st = get(h, "/status").json()
        assert st["model_loaded"] is False and st["models_serving"] == [], st
