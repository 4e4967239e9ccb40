"The live dashboard in a real browser (Debian's Chromium via Playwright) against a real hub and `qdash dashboard`."
import re

import httpx
import pytest
from pathlib import Path

from qdash.testing import DashboardProcess, launch_chromium
from qdash.testing import HubProcess

playwright = pytest.importorskip("playwright.sync_api")

EVIL = "<img src=x onerror=alert(1)>"
MODELS = Path(__file__).resolve().parents[1] / "models"


@pytest.fixture(scope="module")
def hub():
    env = {"QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "10",
           "QDASH__JOBS__WORKERS": "2", "QDASH__LIMITS__DEFAULT": "100000/minute", "QDASH__SERVER__UPDATE_INTERVAL": "1s",
           # the shipped model forecasts: the hub backfills two simulated days, so every server has its history
           "QDASH__MODEL__DIR": str(MODELS), "QDASH__LIMITS__PREDICTIONS_CURRENT": "100000/minute",
           "QDASH__LIMITS__ALERTS_ACTIVE": "100000/minute", "QDASH__LIMITS__EXPLAIN": "100000/minute"}
    with HubProcess(env) as h:
        yield h


@pytest.fixture(scope="module")
def dash(hub):
    with DashboardProcess(hub) as d:
        yield d


@pytest.fixture(scope="module")
def browser():
    with playwright.sync_playwright() as p:
        b = launch_chromium(p)
        yield b
        b.close()


@pytest.fixture(scope="module")
def page(browser, dash):
    pg = browser.new_page(viewport={"width": 1366, "height": 768})
    pg.dialogs = []
    pg.on("dialog", lambda d: (pg.dialogs.append(d.message), d.dismiss()))
    pg.goto(dash.url)
    pg.locator(".qd-card .qd-val.ready").first.wait_for(timeout=30000)
    yield pg
    pg.close()


def api(hub, path, **kw):
    r = httpx.request(kw.pop("method", "GET"), hub.url + path, headers={"X-API-Key": hub.api_key}, timeout=10, **kw)
    r.raise_for_status()
    return r.json()


def tab(page, name):
    page.locator(".bk-tab", has_text=name).click()


def card(page, key) -> str:
    return page.locator(f'.qd-card[data-key="{key}"]').get_attribute("data-raw")


def test_overview_cards_match_the_hub(page, hub):
    expect = playwright.expect
    for key in ("jobs_active", "jobs_completed", "jobs_failed", "queue_length", "http_requests",
                "avg_response_time", "memory_usage", "cpu_usage"):
        expect(page.locator(f'.qd-card[data-key="{key}"] .qd-val.ready')).to_have_count(1)
    shown = {k: float(card(page, k)) for k in ("jobs_active", "jobs_completed", "jobs_failed", "queue_length", "http_requests")}
    m = api(hub, "/api/metrics")
    for k in ("jobs_active", "jobs_completed", "jobs_failed", "queue_length"):
        assert shown[k] == m[k], k
    assert 0 < shown["http_requests"] <= m["http_requests"]           # the hub counts on: the card is a moment earlier
    raw, text = page.locator('.qd-card[data-key="memory_usage"]').evaluate("e => [e.dataset.raw, e.querySelector('.qd-val').innerText]")
    assert text.replace(",", "").startswith(f"{float(raw):.0f}")      # the number shown is the number the hub sent
    expect(page.locator(".qd-conn")).to_have_attribute("data-state", "live")


LAST_T = """([name, after]) => Bokeh.documents.some(d => { const m = d.get_model_by_name(name);
    return m && m.data.t.length > 0 && m.data.t[m.data.t.length - 1] > after; })"""


def _last_t(page, name):
    return page.evaluate("""name => { for (const d of Bokeh.documents) { const m = d.get_model_by_name(name);
        if (m && m.data.t.length) return m.data.t[m.data.t.length - 1]; } return null; }""", name)


def test_live_charts_receive_points(page):
    tab(page, "Server")
    page.wait_for_function(LAST_T, arg=["server-points", 0], timeout=15000)
    page.wait_for_function(LAST_T, arg=["server-points", _last_t(page, "server-points")], timeout=3000)     # a new point within 3 s
    tab(page, "Overview")
    page.wait_for_function(LAST_T, arg=["overview-resources", 0], timeout=10000)
    page.wait_for_function(LAST_T, arg=["overview-resources", _last_t(page, "overview-resources")], timeout=3000)


BAND = """() => Bokeh.documents.some(d => { const m = d.get_model_by_name("server-forecast");
    return m && m.data.t.length > 0 && m.data.cpu_lo.some(v => Number.isFinite(v)) && m.data.cpu_hi.some(v => Number.isFinite(v)); })"""


def test_server_forecast_and_why(page):
    expect = playwright.expect
    tab(page, "Server")
    expect(page.locator(".qd-forecast")).not_to_have_attribute("data-points", "0", timeout=30000)
    page.wait_for_function(BAND, timeout=10000)                                 # the P10-P90 band has numbers
    why = page.locator('.qd-why[data-state="explained"], .qd-why[data-state="none"]')
    expect(why).to_have_count(1, timeout=30000)
    if why.get_attribute("data-state") == "explained":
        assert why.locator("tr.qd-attr").count() > 0
    else:
        assert "nothing to explain" in why.inner_text()
    expect(page.locator(".qd-server-alerts")).to_have_count(1)


def test_overview_drift_cascades_and_export(page):
    expect = playwright.expect
    tab(page, "Overview")
    expect(page.locator(".qd-drift")).to_have_attribute("data-drift", re.compile("^(ok|drift)$"), timeout=30000)
    assert page.locator('.qd-drift tr[data-metric="dss"]').count() == 1
    expect(page.locator(".qd-cascade")).to_have_attribute("data-events", re.compile(r"^\d+$"), timeout=30000)
    with page.expect_download(timeout=20000) as dl:
        page.locator("button", has_text="alerts CSV").click()
    assert open(dl.value.path(), encoding="utf-8").readline().startswith("id,server_name")


def test_calibration_from_the_control_panel(page, hub):
    expect = playwright.expect
    tab(page, "Calibration")
    for label, value in (("Max iterations", "30"), ("Trials", "2")):
        box = page.locator(".bk-input-group", has_text=label).locator("input").first
        box.fill(value)
        box.press("Enter")
    page.locator("button", has_text="Start calibration").click()
    accepted = page.locator('.qd-ok[data-job]')
    # the feedback moves on as the job does: accepted, then pending/running/completed as the hub reports them
    expect(accepted).to_have_attribute("data-state", re.compile("accepted|pending|running|completed"), timeout=15000)
    job_id = accepted.get_attribute("data-job")
    job = api(hub, f"/api/jobs/{job_id}")
    assert job["job_type"] == "calibration" and job["params"]["params"]["max_iter"] == 30
    expect(page.locator(f'.qd-ok[data-job="{job_id}"]')).to_have_attribute("data-state", "completed", timeout=120000)
    tab(page, "Jobs")
    row = page.locator(f'tr[data-job="{job_id}"]')
    expect(row.locator(".qd-status-cell")).to_have_text("completed", timeout=15000)
    assert api(hub, f"/api/jobs/{job_id}")["status"] == "completed"


def test_server_names_are_text(page, hub):
    expect = playwright.expect
    api(hub, "/feed/data", method="POST", json=[{"server": EVIL, "cpu_pct": 99.9, "mem_pct": 99.9}])
    tab(page, "Overview")
    expect(page.locator(".qd-server", has_text=EVIL).first).to_be_visible(timeout=15000)
    tab(page, "Server")
    picker = page.locator(".bk-input-group", has_text="Server").locator("input").first
    page.wait_for_timeout(1500)                                            # the page's next tick brings the new name
    picker.click()
    picker.fill("")
    picker.press_sequentially("onerror", delay=50)
    expect(page.locator(".bk-menu .bk-active")).to_have_text(EVIL)      # the search's suggestion, as text
    picker.press("Enter")
    expect(page.locator(".qd-status.qd-server")).to_have_text(EVIL, timeout=15000)
    page.wait_for_timeout(1500)
    assert page.locator("img[src='x']").count() == 0
    assert page.dialogs == []


def test_screenshots_of_every_page(browser, dash, tmp_path):
    for theme, size in (("dark", {"width": 1366, "height": 768}), ("default", {"width": 390, "height": 844})):
        pg = browser.new_page(viewport=size)
        pg.goto(dash.url + f"?theme={theme}")
        pg.locator(".qd-card .qd-val.ready").first.wait_for(timeout=30000)
        for name in ("Overview", "Server", "Jobs", "Calibration", "Collector"):
            tab(pg, name)
            pg.wait_for_timeout(1200)
            out = tmp_path / f"{name.lower()}-{theme}-{size['width']}.png"
            pg.screenshot(path=str(out))
            assert out.stat().st_size > 10_000
        if size["width"] < 500:   # a phone: the page does not scroll sideways
            assert pg.evaluate("document.documentElement.scrollWidth") <= size["width"] + 1
        pg.close()


def test_indicator_follows_the_hub(page, hub):
    expect = playwright.expect
    conn = page.locator(".qd-conn")
    expect(conn).to_have_attribute("data-state", "live")
    hub.stop()
    try:
        expect(conn).to_have_attribute("data-state", re.compile("reconnecting|down"), timeout=15000)
        expect(conn).to_have_attribute("data-state", "down", timeout=15000)
    finally:
        hub.start()
    expect(conn).to_have_attribute("data-state", "live", timeout=30000)
