"""Cascades reach people: through a live hub fed a simulated cascade over HTTP, the episode is an alert of kind "cascade" in
/alerts/active (its episode, host, leader and servers) and the webhook gets it firing; when the episode ends the alert
resolves and the webhook gets "resolved" — once each."""
import httpx
import pandas as pd
import pytest

from qdash.collect.simulate import FleetSimulator
from qdash.testing import HookReceiver, HubProcess
from hubhttp import NO_LIMITS, get
from test_fleet import feed as feed_frames
from test_notify import until

FIELDS = ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct"]


@pytest.fixture(scope="module")
def hook():
    with HookReceiver() as h:
        yield h


@pytest.fixture(scope="module")
def hub(hook):
    env = {**NO_LIMITS, "QDASH__COLLECT__SOURCES": "", "QDASH__LIMITS__CASCADE_STATUS": "100000/minute",
           "QDASH__ALERTS__WEBHOOK_URLS": f"{hook.url}/hook"}
    with HubProcess(env) as h:
        yield h


def cascade_alerts(hub):
    return [a for a in get(hub, "/alerts/active").json()["alerts"] if a["kind"] == "cascade"]


def sent(hook):
    "The webhook's (event, alert id) of cascade alerts, oldest first (an escalation, if the episode widens, left out)."
    return [(b["event"], b["alert"]["id"]) for b in hook.bodies("/hook") if b["alert"]["kind"] == "cascade" and b["event"] != "escalated"]


def test_cascade_fires_an_alert_and_resolves_it_with_its_episode(hub, hook):
    sim = FleetSimulator(20, seed=7)
    t0 = pd.Timestamp("2025-03-12 09:00", tz="UTC")
    onset = t0 + pd.Timedelta(minutes=40)
    inc = sim.inject("cascade", server=sim.servers.server[0], start=onset, duration="1h", lag="1min")
    part = lambda a, b: sim.frame(onset + pd.Timedelta(minutes=a), onset + pd.Timedelta(minutes=b) - pd.Timedelta(seconds=15), step="15s")
    host = sim.servers.host[0]
    with httpx.Client(base_url=hub.url, headers={"X-API-Key": hub.api_key}, timeout=60) as c:
        feed_frames(c, part(-40, 0), FIELDS, host=True)
        assert cascade_alerts(hub) == [] and sent(hook) == []                 # a quiet fleet: no cascade alert
        feed_frames(c, part(0, 10), FIELDS, host=True)
        (a,) = until(lambda: cascade_alerts(hub), timeout=120)
        act = c.get("/cascade/status").json()["current_status"]["active_cascade"]
        assert (a["episode_id"], a["started_at"], a["status"]) == (act["id"], act["started_at"], "active")
        assert (a["leader"], a["server_name"], a["host"], a["leader_kind"]) == (inc.servers[0], inc.servers[0], host, "server")
        assert a["servers"][0] == inc.servers[0] and 2 <= len(a["servers"]) and set(a["servers"]) <= set(inc.servers)
        assert a["message"].startswith(f"Cascade on {host}: {inc.servers[0]} then {a['servers'][1]}") and a["level"] in ("warning", "critical")
        assert until(lambda: sent(hook), timeout=120) == [("firing", a["id"])]
        fired = next(b for b in hook.bodies("/hook") if b["alert"]["kind"] == "cascade")
        assert fired["status"] == "firing" and fired["link"].startswith(hub.url)
        keys = ("id", "episode_id", "leader", "host", "started_at")                # its servers may have grown since it fired
        assert {k: fired["alert"][k] for k in keys} == {k: a[k] for k in keys}
        feed_frames(c, part(10, 30), FIELDS, host=True)                        # still going: the same alert, not sent again
        assert [x["id"] for x in cascade_alerts(hub)] == [a["id"]] and sent(hook) == [("firing", a["id"])]
        feed_frames(c, part(30, 72), FIELDS, host=True)                        # the hour is over, the servers come back
        until(lambda: not cascade_alerts(hub), timeout=120)
        done = c.get("/cascade/status").json()["current_status"]["last_resolved"]
    assert done["id"] == a["episode_id"] and done["status"] == "resolved"
    assert until(lambda: sent(hook)[1:], timeout=120) == [("resolved", a["id"])]
    resolved = [b for b in hook.bodies("/hook") if b["alert"]["kind"] == "cascade"][-1]
    assert resolved["status"] == "resolved" and resolved["alert"]["resolved_at"] is not None
    r = resolved["alert"]
    assert (r["id"], r["episode_id"], r["resolution"], r["ended_at"]) == (a["id"], a["episode_id"], "recovered", done["resolved_at"])
