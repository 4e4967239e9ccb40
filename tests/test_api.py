"The hub's routes over real sockets (sanic-testing's ReusableClient): success, 401, 404, 413, 422, 429 paths."
import importlib.util

import orjson
import pytest
from sanic_testing.reusable import ReusableClient

from qdash.hub.app import create_app
from qdash.testing import free_port
from qdash.config import load_settings
from qdash.hub.guard import ensure_api_key

HAS_COLLECT = importlib.util.find_spec("qdash.collect.service") is not None

PROTECTED_GETS = ["/api/status", "/api/metrics", "/telemetry", "/workers", "/api/history/metrics",
                  "/api/telemetry/status", "/api/telemetry/vms", "/api/telemetry/config"]


def make_settings(tmp, **limits):
    (tmp / "empty.ini").write_text("")                           # not the working directory's settings.ini
    return load_settings(tmp / "empty.ini", environ={}).updated({
        "store": {"path": str(tmp / "hub.duckdb"), "influx_token": "tok-SECRET-123"},
        "auth": {"api_key_file": str(tmp / "api_key")},
        "collect": {"sources": "simulator", "simulator_servers": 3, "spool_dir": str(tmp / "spool")},
        "limits": {"feed_max_bytes": 4096, "default": "100000/minute", "feed_data": "100000/minute",
                   "auth_failures": "100000/minute", **limits}})   # the 401 tests send many wrong keys (test_guard limits them)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hub")
    s = make_settings(tmp)
    key = ensure_api_key(s)[0]
    app = create_app(s)
    with ReusableClient(app, port=free_port()) as client:
        client.key, client.H = key, {"X-API-Key": key}
        yield client


def test_public_routes(hub):
    for path in ("/health", "/api/health", "/status"):
        _, r = hub.get(path)
        assert r.status == 200, path
    _, r = hub.get("/health")
    assert r.json["service"] == "qdash" and r.json["status"] in ("healthy", "degraded", "unhealthy")
    _, r = hub.get("/status")
    assert {"servers_tracked", "uptime_seconds", "model_loaded"} <= set(r.json)


@pytest.mark.parametrize("path", PROTECTED_GETS)
def test_protected_get(hub, path):
    for headers in ({}, {"X-API-Key": ""}, {"X-API-Key": "wrong"}, {"X-API-Key": hub.key + "x"}):
        _, r = hub.get(path, headers=headers)
        assert r.status == 401 and r.json["error"] == "unauthorized", (path, headers)
        assert hub.key not in r.text
    _, r = hub.get(path, params={"api_key": hub.key})      # the query key is for WebSocket upgrades only
    assert r.status == 401
    _, r = hub.get(path, headers=hub.H)
    assert r.status in ((200,) if HAS_COLLECT or not path.startswith("/api/telemetry/vms") else (503,)), (path, r.text)


def test_post_routes_need_key(hub):
    for path in ("/feed/data", "/api/telemetry/start", "/api/telemetry/stop"):
        _, r = hub.post(path, content=b"[]")
        assert r.status == 401, path


def test_not_found_is_json(hub):
    _, r = hub.get("/no/such/route", headers=hub.H)
    assert r.status == 404 and r.json["error"] == "not_found" and r.json["detail"]
    _, r = hub.get("/telemetry/nobody-here", headers=hub.H)
    assert (r.status, r.json["error"]) == (404, "not_found") and "nobody-here" in r.json["detail"]


def test_status_shapes(hub):
    _, r = hub.get("/api/status", headers=hub.H)
    assert set(r.json["backend_health"]) == {"store", "collector", "executor", "model"}
    assert all(isinstance(v, bool) for v in r.json["backend_health"].values())
    assert {"algorithm", "mode", "psi", "rho", "omega", "last_update"} <= set(r.json)
    _, r = hub.get("/api/metrics", headers=hub.H)
    m = r.json
    for k in ("jobs_active", "jobs_completed", "jobs_failed", "jobs_pending", "queue_length", "http_requests", "http_errors",
              "avg_response_time", "memory_usage", "cpu_usage", "active_connections", "provider_stats", "recent_jobs",
              "system_health", "alerts"):
        assert k in m, k
    assert m["memory_usage"] > 10 and m["http_requests"] >= 0 and m["system_health"] in ("healthy", "degraded", "unhealthy")


def test_metrics_count_requests_and_errors(hub):
    import time
    _, r = hub.get("/api/metrics", headers=hub.H)
    before = r.json
    for _ in range(3): hub.get("/api/status")               # three 401s
    time.sleep(1.1)                                          # the snapshot is rebuilt every update interval
    hub.get("/health")                                       # let the event loop run the snapshot task
    _, r = hub.get("/api/metrics", headers=hub.H)
    after = r.json
    assert after["http_requests"] >= before["http_requests"] + 4
    assert after["http_errors"] >= before["http_errors"] + 3
    assert after["avg_response_time"] > 0


def test_config_is_masked(hub):
    _, r = hub.get("/api/telemetry/config", headers=hub.H)
    assert r.json["store"]["influx_token"] == "***" and "tok-SECRET-123" not in r.text
    assert r.json["collect"]["sources"] == ["simulator"]


def test_feed_roundtrip_keeps_text(hub):
    names = ["<script>alert('x')</script>", "\"><img src=x onerror=alert(1)>", "a & b; DROP TABLE vm;--", "ünïcødé ☃"]
    _, r = hub.post("/feed/data", headers=hub.H, content=orjson.dumps(
        [{"server": n, "time": "2025-01-15T10:00:00Z", "cpu_pct": 10.0 + i, "note": n} for i, n in enumerate(names)]))
    assert r.status == 200 and r.json["accepted"] == 4, r.text
    _, r = hub.get("/telemetry", headers=hub.H)
    for i, n in enumerate(names):
        assert r.json[n]["vm"]["cpu_pct"] == 10.0 + i and r.json[n]["vm"]["note"] == n
    from urllib.parse import quote
    _, r = hub.get("/telemetry/" + quote(names[0], safe=""), headers=hub.H)
    assert r.status == 200 and r.json["vm"]["note"] == names[0]
    _, r = hub.get("/api/history/metrics", params={"measurement": "vm", "server": names[1]}, headers=hub.H)
    assert [x["server"] for x in r.json] == [names[1]]


def test_feed_control_characters_in_names_refused(hub):
    "One rule on both backends (issue 20 item 16): a newline, tab, CR, NUL or a dangling backslash in a name is a 422 naming it."
    for n in ["evil\nserver,x=1 cpu_pct=99", "tab\tname", "cr\rname", "nul\x00name", "backslash\\"]:
        _, r = hub.post("/feed/data", headers=hub.H, content=orjson.dumps([{"server": n, "cpu_pct": 2.0}]))
        assert r.status == 422 and r.json["errors"][0]["reason"].startswith("server "), (n, r.json)
    _, r = hub.get("/telemetry", headers=hub.H)
    assert not any("\n" in k or "\t" in k for k in r.json)


def test_feed_bad_names_refused_whole(hub):
    batch = [{"server": "fine-1", "cpu_pct": 1.0}, {"server": "fine-2", "mem_pct": 3.0, "tag\n": "v"}]
    _, r = hub.post("/feed/data", headers=hub.H, content=orjson.dumps(batch))
    assert r.status == 422 and r.json["error"] == "invalid"
    assert [e["index"] for e in r.json["errors"]] == [1]
    _, r = hub.get("/telemetry/fine-1", headers=hub.H)
    assert r.status == 404                                   # nothing of the batch was written


def test_feed_errors(hub):
    _, r = hub.post("/feed/data", headers=hub.H, content=b"{not json")
    assert (r.status, r.json["error"]) == (400, "bad_request")
    _, r = hub.post("/feed/data", headers=hub.H, content=b"[]")
    assert r.status == 400
    _, r = hub.post("/feed/data", headers=hub.H, content=orjson.dumps([{"server": "a"}, 5, {"server": "b", "x": 1, "time": "soon"}]))
    assert r.status == 422 and [e["index"] for e in r.json["errors"]] == [0, 1, 2]
    _, r = hub.post("/feed/data", headers={**hub.H, "Content-Type": "text/plain"}, content=b"server,server=lp-1 cpu_pct=1\nbroken line")
    assert r.status == 422 and r.json["errors"][0]["index"] == 1


def test_feed_line_protocol(hub):
    body = b"server,server=lp-ok,rack=r1 cpu_pct=42.5,up=true 1736935200000000000\nserver,server=lp-ok cpu_pct=43.5 1736935201000000000\n"
    _, r = hub.post("/feed/data", headers={**hub.H, "Content-Type": "text/plain; charset=utf-8"}, content=body)
    assert r.status == 200 and r.json["written"] >= 2, r.text
    _, r = hub.get("/api/history/metrics", params={"measurement": "server", "server": "lp-ok", "fields": "cpu_pct"}, headers=hub.H)
    assert [x["cpu_pct"] for x in r.json] == [42.5, 43.5]
    assert r.json[0]["time"].startswith("2025-01-15T10:00:00")


def test_feed_too_large_is_413(tmp_path):
    s = make_settings(tmp_path)
    key = ensure_api_key(s)[0]
    big = orjson.dumps([{"server": f"s{i}", "cpu_pct": float(i)} for i in range(400)])
    assert len(big) > 4096
    with ReusableClient(create_app(s), port=free_port()) as c:   # Sanic closes the connection after a 413
        _, r = c.post("/feed/data", headers={"X-API-Key": key}, content=big)
        assert (r.status, r.json["error"]) == (413, "payload_too_large") and "feed_max_bytes" in r.json["detail"]


def test_history_validation(hub):
    hub.post("/feed/data", headers=hub.H, content=orjson.dumps([{"server": "hv", "cpu_pct": 1.0}]))
    _, r = hub.get("/api/history/metrics", params={"limit": "zero"}, headers=hub.H)
    assert r.status == 422 and "limit" in r.json["detail"]
    _, r = hub.get("/api/history/metrics", params={"measurement": "vm", "fields": "no_such_field"}, headers=hub.H)
    assert r.status == 404 and "no_such_field" in r.json["detail"]     # well formed, not there: 404, as the OpenAPI document allows
    _, r = hub.get("/api/history/metrics", params={"start": "not a time"}, headers=hub.H)
    assert r.status == 422


def test_collection_routes(hub):
    if not HAS_COLLECT:
        _, r = hub.post("/api/telemetry/start", headers=hub.H)
        assert r.status == 503 and r.json["error"] == "unavailable"
        return
    _, r = hub.post("/api/telemetry/stop", headers=hub.H)
    assert r.status == 200
    _, r = hub.get("/api/telemetry/status", headers=hub.H)
    assert r.status == 200
    _, r = hub.post("/api/telemetry/start", headers=hub.H)
    assert r.status == 200
    _, r = hub.get("/api/telemetry/vms", headers=hub.H)
    assert r.status == 200 and isinstance(r.json["vms"], list)


def test_docs_are_public(hub):
    # (that the served document equals api/openapi.json is checked against a hub process in test_api_live.py:
    # sanic-ext keeps one specification per process, and this module starts several apps)
    _, r = hub.get("/docs/openapi.json")
    assert r.status == 200
    assert r.json["components"]["securitySchemes"]["api_key"] == {"type": "apiKey", "in": "header", "name": "X-API-Key"}
    _, r = hub.get("/docs")
    assert r.status == 200 and "html" in r.headers["content-type"]


def test_rate_limit_429(tmp_path):
    s = make_settings(tmp_path, default="3/minute", feed_data="2/minute")
    key = ensure_api_key(s)[0]
    with ReusableClient(create_app(s), port=free_port()) as c:
        codes = [c.get("/api/status", headers={"X-API-Key": key})[1].status for _ in range(4)]
        assert codes == [200, 200, 200, 429]
        _, r = c.get("/api/status", headers={"X-API-Key": key})
        assert r.json["error"] == "rate_limited" and 1 <= int(r.headers["retry-after"]) <= 20
        ok = orjson.dumps([{"server": "rl", "cpu_pct": 1.0}])
        codes = [c.post("/feed/data", headers={"X-API-Key": key}, content=ok)[1].status for _ in range(3)]
        assert codes == [200, 200, 429]                        # feed_data has its own, smaller budget
        codes = [c.get("/health")[1].status for _ in range(4)]  # public routes: limited per address
        assert codes == [200, 200, 200, 429]


def test_rate_limit_trusts_forwarded_only_from_proxies(tmp_path):
    s = make_settings(tmp_path, default="1/minute").updated({"server": {"trusted_proxies": "127.0.0.1"}})
    with ReusableClient(create_app(s), port=free_port()) as c:
        # behind a trusted proxy, each forwarded client has its own bucket
        assert [c.get("/health", headers={"X-Forwarded-For": ip})[1].status for ip in ("1.1.1.1", "2.2.2.2", "1.1.1.1")] == [200, 200, 429]
    s = make_settings(tmp_path, default="1/minute")
    with ReusableClient(create_app(s), port=free_port()) as c:
        # without trusted proxies the header is ignored: one bucket for the peer
        assert [c.get("/health", headers={"X-Forwarded-For": ip})[1].status for ip in ("1.1.1.1", "2.2.2.2")] == [200, 429]
