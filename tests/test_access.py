"""Who may do what (issue 20 items 5 and 19, issue 16 item 8): named viewer and admin keys through a live hub, a keys file
refused at start, and the dashboard's sign-in in Chromium when it listens beyond loopback."""
import re
import subprocess
import sys

import httpx
import pytest

from qdash.testing import DashboardProcess, HubProcess, launch_chromium, need

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


# --- the dashboard, listening beyond loopback, in Chromium ---------------------------------------------------------------

@pytest.fixture(scope="module")
def dash(hub):
    with DashboardProcess(hub, address="0.0.0.0") as d:    # [dashboard] auth = auto: a sign-in, as it is not loopback
        yield d


@pytest.fixture(scope="module")
def browser():
    playwright = need("playwright")
    with playwright.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


def signed_in(browser, dash, name, key):
    "A fresh browser context (no cookies) that signed in on the dashboard with `name` and `key`."
    ctx = browser.new_context(viewport={"width": 1366, "height": 768})
    page = ctx.new_page()
    page.goto(dash.url)
    page.fill("#username", name)
    page.fill("#password", key)
    page.click("#login-submit")
    return ctx, page


def start_calibration(page):
    "Open the Calibration page, ask for a short run, click Start; the feedback element."
    page.locator(".bk-tab", has_text="Calibration").click()
    box = page.locator(".bk-input-group", has_text="Max iterations").locator("input").first
    box.fill("10")
    box.press("Enter")
    page.locator("button", has_text="Start calibration").click()
    return page.locator(".qd-ok[data-state]").last


def test_dashboard_beyond_loopback_refuses_a_session_without_credentials(hub, dash, browser):
    expect = need("playwright").expect
    r = httpx.get(dash.url, follow_redirects=False, timeout=10)
    assert r.status_code == 302 and "login" in r.headers["location"], (r.status_code, r.headers)
    ctx = browser.new_context()
    page = ctx.new_page()
    page.goto(dash.url)
    expect(page.locator("form.qd-login")).to_be_visible()
    assert page.locator(".qd-card").count() == 0 and page.locator(".bk-tab").count() == 0
    page.fill("#password", WALL + "x")                                           # a wrong key stays out
    page.click("#login-submit")
    expect(page.locator("#error-message")).to_have_text("unknown name or key")
    page.fill("#username", "alice")                                              # a right key under another's name too
    page.fill("#password", WALL)
    page.click("#login-submit")
    expect(page.locator("#error-message")).to_have_text("unknown name or key")
    assert page.locator(".bk-tab").count() == 0
    ctx.close()


def test_dashboard_acts_with_the_signed_in_key(hub, dash, browser):
    expect = need("playwright").expect
    ctx, page = signed_in(browser, dash, "wall", WALL)
    expect(page.locator(".qd-user")).to_have_attribute("data-role", "viewer", timeout=30000)
    before = len(call(hub, "GET", "/api/jobs", WALL).json())
    refused = start_calibration(page)
    expect(refused).to_have_attribute("data-state", "refused", timeout=15000)
    expect(refused).to_contain_text("needs a key with the admin role; the key of wall has the viewer role")
    assert len(call(hub, "GET", "/api/jobs", WALL).json()) == before             # the hub did nothing
    ctx.close()

    ctx, page = signed_in(browser, dash, "", ALICE)                              # the name may be left out
    expect(page.locator(".qd-user")).to_have_attribute("data-user", "alice", timeout=30000)
    accepted = start_calibration(page)
    expect(accepted).to_have_attribute("data-job", re.compile(".+"), timeout=15000)
    job = call(hub, "GET", f"/api/jobs/{accepted.get_attribute('data-job')}", WALL).json()
    assert (job["job_type"], job["submitted_by"]) == ("calibration", "alice")   # recorded under the user, not the hub key
    ctx.close()


def test_wrong_keys_at_the_sign_in_page_do_not_lock_the_dashboard_out(tmp_path):
    "Sign-ins reach the hub from the dashboard's address: the page must stop asking before the hub's auth_failures locks it out."
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__LIMITS__AUTH_FAILURES": "3/minute", "QDASH__MODEL__DIR": str(tmp_path / "m")}
    with HubProcess(env, data_dir=tmp_path) as hub, DashboardProcess(hub, address="0.0.0.0") as dash:
        with httpx.Client(base_url=dash.url, timeout=15, follow_redirects=False) as c:
            errors = [c.post("login", data={"username": "", "password": f"wrong-{i}"}).headers.get("location", "") for i in range(6)]
        assert all("unknown" in e for e in errors[:2]) and all("too+many" in e for e in errors[2:]), errors
        r = httpx.get(hub.url + "/api/whoami", headers={"X-API-Key": hub.api_key}, timeout=10)   # the dashboard's own key, same address
        assert r.status_code == 200, r.text
