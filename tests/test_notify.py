"""Alerts that reach people (issue 16 item 7), through a live hub fed data: a webhook receiver started here gets an alert
once when it fires and once when it resolves, a real Alertmanager (Debian's) takes qdash's v2 posts and lists the alert,
a failing receiver is retried and its failures recorded, and a silenced alert is held back until its silence ends."""
import time

import pandas as pd
import pytest

from qdash.testing import AlertmanagerServer, HookReceiver, HubProcess, need
from hubhttp import fed_hub_env, feed, get, post

need("alertmanager")
RETRIES = 2


@pytest.fixture(scope="module")
def receivers():
    with HookReceiver() as hook, HookReceiver(fail=10**9) as broken, AlertmanagerServer() as am:
        yield hook, broken, am


@pytest.fixture(scope="module")
def hub(receivers, tmp_path_factory):
    hook, broken, am = receivers
    env = {**fed_hub_env(tmp_path_factory.mktemp("models")),
           "QDASH__ALERTS__WEBHOOK_URLS": f"{hook.url}/hook, {broken.url}/broken", "QDASH__ALERTS__ALERTMANAGER_URLS": am.url,
           "QDASH__ALERTS__RESEND_INTERVAL": "2s", "QDASH__ALERTS__NOTIFY_RETRIES": str(RETRIES), "QDASH__ALERTS__NOTIFY_BACKOFF": "50ms"}
    with HubProcess(env) as h:
        yield h


def iso(t: pd.Timestamp) -> str: return t.strftime("%Y-%m-%dT%H:%M:%SZ")


def now() -> pd.Timestamp: return pd.Timestamp.now(tz="UTC").floor("s")


def breach(server: str) -> list[dict]:
    "A day of one server at 60 % memory (5 min steps), then three samples over the 95 % threshold: critical at once."
    t = now()
    day = [{"server_name": server, "timestamp": iso(t - pd.Timedelta(minutes=5 * (290 - i))), "profile": "web", "mem_pct": 60.0,
            "cpu_pct": 20.0} for i in range(290)]
    return day + [{"server_name": server, "timestamp": iso(t - pd.Timedelta(seconds=30 * (2 - i))), "profile": "web", "mem_pct": m,
                   "cpu_pct": 20.0} for i, m in enumerate((97.0, 98.2, 99.5))]


def calm(server: str) -> list[dict]:
    t = pd.Timestamp.now(tz="UTC")
    return [{"server_name": server, "timestamp": (t - pd.Timedelta(seconds=2 - i)).isoformat(), "profile": "web", "mem_pct": 60.0,
             "cpu_pct": 20.0} for i in range(3)]


def until(fn, timeout=60.0, every=0.2):
    "fn()'s first truthy answer; AssertionError after `timeout` seconds."
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        got = fn()
        if got: return got
        time.sleep(every)
    raise AssertionError(f"nothing within {timeout}s")


def alert_of(hub, server, silenced=False):
    body = get(hub, "/alerts/active", params={"include_silenced": "true"} if silenced else None).json()
    return next((a for a in body["alerts"] if a["server_name"] == server and a["kind"] == "risk"), None)


def risk(bodies, server):
    "The webhook bodies about `server`'s risk alerts (a server that stops reporting has a stale alert too)."
    return [b for b in bodies if b["alert"]["server_name"] == server and b["alert"]["kind"] == "risk"]


def events(hook, server):
    return [(b["event"], b["alert"]["id"]) for b in risk(hook.bodies("/hook"), server)]


def held(am, server):
    "What Alertmanager holds of `server`'s risk alerts."
    return [x for x in am.alerts() if x["labels"].get("server") == server and x["labels"]["kind"] == "risk"]


def test_webhook_and_alertmanager_get_the_alert_when_it_fires_and_when_it_resolves(hub, receivers):
    hook, broken, am = receivers
    assert feed(hub, breach("hook-01")).status_code == 200
    a = until(lambda: alert_of(hub, "hook-01"))
    assert a["level"] == "critical"
    assert until(lambda: events(hook, "hook-01")) == [("firing", a["id"])]
    fired = risk(hook.bodies("/hook"), "hook-01")[0]
    assert fired["status"] == "firing" and fired["alert"]["message"] == a["message"] and fired["link"].startswith(hub.url)
    # the real Alertmanager took the v2 post and holds the alert, by its labels
    got = until(lambda: held(am, "hook-01"))
    assert [(x["labels"]["alertname"], x["labels"]["severity"], x["annotations"]["alert_id"], x["status"]["state"]) for x in got] == \
        [("QdashServerAtRisk", "critical", a["id"], "active")]
    assert got[0]["generatorURL"].startswith(hub.url)
    # while it fires, Alertmanager hears of it again every resend_interval (2 s); the webhook does not
    posts = lambda: [n for n in get(hub, "/alerts/notifications", params={"limit": 1000}).json()["notifications"]
                     if n["receiver"] == "alertmanager" and a["id"] in n["alert_ids"] and n["status"] == "sent"]
    until(lambda: len(posts()) >= 2, timeout=20)
    assert events(hook, "hook-01") == [("firing", a["id"])]
    # it calms down: two cycles under 45 and the alert resolves; each receiver hears of it once more
    stop = time.monotonic() + 60
    while alert_of(hub, "hook-01") and time.monotonic() < stop:
        feed(hub, calm("hook-01")); time.sleep(0.5)
    assert alert_of(hub, "hook-01") is None
    assert until(lambda: events(hook, "hook-01")[1:]) == [("resolved", a["id"])]
    until(lambda: not held(am, "hook-01"), timeout=20)
    time.sleep(2.5)                                                  # more cycles, a resend interval: nothing more for it
    assert events(hook, "hook-01") == [("firing", a["id"]), ("resolved", a["id"])]
    resolved = risk(hook.bodies("/hook"), "hook-01")[1]
    assert resolved["status"] == "resolved" and resolved["alert"]["resolved_at"] is not None


def test_failing_receiver_is_retried_and_its_failures_recorded(hub, receivers):
    hook, broken, am = receivers
    assert feed(hub, breach("hook-02")).status_code == 200
    a = until(lambda: alert_of(hub, "hook-02"))
    until(lambda: events(hook, "hook-02"))                          # the good receiver got it
    failed = until(lambda: [n for n in get(hub, "/alerts/notifications", params={"status": "failed"}).json()["notifications"]
                            if a["id"] in n["alert_ids"] and n["receiver"] == "webhook"])
    assert [(n["receiver"], n["url"], n["event"], n["attempts"], n["http_status"], n["error"]) for n in failed] == \
        [("webhook", f"{broken.url}/broken", "firing", 1 + RETRIES, 503, "HTTP 503")]
    body = get(hub, "/alerts/notifications").json()
    counts = {r["url"]: r for r in body["receivers"]}
    assert counts[f"{broken.url}/broken"]["failed"] >= 1 and counts[f"{hook.url}/hook"]["failed"] == 0
    assert broken.requests >= 1 + RETRIES and broken.bodies() == []


def test_silenced_alert_is_not_sent_until_its_silence_ends(hub, receivers):
    hook, broken, am = receivers
    s = post(hub, "/alerts/silence", json={"server": "hook-03", "duration": "1h", "reason": "maintenance"}).json()
    assert feed(hub, breach("hook-03")).status_code == 200
    a = until(lambda: alert_of(hub, "hook-03", silenced=True))
    assert a["silenced"] is True and alert_of(hub, "hook-03") is None
    time.sleep(3)                                                    # three cycles and passes of the notifier
    assert events(hook, "hook-03") == [] and not held(am, "hook-03")
    r = httpx_delete(hub, f"/alerts/silences/{s['id']}?by=ops")
    assert r.status_code == 200 and r.json()["expired_by"] == "ops"
    assert until(lambda: events(hook, "hook-03")) == [("firing", a["id"])]
    until(lambda: held(am, "hook-03"), timeout=20)


def httpx_delete(hub, path):
    import httpx
    return httpx.delete(hub.url + path, headers={"X-API-Key": hub.api_key}, timeout=30)
