"The job, task, worker and calibration routes over real HTTP and WebSocket, against a hub in its own process."
import asyncio
import concurrent.futures as cf
import json

import httpx
import pytest
from websockets.asyncio.client import connect

from qdash.client import Client, HubError
from qdash.testing import HubProcess


@pytest.fixture(scope="module")
def hub():
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__JOBS__WORKERS": "2", "QDASH__JOBS__HEARTBEAT": "500ms",
           "QDASH__JOBS__MAX_PENDING": "20", "QDASH__SERVER__UPDATE_INTERVAL": "200ms",
           "QDASH__LIMITS__DEFAULT": "100000/minute"}
    with HubProcess(env) as h:
        yield h


@pytest.fixture()
def client(hub):
    with Client(hub.url, hub.api_key) as c:
        yield c


def test_calibration_over_http_and_ws(hub, client):
    async def watch(job_id):
        async with connect(f"ws://127.0.0.1:{hub.port}/ws?api_key={hub.api_key}") as ws:
            seen = []
            async with asyncio.timeout(120):
                async for msg in ws:
                    snap = json.loads(msg)
                    mine = [j for j in snap["recent_jobs"] if j["id"] == job_id]
                    if mine:
                        seen.append(mine[0]["status"])
                        if mine[0]["status"] in ("completed", "failed"):
                            return seen, snap
    started = client.start_calibration("VQE", "Explore", params={"max_iter": 40}, trials=2, seed=5)
    assert started["message"].startswith("Calibration job started") and started["job_id"]
    seen, snap = asyncio.run(watch(started["job_id"]))
    assert seen[-1] == "completed", client.task_logs(started["job_id"])
    assert snap["jobs_completed"] >= 1 and snap["provider_stats"].get("local", 0) >= 1
    job = client.job(started["job_id"])
    st = client.api_status()
    assert (st["algorithm"], st["mode"]) == ("VQE", "Explore")
    assert st["psi"] == job["metrics"]["psi"] and st["backend_health"]["executor"] is True
    hist = client.calibration_history()
    assert hist[-1]["psi"] == job["metrics"]["psi"] and {"timestamp", "psi", "rho", "omega", "algorithm"} <= set(hist[-1])
    assert started["job_id"] in [j["id"] for j in client.jobs(job_type="calibration")]


def test_tasks_logs_cancel_and_workers(client):
    t = client.submit_task("benchmark", {"size": 64, "repeats": 3}, name="bench-64")
    assert (t["name"], t["status"]) == ("bench-64", "pending")
    done = client.wait_job(t["id"], timeout=60)
    assert done["status"] == "completed" and len(client.task_logs(t["id"])) == 3
    with pytest.raises(HubError) as e:
        client.cancel_task(t["id"])
    assert e.value.status_code == 409 and "already completed" in e.value.detail
    long = client.submit_task("benchmark", {"size": 256, "repeats": 100000})
    cancelled = client.cancel_task(long["id"])
    assert cancelled["id"] == long["id"]
    assert client.wait_job(long["id"], timeout=60)["status"] == "cancelled"
    workers = client.job_workers()
    assert workers and all(w["provider"] == "local" for w in workers)
    w = done["worker"]
    assert client.job_worker(w)["id"] == w
    assert t["id"] in [j["id"] for j in client.worker_tasks(w)]
    assert len(client.worker_metrics(w)) >= 1


@pytest.mark.parametrize("path,status", [("/api/jobs/nope", 404), ("/api/tasks/nope", 404), ("/api/tasks/nope/logs", 404),
                                         ("/api/workers/nobody:1", 404), ("/api/workers/nobody:1/tasks", 404),
                                         ("/api/jobs?status=done", 422), ("/api/jobs?limit=0", 422), ("/api/history?limit=x", 422)])
def test_bad_reads(hub, path, status):
    r = httpx.get(hub.url + path, headers={"X-API-Key": hub.api_key})
    assert r.status_code == status and set(r.json()) == {"error", "detail"}


@pytest.mark.parametrize("body,detail", [({"algorithm": "VQA"}, "expected one of VQE, QAOA"),
                                         ({"mode": "Sleep"}, "expected one of Explore, Exploit"),
                                         ({"algo": "VQE"}, "unknown field; allowed: algorithm, mode")])
def test_bad_calibration_requests_are_422(hub, body, detail):
    r = httpx.post(hub.url + "/api/control/start_calibration", json=body, headers={"X-API-Key": hub.api_key})
    assert r.status_code == 422 and detail in r.json()["detail"]


def test_fifty_concurrent_starts_never_500(hub, client):
    def start(_):
        return httpx.post(hub.url + "/api/control/start_calibration", headers={"X-API-Key": hub.api_key}, timeout=30,
                          json={"algorithm": "QAOA", "params": {"max_iter": 5}, "trials": 2, "seed": 1})
    with cf.ThreadPoolExecutor(10) as ex:
        answers = list(ex.map(start, range(50)))
    codes = [r.status_code for r in answers]
    assert set(codes) <= {200, 429}, codes
    ids = [r.json()["job_id"] for r in answers if r.status_code == 200]
    assert len(ids) == len(set(ids)) and ids
    assert all("max_pending" in r.json()["detail"] for r in answers if r.status_code == 429)
    for j in ids:
        try:
            client.cancel_task(j)
        except HubError as e:
            assert e.status_code == 409
