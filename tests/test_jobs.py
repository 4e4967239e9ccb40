"""The job runner across real process boundaries: a local process pool and a real Dask LocalCluster."""
import time

import pytest

from qdash.config import NotFound, ValidationError, load_settings
from qdash.jobs import Conflict, JobRunner, TooBusy, register_task
from qdash.store import open_store


def slow_steps(steps: int = 50, delay: float = 0.05, progress=None, log=None, should_stop=None):
    "A task whose duration the test controls, checking for stop requests between steps."
    done = 0
    for i in range(steps):
        if should_stop():
            break
        time.sleep(delay)
        done += 1
        log(f"step {i}")
        progress(100 * (i + 1) / steps, steps_done=done)
    return {"steps_done": done}


def explode(message: str = "boom"):
    raise RuntimeError(message)


register_task("test_slow", slow_steps, "task")
register_task("test_explode", explode, "task")


def wait_for(pred, timeout=60.0, every=0.05):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = pred()
        if v:
            return v
        time.sleep(every)
    raise AssertionError("condition not reached in time")


@pytest.fixture(scope="module")
def dask_scheduler():
    from distributed import LocalCluster
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, host="127.0.0.1")
    yield cluster.scheduler_address
    cluster.close()


@pytest.fixture(params=["local", "dask"])
def runner(request, tmp_path):
    changes = {"store": {"path": str(tmp_path / "q.duckdb")}, "jobs": {"workers": 2, "heartbeat": "0.5s"}}
    if request.param == "dask":
        changes["jobs"]["dask_scheduler"] = request.getfixturevalue("dask_scheduler")
    settings = load_settings(environ={}).updated(changes)
    store = open_store(settings)
    r = JobRunner(store, settings).start()
    yield r
    r.stop(timeout=10)
    store.close()


def test_submit_progress_logs_complete(runner):
    seen = []
    runner.add_listener(seen.append)
    job = runner.submit("test_slow", {"steps": 5, "delay": 0.01})
    assert job["status"] == "pending" and job["provider"] == runner.provider
    done = wait_for(lambda: (j := runner.get(job["id"]))["status"] in ("completed", "failed") and j)
    assert done["status"] == "completed", done
    assert done["metrics"]["steps_done"] == 5 and done["progress"] == 100.0
    assert done["worker"] and done["started_at"] and done["completed_at"] and done["duration_secs"] >= 0
    assert runner.logs(job["id"]) == [f"step {i}" for i in range(5)]
    statuses = [d["status"] for d in seen if d["id"] == job["id"]]
    assert statuses[0] == "pending" and statuses[-1] == "completed" and "running" in statuses
    # the record survives: a fresh read from the store says the same
    assert runner.store.get_record("job", job["id"])["status"] == "completed"


def test_builtin_benchmark_task(runner):
    job = runner.submit("benchmark", {"size": 64, "repeats": 2})
    done = wait_for(lambda: (j := runner.get(job["id"]))["status"] in ("completed", "failed") and j)
    assert done["status"] == "completed" and done["metrics"]["gflops"] > 0 and done["job_type"] == "benchmark"
    ts = runner.store.query("benchmark")
    assert len(ts) >= 1 and ts["gflops"].iloc[-1] > 0


def test_cancel_running_and_pending(runner):
    running = [runner.submit("test_slow", {"steps": 400, "delay": 0.05}) for _ in range(2)]
    pending = runner.submit("test_slow", {"steps": 400, "delay": 0.05})
    wait_for(lambda: all(runner.get(j["id"])["status"] == "running" for j in running))
    assert runner.get(pending["id"])["status"] == "pending"
    runner.cancel(pending["id"])
    runner.cancel(running[0]["id"])
    for j in (pending, running[0]):
        wait_for(lambda j=j: runner.get(j["id"])["status"] == "cancelled")
    assert runner.get(running[0]["id"])["metrics"].get("steps_done", 0) < 400
    with pytest.raises(Conflict, match="already cancelled"):
        runner.cancel(pending["id"])
    runner.cancel(running[1]["id"])
    wait_for(lambda: runner.get(running[1]["id"])["status"] == "cancelled")


def test_failure_is_recorded_with_traceback(runner):
    job = runner.submit("test_explode", {"message": "kaput"})
    done = wait_for(lambda: (j := runner.get(job["id"]))["status"] in ("completed", "failed") and j)
    assert done["status"] == "failed" and done["error"] == "RuntimeError: kaput"
    assert any("Traceback" in line and "kaput" in line for line in runner.logs(job["id"]))


def test_bad_input(runner):
    with pytest.raises(ValidationError, match="unknown task 'nope'"):
        runner.submit("nope")
    with pytest.raises(ValidationError, match="repeats must be an integer"):
        runner.submit("benchmark", {"repeats": 0})
    with pytest.raises(NotFound):
        runner.get("no-such-job")
    with pytest.raises(ValidationError, match="status must be one of"):
        runner.list(status="done")


def test_workers_are_sampled_and_written(runner):
    job = runner.submit("test_slow", {"steps": 40, "delay": 0.05})
    ws = wait_for(lambda: runner.workers())
    assert all({"id", "cpu_pct", "mem_mb", "running", "finished", "last_heartbeat", "status"} <= set(w) for w in ws)
    wait_for(lambda: runner.get(job["id"])["status"] == "completed")
    wait_for(lambda: len(runner.store.query("worker")) > 0)
    assert runner.worker(ws[0]["id"])["id"] == ws[0]["id"]
    with pytest.raises(NotFound):
        runner.worker("nobody:0")


def test_interrupted_after_restart(tmp_path):
    settings = load_settings(environ={}).updated({"store": {"path": str(tmp_path / "q.duckdb")}, "jobs": {"workers": 1}})
    store = open_store(settings)
    r = JobRunner(store, settings).start()
    job = r.submit("test_slow", {"steps": 400, "delay": 0.05})
    wait_for(lambda: r.get(job["id"])["status"] == "running")
    # the hub dies: its records say "running" and nobody will finish the job
    r._stopping.set()
    r.executor.shutdown(wait=False, cancel_futures=True)
    r.channel.flags[job["id"]] = True
    r._manager.shutdown()
    store.close()
    store = open_store(settings)
    assert store.get_record("job", job["id"])["status"] == "running"
    r2 = JobRunner(store, settings).start()
    try:
        d = r2.get(job["id"])
        assert d["status"] == "interrupted" and "hub stopped" in d["error"]
    finally:
        r2.stop()
        store.close()


def test_too_many_pending_is_429(tmp_path):
    settings = load_settings(environ={}).updated({"store": {"path": ":memory:"}, "jobs": {"workers": 1, "max_pending": 3}})
    store = open_store(settings)
    r = JobRunner(store, settings).start()
    try:
        jobs = [r.submit("test_slow", {"steps": 200, "delay": 0.05}) for _ in range(3)]
        with pytest.raises(TooBusy, match="max_pending"):
            r.submit("test_slow", {"steps": 1})
        for j in jobs:
            r.cancel(j["id"])
    finally:
        r.stop()
        store.close()


def test_calibration_job_feeds_status_and_history(tmp_path):
    from qdash.jobs import calibration_status, metric_history
    settings = load_settings(environ={}).updated({"store": {"path": ":memory:"}, "jobs": {"workers": 1}})
    store = open_store(settings)
    r = JobRunner(store, settings).start()
    try:
        with pytest.raises(ValidationError, match="expected one of VQE, QAOA"):
            r.submit("calibration", {"algorithm": "VQA"})
        job = r.submit("calibration", {"algorithm": "VQE", "mode": "Explore", "params": {"max_iter": 40}, "trials": 2, "seed": 3})
        done = wait_for(lambda: (j := r.get(job["id"]))["status"] in ("completed", "failed") and j, timeout=120)
        assert done["status"] == "completed", r.logs(job["id"])
        assert done["job_type"] == "calibration" and 0 <= done["metrics"]["psi"] <= 1
        st = calibration_status(store)
        assert (st["algorithm"], st["mode"], st["psi"]) == ("VQE", "Explore", done["metrics"]["psi"])
        hist = metric_history(store, "calibration")
        assert len(hist) == 1 and hist[0]["rho"] == done["metrics"]["rho"]
    finally:
        r.stop()
        store.close()
