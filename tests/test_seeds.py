"""The seeds' clients against live hubs, over HTTP and WebSocket: seed 000's `/api/health` and calibration telemetry, seed
001's host application pushing jobs, counters, alerts and health, and seed 003's worker telemetry."""
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from websockets.asyncio.client import connect

from qdash.client import Client, HubError
from qdash.testing import HubProcess

ROOT = Path(__file__).resolve().parent.parent
BASE = {"QDASH__COLLECT__SOURCES": "", "QDASH__JOBS__WORKERS": "2", "QDASH__JOBS__HEARTBEAT": "500ms",
        "QDASH__SERVER__UPDATE_INTERVAL": "200ms", "QDASH__LIMITS__DEFAULT": "100000/minute"}


@pytest.fixture(scope="module")
def hub():
    "A healthy hub: it serves the shipped model, has no collection sources (so no collector to fail) and a pool of 2."
    with HubProcess({**BASE, "QDASH__MODEL__DIR": str(ROOT / "models"), "QDASH__MODEL__PREDICT_EVERY": "1s"}) as h:
        wait_for(lambda: httpx.get(h.url + "/status").json()["model_loaded"], 120, "the hub never loaded its model")
        yield h


@pytest.fixture(scope="module")
def plain(tmp_path_factory):
    "A hub with no model (so degraded) that has run no job."
    with HubProcess({**BASE, "QDASH__MODEL__DIR": str(tmp_path_factory.mktemp("no-models"))}) as h:
        yield h


@pytest.fixture()
def client(hub):
    with Client(hub.url, hub.api_key) as c:
        yield c


def wait_for(fn, timeout=20.0, what="condition"):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got: return got
        time.sleep(0.1)
    raise AssertionError(f"{what}: not within {timeout}s")


def H(hub): return {"X-API-Key": hub.api_key}


def names(r, field):
    "A 422 whose one-line detail starts with the field at fault (`psi=1.5: expected ...`, `rho: required ...`)."
    return r.status_code == 422 and r.json()["detail"].startswith((f"{field}:", f"{field}=", f"{field} "))


# seed 000: GET /api/health

def test_api_health_is_ok_when_healthy(hub):
    r = httpx.get(hub.url + "/api/health")        # no key: seed 000's clients send none
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["health"], body["service"]) == ("ok", "healthy", "qdash"), body
    assert httpx.get(hub.url + "/health").json()["status"] == "healthy"   # seeds 003/004 keep their word


def test_api_health_names_the_trouble_when_not_healthy(plain):
    body = httpx.get(plain.url + "/api/health").json()
    assert (body["status"], body["health"]) == ("degraded", "degraded"), body
    assert "model" in body["unhealthy_parts"]


# seed 000: update_telemetry(psi, rho, omega, algorithm)

def test_calibration_telemetry_shows_in_history_status_and_jobs(hub, client):
    got = client.report_calibration(0.91, 0.88, 0.75, "vqe", mode="Exploit")
    assert (got["algorithm"], got["mode"], got["job_id"]) == ("VQE", "Exploit", None)
    last = client.calibration_history()[-1]
    assert (last["psi"], last["rho"], last["omega"], last["algorithm"], last["timestamp"]) == (0.91, 0.88, 0.75, "VQE", got["timestamp"])
    st = client.api_status()                       # read straight after the push: no stale cached status
    assert (st["psi"], st["rho"], st["omega"], st["algorithm"], st["mode"], st["last_update"]) == \
        (0.91, 0.88, 0.75, "VQE", "Exploit", got["timestamp"])

    run = client.report_calibration(0.5, 0.6, 0.7, "QAOA", job_id="scs-run-1", status="running")
    assert run["job_id"] == "scs-run-1" and client.job("scs-run-1")["status"] == "running"
    client.report_calibration(0.95, 0.9, 0.8, "QAOA", job_id="scs-run-1")
    job = client.job("scs-run-1")
    assert (job["status"], job["origin"], job["job_type"], job["progress"]) == ("completed", "external", "calibration", 100.0)
    assert (job["metrics"]["psi"], job["metrics"]["algorithm"]) == (0.95, "QAOA")
    assert "scs-run-1" in [j["id"] for j in client.jobs(job_type="calibration")]
    hist = client.calibration_history(limit=2)
    assert [(h["psi"], h.get("job")) for h in hist] == [(0.5, "scs-run-1"), (0.95, "scs-run-1")]


@pytest.mark.parametrize("body,field,detail", [
    ({"psi": 1.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQE"}, "psi", "a number from 0 to 1"),
    ({"psi": 0.5, "omega": 0.5, "algorithm": "VQE"}, "rho", "required"),
    ({"psi": 0.5, "rho": True, "omega": 0.5, "algorithm": "VQE"}, "rho", "a number from 0 to 1"),
    ({"psi": 0.5, "rho": 0.5, "omega": -0.1, "algorithm": "VQE"}, "omega", "a number from 0 to 1"),
    ({"psi": 0.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQA"}, "algorithm", "expected one of VQE, QAOA"),
    ({"psi": 0.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQE", "mode": "Sleep"}, "mode", "expected one of Explore, Exploit"),
    ({"psi": 0.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQE", "energy": 1}, "energy", "unknown field"),
    ({"psi": 0.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQE", "job_id": ""}, "job_id", "1 to 128"),
    ({"psi": 0.5, "rho": 0.5, "omega": 0.5, "algorithm": "VQE", "status": "done"}, "status", "one of"),
])
def test_bad_calibration_telemetry_is_422_naming_the_field(hub, body, field, detail):
    r = httpx.post(hub.url + "/api/calibration/telemetry", json=body, headers=H(hub))
    assert r.status_code == 422 and names(r, field) and detail in r.json()["detail"], r.text


def test_calibration_telemetry_refuses_nan_and_the_hubs_own_jobs(hub, client):
    r = httpx.post(hub.url + "/api/calibration/telemetry", headers={**H(hub), "Content-Type": "application/json"},
                   content=b'{"psi": NaN, "rho": 0.5, "omega": 0.5, "algorithm": "VQE"}')
    assert r.status_code == 422 and names(r, "psi"), r.text
    own = client.submit_task("benchmark", {"size": 16, "repeats": 1})
    with pytest.raises(HubError) as e:
        client.report_calibration(0.5, 0.5, 0.5, "VQE", job_id=own["id"])
    assert e.value.status_code == 409 and "the hub's own" in e.value.detail
    assert httpx.post(hub.url + "/api/calibration/telemetry", json={}).status_code == 401


# seed 001: AddJob, UpdateJobMetrics, AddAlert, SetSystemHealth

COUNTERS = ("jobs_active", "jobs_completed", "jobs_failed", "jobs_pending", "queue_length")


def test_host_jobs_listed_beside_the_runners(client):
    own = client.wait_job(client.submit_task("benchmark", {"size": 16, "repeats": 1})["id"], timeout=60)
    assert own["status"] == "completed"
    ext = client.add_job({"id": "job-12345", "name": "export-vm-prod-01", "status": "running", "progress": 75,
                          "provider": "aws", "vm_name": "prod-web-01", "start_time": "2025-01-15T10:30:00Z"})
    assert (ext["origin"], ext["vm_name"], ext["started_at"]) == ("external", "prod-web-01", "2025-01-15T10:30:00.000Z")
    ids = [j["id"] for j in client.jobs()]
    assert "job-12345" in ids and own["id"] in ids
    with pytest.raises(HubError) as e:
        client.cancel_task("job-12345")                # the hub does not run it, so it cannot stop it
    assert e.value.status_code == 409 and "another system" in e.value.detail
    client.add_job({"id": "job-12345", "name": "export-vm-prod-01", "status": "completed", "progress": 100, "provider": "aws"})
    j = client.job("job-12345")
    assert (j["status"], j["progress"], j["vm_name"], j["started_at"]) == ("completed", 100.0, "prod-web-01", "2025-01-15T10:30:00.000Z")
    assert j["completed_at"] and j["duration_secs"] > 0
    m = client.metrics()
    assert m["provider_stats"].get("aws") == 1 and "job-12345" in [x["id"] for x in m["recent_jobs"]]
    with pytest.raises(HubError) as e:
        client.add_job({"name": "x", "status": "running"}, job_id=own["id"])
    assert e.value.status_code == 409


@pytest.mark.parametrize("body,field", [({"status": "exploded"}, "status"), ({"status": "running", "progress": 150}, "progress"),
                                        ({"status": "running", "colour": "red"}, "colour"), ({"name": "no status"}, "status"),
                                        ({"status": "running", "start_time": "soon"}, "start_time"),
                                        ({"status": "running", "start_time": "2025-01-15"}, "start_time")])   # RFC 3339: a time too
def test_bad_host_jobs_are_422(hub, body, field):
    r = httpx.put(hub.url + "/api/jobs/job-bad", json=body, headers=H(hub))
    assert r.status_code == 422 and names(r, field), r.text


def test_host_job_whose_id_is_not_the_paths_is_409(hub):
    "RFC 9110 9.3.4: a PUT whose body contradicts its target is a conflict (the body is well formed; a schema cannot see the path)."
    r = httpx.put(hub.url + "/api/jobs/job-bad", json={"status": "running", "id": "other"}, headers=H(hub))
    assert r.status_code == 409 and r.json()["detail"].startswith("id='other': differs from the job id in the path"), r.text


def test_host_counters_add_to_the_runners_and_are_replaced(hub, client):
    wait_for(lambda: all(j["status"] in ("completed", "failed", "cancelled") for j in client.jobs(limit=100)
                         if j["origin"] == "hub"), 60, "the runner's jobs never finished")
    before = client.metrics()
    pushed = dict(zip(COUNTERS, (5, 123, 2, 8, 15)))
    assert client.update_job_metrics(**{k.removeprefix("jobs_"): v for k, v in pushed.items()})["jobs_active"] == 5
    m = client.metrics()
    assert {k: m[k] - before[k] for k in COUNTERS} == pushed
    client.update_job_metrics(active=1, completed=124, failed=2, pending=0, queue_length=0)
    m = client.metrics()
    assert (m["jobs_active"] - before["jobs_active"], m["jobs_completed"] - before["jobs_completed"]) == (1, 124)
    assert m["reported"]["jobs"]["jobs_completed"] == 124
    r = httpx.put(hub.url + "/api/metrics/jobs", json={**pushed, "jobs_failed": -1}, headers=H(hub))
    assert r.status_code == 422 and names(r, "jobs_failed")
    r = httpx.put(hub.url + "/api/metrics/jobs", json={k: v for k, v in pushed.items() if k != "queue_length"}, headers=H(hub))
    assert r.status_code == 422 and names(r, "queue_length")


def test_host_alerts_and_health_reach_metrics_and_ws(hub, client):
    assert client.metrics()["system_health"] == "healthy"
    client.add_alert("info", "Backup completed successfully")
    crit = client.add_alert("critical", "Service degraded")
    assert crit["level"] == "critical"
    client.set_system_health("degraded")
    m = client.metrics()
    mine = {a["message"]: a["level"] for a in m["alerts"] if a["source"] == "host"}
    assert mine["Backup completed successfully"] == "healthy" and mine["Service degraded"] == "critical"   # info -> healthy
    assert m["system_health"] == "degraded" and m["reported"]["system_health"]["system_health"] == "degraded"

    async def snapshot():
        async with connect(f"ws://127.0.0.1:{hub.port}/ws", additional_headers=H(hub)) as ws:
            async with asyncio.timeout(10):
                async for msg in ws:
                    snap = json.loads(msg)
                    if snap["system_health"] == "unhealthy": return snap
    client.set_system_health("unhealthy")
    snap = asyncio.run(snapshot())
    assert "Service degraded" in [a["message"] for a in snap["alerts"]]
    client.set_system_health("healthy")
    assert client.metrics()["system_health"] == "healthy"        # the hub itself is healthy: the host's word is not overruled
    for path, body, field in [("/api/metrics/alerts", {"level": "fatal", "message": "x"}, "level"),
                              ("/api/metrics/alerts", {"level": "info", "message": ""}, "message"),
                              ("/api/metrics/health", {"system_health": "broken"}, "system_health")]:
        r = httpx.request("POST" if path.endswith("alerts") else "PUT", hub.url + path, json=body, headers=H(hub))
        assert r.status_code == 422 and names(r, field), r.text


# seed 003: workers known from the start; their heartbeats flow like any telemetry

def test_workers_known_from_start_and_streamed(plain):
    with Client(plain.url, plain.api_key) as c:
        assert c.jobs() == []
        workers = wait_for(lambda: c.job_workers(), 20, "no worker listed before the first job")
        assert len(workers) == 2 and all(w["status"] == "idle" for w in workers)
        wid = workers[0]["id"]
        listed = wait_for(lambda: c.workers(), 20, "GET /workers stayed empty")
        assert wid in [w["worker_id"] for w in listed]
        latest = wait_for(lambda: _telemetry(c, wid), 20, f"GET /telemetry/{wid} never answered")
        assert latest["worker"]["mem_mb"] > 0 and latest["worker"]["host"]
        assert wid in c.telemetry()

        async def first():
            async with connect(f"ws://127.0.0.1:{plain.port}/ws/telemetry/{quote(wid, safe='')}",
                               additional_headers=H(plain)) as ws:
                async with asyncio.timeout(10):
                    return json.loads(await ws.recv())
        msg = asyncio.run(first())
        assert msg["measurement"] == "worker" and {r["worker"] for r in msg["records"]} == {wid}
        assert len(c.worker_metrics(wid)) >= 1



def test_dask_workers_known_from_start_each_under_the_id_its_jobs_name(tmp_path):
    "Seed 003 on a Dask cluster: both workers listed before the first job, each under the `host:pid` its jobs report."
    import os, socket
    from distributed import Client as DaskClient, LocalCluster
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1") as cluster:
        with DaskClient(cluster) as dc:
            expect = {f"{socket.gethostname()}:{pid}" for pid in dc.run(os.getpid).values()}
        env = {**BASE, "QDASH__MODEL__DIR": str(tmp_path / "no-models"), "QDASH__JOBS__DASK_SCHEDULER": cluster.scheduler_address}
        with HubProcess(env, data_dir=tmp_path / "hub") as h, Client(h.url, h.api_key) as c:
            assert c.jobs() == []
            ws = wait_for(lambda: ws if len(ws := c.job_workers()) == 2 else None, 30, f"the cluster's workers {expect} not listed")
            assert {w["id"] for w in ws} == expect and {(w["provider"], w["status"]) for w in ws} == {("dask", "idle")}, ws
            job = c.wait_job(c.submit_task("benchmark", {"size": 16, "repeats": 1})["id"], timeout=60)
            assert job["status"] == "completed" and job["worker"] in expect, job
            wait_for(lambda: c.job_worker(job["worker"])["finished"] == 1, 20, "the worker that ran the job never counted it")
            wait_for(lambda: expect <= set(c.telemetry()), 20, "a worker's heartbeats never reached /telemetry")   # through the writer

def _telemetry(c, wid):
    try: return c.telemetry(wid)
    except Exception: return None


# seed 001: jobs_pending (recorded, not started) and queue_length (waiting in the runner's queue) measured apart

def _own(m, k):
    "A counter of /api/metrics less what a host application pushed (seed 001's UpdateJobMetrics adds to the runner's)."
    return m[k] - ((m.get("reported") or {}).get("jobs") or {}).get(k, 0)


def test_queue_length_is_the_runners_queue_and_pending_its_records(client):
    wait_for(lambda: all(j["status"] in ("completed", "failed", "cancelled") for j in client.jobs(limit=100)
                         if j["origin"] == "hub"), 60, "earlier jobs never finished")
    blockers = [client.submit_task("benchmark", {"size": 256, "repeats": 100_000})["id"] for _ in range(2)]   # both workers busy
    waiting = [client.submit_task("benchmark", {"size": 16, "repeats": 1})["id"] for _ in range(3)]
    try:
        wait_for(lambda: all(client.job(j)["status"] == "running" for j in blockers), 60, "the blockers never ran")

        def figures():
            m = client.metrics()
            pending = [j["id"] for j in client.jobs(limit=100, status="pending") if j["origin"] == "hub"]
            return m, pending
        m, pending = wait_for(lambda: (lambda m, p: (m, p) if _own(m, "jobs_active") == 2 and _own(m, "queue_length") == 3
                                       and _own(m, "jobs_pending") == len(p) else None)(*figures()),   # one snapshot, as after() reads it
                              20, "the metrics never showed 2 running and 3 queued")
        assert sorted(pending) == sorted(waiting) and _own(m, "jobs_pending") == 3
        client.cancel_task(waiting[-1])                  # out of the queue at once; its record may stay pending until the pool drops it
        def after():
            m, pending = figures()
            return m if _own(m, "queue_length") == 2 and _own(m, "jobs_pending") == len(pending) else None
        m = wait_for(after, 20, "queue_length did not drop to 2 with jobs_pending matching the records")
        assert _own(m, "jobs_active") == 2
    finally:
        for j in blockers + waiting:
            try: client.cancel_task(j)
            except HubError: pass
    wait_for(lambda: all(client.job(j)["status"] in ("completed", "failed", "cancelled") for j in blockers + waiting), 60,
             "the test's jobs never finished")
