"""Who may do what (issue 20 items 5 and 19, issue 16 item 8): named viewer and admin keys through a live hub, a keys file
refused at start, and the dashboard's sign-in in Chromium when it listens beyond loopback."""
import subprocess
import sys

import httpx
import pytest

from qdash.testing import HubProcess

WALL, ALICE = "wall-viewer-key-0123456789", "alice-admin-key-0123456789"
KEYS = f"# name role key\nwall viewer {WALL}\nalice admin {ALICE}\n"
CALIBRATION = {"algorithm": "VQE", "mode": "Explore", "params": {"max_iter": 5}, "trials": 2, "seed": 1}


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("access")
    (d / "keys").write_text(KEYS)
    env = {"QDASH__AUTH__KEYS_FILE": str(d / "keys"), "QDASH__COLLECT__SOURCES": "simulator",
           "QDASH__COLLECT__SIMULATOR_SERVERS": "3", "QDASH__JOBS__WORKERS": "1", "QDASH__LIMITS__DEFAULT": "100000/minute",
           "QDASH__MODEL__DIR": str(d / "models")}
    with HubProcess(env, data_dir=d) as h:
        yield h


def call(hub, method, path, key, **kw):
    return httpx.request(method, hub.url + path, headers={"X-API-Key": key}, timeout=30, **kw)


ADMIN_CALLS = [("POST", "/api/control/start_calibration", {"json": CALIBRATION}),
               ("POST", "/api/tasks", {"json": {"task": "benchmark", "params": {"size": 8, "repeats": 1}}}),
               ("DELETE", "/api/tasks/some-job", {}),
               ("POST", "/api/telemetry/stop", {}), ("POST", "/api/telemetry/start", {}),
               ("POST", "/admin/trigger-training", {}), ("POST", "/admin/reload-model", {}), ("GET", "/admin/models", {}),
               ("GET", "/admin/training-status", {}),
               ("POST", "/alerts/silence", {"json": {"server": "web-01", "duration": "5min"}}),
               ("POST", "/alerts/some-alert/ack", {}), ("POST", "/feed/data", {"json": [{"server": "x", "cpu_pct": 1}]})]


def test_whoami_names_the_key(hub):
    assert call(hub, "GET", "/api/whoami", WALL).json() == {"user": "wall", "role": "viewer"}
    assert call(hub, "GET", "/api/whoami", ALICE).json() == {"user": "alice", "role": "admin"}
    assert call(hub, "GET", "/api/whoami", hub.api_key).json() == {"user": "admin", "role": "admin"}   # the hub's key: admin
    assert call(hub, "GET", "/api/whoami", WALL + "x").status_code == 401


def test_a_viewer_reads_and_is_refused_every_action(hub):
    for path in ("/api/jobs", "/api/metrics", "/api/telemetry/status", "/api/status", "/telemetry"):
        assert call(hub, "GET", path, WALL).status_code == 200, path
    jobs_before = len(call(hub, "GET", "/api/jobs", WALL).json())
    for method, path, kw in ADMIN_CALLS:
        r = call(hub, method, path, WALL, **kw)
        assert r.status_code == 403, (method, path, r.status_code, r.text)
        body = r.json()
        assert (body["error"], body["needs"]) == ("forbidden", "admin") and "the key of wall has the viewer role" in body["detail"]
    assert call(hub, "GET", "/api/telemetry/status", WALL).json()["running"] is True       # the stop was not done
    assert len(call(hub, "GET", "/api/jobs", WALL).json()) == jobs_before                   # nor any start
    assert call(hub, "GET", "/admin/models", ALICE).status_code == 200                      # an admin key may


def test_actions_record_the_keys_name(hub):
    r = call(hub, "POST", "/api/control/start_calibration", ALICE, json=CALIBRATION)
    assert r.status_code == 200, r.text
    assert call(hub, "GET", f"/api/jobs/{r.json()['job_id']}", WALL).json()["submitted_by"] == "alice"
    r = call(hub, "POST", "/api/tasks", ALICE, json={"task": "benchmark", "params": {"size": 8, "repeats": 1}})
    assert r.status_code == 201 and r.json()["submitted_by"] == "alice"
    # a named key cannot record someone else; the hub's shared key may say who acts through it
    r = call(hub, "POST", "/alerts/silence", ALICE, json={"server": "web-01", "duration": "5min", "by": "mallory"})
    assert r.status_code == 200 and r.json()["by"] == "alice", r.text
    r = call(hub, "POST", "/alerts/silence", hub.api_key, json={"server": "web-02", "duration": "5min", "by": "ops-script"})
    assert r.json()["by"] == "ops-script"
    r = call(hub, "POST", "/api/control/start_calibration", hub.api_key, json=CALIBRATION)
    assert call(hub, "GET", f"/api/jobs/{r.json()['job_id']}", WALL).json()["submitted_by"] == "admin"


def test_openapi_marks_the_admin_routes(hub):
    spec = call(hub, "GET", "/docs/openapi.json", WALL).json()
    ops = {(m.upper(), p): op for p, item in spec["paths"].items() for m, op in item.items()}
    for method, path, _ in ADMIN_CALLS:
        path = path.replace("some-job", "{task_id}").replace("some-alert", "{alert_id}")
        assert "403" in ops[(method, path)]["responses"], (method, path)
    assert "403" not in ops[("GET", "/api/jobs")]["responses"]
    assert ops[("GET", "/api/whoami")]["responses"]["200"]


def test_a_malformed_keys_file_stops_the_hub_with_one_line(tmp_path):
    (tmp_path / "keys").write_text(f"wall viewer {WALL}\n{ALICE} admin alice\n")   # line 2: key and name swapped
    env = HubProcess({"QDASH__AUTH__KEYS_FILE": str(tmp_path / "keys")}, data_dir=tmp_path).env
    p = subprocess.run([sys.executable, "-c", "import sys; from qdash.cli import main; sys.exit(main(['serve']))"],
                       env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "keys_file" in lines[0] and "line 2" in lines[0], p.stderr
    assert ALICE not in p.stderr + p.stdout                                                 # never the key
    assert not (tmp_path / "qdash.duckdb").exists()                                            # refused before the store opened
