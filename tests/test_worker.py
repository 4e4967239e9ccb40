"The model next door: a live hub forecasts and explains through its forecast worker, never importing torch; the worker is replaced and dies with the hub."
import os
import shutil
import signal
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from qdash.config import load_settings
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store
from qdash.testing import HubProcess
from hubhttp import SHIPPED, NO_LIMITS, get, next_cycle


def wait_for(cond, timeout=180.0, every=0.3):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = cond()
        if got: return got
        time.sleep(every)
    raise AssertionError(f"not within {timeout}s")


def libtorch_mapped(pid: int) -> bool:
    "Whether process `pid` has torch's shared library in its memory (what importing torch does)."
    return "libtorch" in Path(f"/proc/{pid}/maps").read_text()


def model_cycle(body) -> bool:
    "A /predictions/current payload with model forecasts: the shipped model named, a full-history server forecast by it (alone or combined)."
    preds = body.get("predictions") or {}
    return (body.get("model") or {}).get("name") == SHIPPED.name and any(
        p.get("history") == "full" and (p.get("forecast_source") or {}).get("cpu_pct") in ("model", "combined") for p in preds.values())


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub without collection over a store holding two days of six servers (db-01's CPU ran away 3 h ago), serving the shipped model."
    d = tmp_path_factory.mktemp("worker")
    shutil.copytree(SHIPPED, d / "models" / SHIPPED.name)
    s = load_settings(environ={}).updated({"store": {"path": str(d / "qdash.duckdb")}})
    end = pd.Timestamp.now(tz="UTC").floor("5min")
    store = open_store(s)
    sim = FleetSimulator(6, seed=2)
    sim.inject("cpu_runaway", "db-01", start=end - pd.Timedelta("3h"), duration="6h")
    sim.backfill(store, days=2, end=end)
    store.close()
    env = {"QDASH__MODEL__DIR": str(d / "models"), "QDASH__COLLECT__SOURCES": "", "QDASH__MODEL__PREDICT_EVERY": "1s", **NO_LIMITS}
    with HubProcess(env, data_dir=d) as h:
        yield h


def test_the_hub_forecasts_and_explains_without_importing_torch(hub):
    body = wait_for(lambda: (b := get(hub, "/predictions/current").json()) and model_cycle(b) and b)
    assert body["predictions"]["db-01"]["risk_score"] > body["predictions"]["web-01"]["risk_score"]   # the runaway ranks first
    ex = get(hub, "/explain/db-01")
    assert ex.status_code == 200, ex.text
    ex = ex.json()
    assert ex["prediction"]["model"] == SHIPPED.name and ex["shap"]["top_features"] and ex["attention"]["weights"]
    assert ex["prediction"].get("model_risk_score", ex["prediction"]["risk_score"]) is not None
    assert not libtorch_mapped(hub.proc.pid)             # the hub has forecast and explained, and has no torch in it
    st = get(hub, "/status").json()
    w = st["model_worker"]
    assert st["model_loaded"] and st["model_name"] == SHIPPED.name and get(hub, "/health").json()["checks"]["model"] is True
    assert w["alive"] and w["model"] == SHIPPED.name and w["pid"] != hub.proc.pid and w["deaths"] == 0
    assert w["pid"] in {p.pid for p in psutil.Process(hub.proc.pid).children(recursive=True)}   # the hub's own family
    assert libtorch_mapped(w["pid"])                     # the model runs next door, with torch


def test_a_worker_killed_is_replaced_on_the_next_cycle(hub):
    w0 = wait_for(lambda: (w := get(hub, "/status").json()["model_worker"]) and w["alive"] and w)
    os.kill(w0["pid"], signal.SIGKILL)
    killed = pd.Timestamp.now(tz="UTC")
    w1 = wait_for(lambda: (w := get(hub, "/status").json()["model_worker"]) and w["alive"] and w["pid"] != w0["pid"] and w)
    assert w1["deaths"] == w0["deaths"] + 1 and w1["restarts"] == w0["restarts"] + 1
    assert (w1["last_death"]["pid"], w1["last_death"]["exitcode"]) == (w0["pid"], -signal.SIGKILL)
    body = next_cycle(hub, killed, until=model_cycle, timeout=180)   # a cycle after the kill, forecast by the new worker
    assert body["model"]["error"] is None
    st = get(hub, "/status").json()
    assert st["model_loaded"] and st["model_worker"]["pid"] == w1["pid"]
    h = get(hub, "/health").json()
    assert h["checks"]["model"] is True and (h["model_worker"]["restarts"], h["model_worker"]["deaths"]) == (w1["restarts"], w1["deaths"])
    assert not libtorch_mapped(hub.proc.pid)


def test_kill9_of_the_hub_leaves_no_worker(hub):
    w = wait_for(lambda: (w := get(hub, "/status").json()["model_worker"]) and w["alive"] and w)
    family = psutil.Process(hub.proc.pid).children(recursive=True)
    assert w["pid"] in {p.pid for p in family}
    hub.proc.send_signal(signal.SIGKILL); hub.proc.wait()
    gone, alive = psutil.wait_procs(family, timeout=15)
    left = [(p.pid, " ".join(p.cmdline())[:80]) for p in alive]
    for p in alive: p.kill()                             # no orphans from a failing run either
    assert not left, left
