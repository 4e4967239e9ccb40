"Cascade routes of a live hub, fed over HTTP the way seed 004's daemon is fed."
import httpx
import pandas as pd
import pytest

from qdash.testing import HubProcess
from qdash.collect.simulate import FleetSimulator


@pytest.fixture(scope="module")
def hub():
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__LIMITS__FEED_DATA": "100000/minute", "QDASH__LIMITS__DEFAULT": "100000/minute",
           "QDASH__LIMITS__CASCADE_STATUS": "100000/minute", "QDASH__LIMITS__CASCADE_HEALTH": "100000/minute"}
    with HubProcess(env) as h:
        yield h


def test_fed_cascade_is_detected_with_its_leader(hub):
    H = {"X-API-Key": hub.api_key}
    sim = FleetSimulator(20, seed=7)
    t0 = pd.Timestamp("2025-03-04 09:00", tz="UTC")
    inc = sim.inject("cascade", server=sim.servers.server[0], start=t0 + pd.Timedelta(minutes=50), duration="1h", lag="1min")
    frames = sim.frame(t0, t0 + pd.Timedelta(minutes=60), step="15s")
    fields = ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct"]
    with httpx.Client(base_url=hub.url, headers=H, timeout=30) as c:
        for t, batch in frames.groupby("time"):
            recs = [{"server": r.server, "time": t.isoformat(), **{f: float(getattr(r, f)) for f in fields}} for r in batch.itertuples()]
            r = c.post("/feed/data", json=recs)
            assert r.status_code == 200, r.text
        st = c.get("/cascade/status").json()
        health = c.get("/cascade/health").json()
    assert st["tracking"]["servers"] == 20 and st["event_count"] >= 1
    ev = st["recent_events"][0]
    assert ev["leader"] == inc.servers[0] and set(ev["affected_servers"]) <= set(inc.servers)
    assert health["total_servers"] == 20 and health["status"] in ("healthy", "degraded", "warning", "critical")
    assert health["cascade_risk"] in ("low", "medium", "high")


def test_cascade_routes_need_a_key_and_are_rate_limited(tmp_path):
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__LIMITS__CASCADE_HEALTH": "2/minute"}
    with HubProcess(env, data_dir=tmp_path) as h:
        assert httpx.get(h.url + "/cascade/health").status_code == 401
        codes = [httpx.get(h.url + "/cascade/health", headers={"X-API-Key": h.api_key}).status_code for _ in range(3)]
        assert codes == [200, 200, 429]


def test_fed_contention_names_its_host(hub):
    "VMs fed with their host and vCPU delay: a noisy neighbour's host leads the cascade /cascade/status serves, with its cause."
    H = {"X-API-Key": hub.api_key}
    sim = FleetSimulator(20, seed=8)
    t0 = pd.Timestamp("2025-03-05 09:00", tz="UTC")
    inc = sim.inject_contention("hv-03", start=t0 + pd.Timedelta(minutes=50), duration="1h", seed=2)
    frames = sim.frame(t0, t0 + pd.Timedelta(minutes=56), step="15s")
    fields = ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct", "vcpu_delay_pct"]
    with httpx.Client(base_url=hub.url, headers=H, timeout=30) as c:
        before = c.get("/cascade/status").json()["event_count"]
        for t, batch in frames.groupby("time"):
            recs = [{"server": r.server, "host": r.host, "time": t.isoformat(), **{f: float(getattr(r, f)) for f in fields}}
                    for r in batch.itertuples()]
            r = c.post("/feed/data", json=recs)
            assert r.status_code == 200, r.text
        st = c.get("/cascade/status").json()
    new = st["recent_events"][:st["event_count"] - before]      # the buffer's jump from the last test's day may open one first
    at = lambda e: pd.Timestamp(e["timestamp"])
    assert not [e for e in new if t0 + pd.Timedelta(minutes=30) <= at(e) < t0 + pd.Timedelta(minutes=50)]   # quiet before it
    late = [e for e in new if at(e) >= t0 + pd.Timedelta(minutes=50)]
    assert len(late) == 1, late
    ev = late[0]
    assert (ev["leader"], ev["leader_kind"]) == ("hv-03", "host"), ev
    assert ev["cause"].startswith("noisy neighbour on hv-03") and "vCPU delay" in ev["cause"]
    assert set(inc.servers) <= set(ev["affected_servers"]) <= set(sim.servers[sim.servers.host == "hv-03"].server)


def test_fed_with_hosts_a_cascade_is_raised_before_its_third_server_moves(hub):
    "VMs fed with their host: two of one host moving together, each calm before, open the event; the rest join it."
    H = {"X-API-Key": hub.api_key}
    sim = FleetSimulator(20, seed=7)
    t0 = pd.Timestamp("2025-03-09 09:00", tz="UTC")                        # days after the other tests' data: every server calm
    inc = sim.inject("cascade", server=sim.servers.server[0], start=t0 + pd.Timedelta(minutes=50), duration="1h", lag="1min")
    frames = sim.frame(t0, t0 + pd.Timedelta(minutes=56), step="15s")
    fields = ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct"]
    with httpx.Client(base_url=hub.url, headers=H, timeout=30) as c:
        before = c.get("/cascade/status").json()["event_count"]
        for t, batch in frames.groupby("time"):
            recs = [{"server": r.server, "host": r.host, "time": t.isoformat(), **{f: float(getattr(r, f)) for f in fields}}
                    for r in batch.itertuples()]
            r = c.post("/feed/data", json=recs)
            assert r.status_code == 200, r.text
        st = c.get("/cascade/status").json()
    new = st["recent_events"][:st["event_count"] - before]
    at = lambda e: pd.Timestamp(e["timestamp"])
    late = [e for e in new if at(e) >= t0 + pd.Timedelta(minutes=30)]
    assert len(late) == 1, late
    ev = late[0]
    assert at(ev) <= pd.Timestamp(inc.starts[2], unit="s", tz="UTC")       # opened by the time the third server starts
    assert (ev["leader"], ev["leader_kind"]) == (inc.servers[0], "server")
    assert set(inc.servers[:3]) <= set(ev["affected_servers"]) <= set(inc.servers)


def feed(c, frames, fields, host=False):
    for t, batch in frames.groupby("time"):
        recs = [{"server": r.server, **({"host": r.host} if host else {}), "time": t.isoformat(), **{f: float(getattr(r, f)) for f in fields}}
                for r in batch.itertuples()]
        r = c.post("/feed/data", json=recs)
        assert r.status_code == 200, r.text


def test_fed_cascade_stays_active_while_it_lasts_and_resolves_after(hub):
    "Issue #18: a 60-minute cascade is active 10 and 30 minutes in, with its leader; resolved once its servers are back; one event."
    H = {"X-API-Key": hub.api_key}
    sim = FleetSimulator(20, seed=7)
    t0 = pd.Timestamp("2025-03-12 09:00", tz="UTC")                        # after the other tests' days
    onset = t0 + pd.Timedelta(minutes=40)
    inc = sim.inject("cascade", server=sim.servers.server[0], start=onset, duration="1h", lag="1min")
    fields = ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct"]
    part = lambda a, b: sim.frame(onset + pd.Timedelta(minutes=a), onset + pd.Timedelta(minutes=b) - pd.Timedelta(seconds=15), step="15s")
    seen = {}
    with httpx.Client(base_url=hub.url, headers=H, timeout=30) as c:
        feed(c, part(-40, 0), fields)
        quiet = c.get("/cascade/status").json()                            # a quiet fleet: nothing active
        before = quiet["event_count"]
        for a, b in ((0, 10), (10, 30), (30, 72)):
            feed(c, part(a, b), fields)
            seen[b] = c.get("/cascade/status").json()
        health = c.get("/cascade/health").json()
    assert quiet["current_status"]["cascade_detected"] is False and quiet["current_status"].get("active_cascade") is None
    for mins in (10, 30):
        cur = seen[mins]["current_status"]
        assert cur["cascade_detected"] is True, (mins, cur)
        act = cur["active_cascade"]
        assert act["status"] == "active" and act["leader"] == inc.servers[0], (mins, act)
        assert set(inc.servers[:3]) <= set(act["still_affected"]) <= set(act["affected_servers"]) <= set(inc.servers)
        assert act["duration_s"] >= (mins - 5) * 60 and cur["correlation_score"] > 0.7   # it began when it was detected
        assert cur["servers_with_anomalies"] >= 3
    a10, a30 = seen[10]["current_status"]["active_cascade"], seen[30]["current_status"]["active_cascade"]
    assert a10["id"] == a30["id"] and a10["started_at"] == a30["started_at"] and a30["duration_s"] - a10["duration_s"] == 20 * 60
    cur = seen[72]["current_status"]
    assert cur["cascade_detected"] is False and cur["active_cascade"] is None, cur
    done = cur["last_resolved"]
    assert done["id"] == seen[30]["current_status"]["active_cascade"]["id"] and done["status"] == "resolved"
    ended = onset + pd.Timedelta(hours=1)
    assert ended <= pd.Timestamp(done["resolved_at"]) <= ended + pd.Timedelta(minutes=6), done
    assert seen[72]["event_count"] == before + 1                              # the servers' return is not a second cascade
    ev = seen[72]["recent_events"][0]
    assert ev["id"] == done["id"] and ev["status"] == "resolved" and ev["resolved_at"] == done["resolved_at"]
    assert health["cascade_risk"] == "low"                                   # the correlation of the incident is not held past it
