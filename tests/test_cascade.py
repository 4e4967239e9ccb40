"Cascade detection on simulated fleets: a cascade is found with its leader, a quiet fleet is left alone, bands, records, bad input."
import numpy as np
import pandas as pd
import pytest

from qdash.cascade import CascadeDetector, cascade_risk, health_score, health_status, replay
from qdash.config import ValidationError, load_settings
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

BASE = load_settings(environ={})
T0 = int(pd.Timestamp("2025-03-04 09:00", tz="UTC").timestamp())


def cascade_run(store=None, seed=7, n_servers=20):
    sim = FleetSimulator(n_servers, seed=seed)
    det = CascadeDetector(BASE, store=store)
    onset = T0 + 200 * 15
    inc = sim.inject("cascade", server=sim.servers.server[0], start=onset, duration="1h", lag="1min")
    hist = replay(det, sim, T0, 290)
    return det, inc, hist


def test_detects_simulated_cascade():
    det, inc, hist = cascade_run()
    hits = [j for j, h in enumerate(hist) if h["cascade_detected"]]
    assert hits and 200 <= hits[0] <= 200 + 24          # found within 6 minutes of the onset, not before it
    ev = det.status()["recent_events"][0]
    assert set(ev["affected_servers"]) <= set(inc.servers) and len(ev["affected_servers"]) >= 3
    assert ev["leader"] == inc.servers[0]
    c = hist[hits[0]]["cascades"][0]
    assert c["correlation_score"] > 0.7 and c["severity"] in ("medium", "high", "critical")
    assert set(c) >= {"metric", "affected_servers", "severity"}


def test_quiet_fleet_has_no_cascade():
    det = CascadeDetector(BASE)
    hist = replay(det, FleetSimulator(20, seed=3), T0, 500)
    assert det.event_count == 0 and not any(h["cascade_detected"] for h in hist)
    assert det.health()["status"] == "healthy"


@pytest.mark.parametrize("step", [15, 300])
def test_quiet_fleet_raises_no_cascade_over_a_day(step):
    "A simulated day with daily rhythms, shared host load and ML jobs starting and stopping, but no incident."
    det = CascadeDetector(BASE)
    hist = replay(det, FleetSimulator(45, seed=5), int(pd.Timestamp("2025-03-03", tz="UTC").timestamp()), 86400 // step, step)
    assert det.event_count == 0 and not any(h["active_cascade"] or h["last_resolved"] for h in hist[det.capacity:])
    assert np.mean([h["anomaly_rate"] for h in hist[det.capacity:]]) < 0.05


def test_cascade_found_at_five_minute_steps():
    "At 5-minute steps the whole host group moves within one sample: found, and every member is in the cascade."
    sim = FleetSimulator(45, seed=11)
    det = CascadeDetector(BASE)
    t0 = int(pd.Timestamp("2025-03-03 06:00", tz="UTC").timestamp())
    origin = sim.servers.server[0]
    inc = sim.inject("cascade", server=origin, start=t0 + 150 * 300, duration="3h", lag="1min")
    hist = replay(det, sim, t0, 160, 300)
    assert not any(h["cascade_detected"] for h in hist[:150])
    assert any(h["cascade_detected"] for h in hist[150:])
    ev = det.events[0]
    assert set(ev["affected_servers"]) <= set(inc.servers) and len(ev["affected_servers"]) >= 3


def test_status_and_health_shapes():
    det, _, _ = cascade_run()
    st = det.status()
    assert list(st) == ["current_status", "tracking", "recent_events", "event_count", "thresholds"]
    assert set(st["current_status"]) >= {"cascade_detected", "timestamp", "total_servers", "servers_with_anomalies",
                                         "anomaly_rate", "correlation_score", "cascades"}
    assert st["tracking"] == {"servers": 20, "metrics_tracked": ["cpu_pct", "mem_pct", "iowait_pct", "load1", "swap_pct"],
                              "window_size": 100}
    assert st["thresholds"] == {"correlation": 0.7, "cascade_servers": 3, "anomaly_z_score": 5.0}
    assert set(st["recent_events"][0]) >= {"timestamp", "cascades", "correlation_score", "affected_servers"}
    h = det.health()
    assert list(h) == ["health_score", "status", "correlation_score", "anomaly_rate", "anomalous_servers",
                       "total_servers", "cascade_risk"]
    assert 0 <= h["health_score"] <= 100 and h["status"] == health_status(h["health_score"])


@pytest.mark.parametrize("score,status", [(100, "healthy"), (80, "healthy"), (79.9, "degraded"), (60, "degraded"),
                                          (59.9, "warning"), (40, "warning"), (39.9, "critical"), (0, "critical")])
def test_health_bands(score, status):
    assert health_status(score) == status


@pytest.mark.parametrize("corr,risk", [(0.0, "low"), (0.49, "low"), (0.5, "medium"), (0.7, "medium"), (0.71, "high")])
def test_cascade_risk_bands(corr, risk):
    assert cascade_risk(corr) == risk


def test_health_score_range():
    assert health_score(0, 0, False) == 100
    assert health_score(1, 1, True) == 0
    assert health_status(health_score(0.3, 0.9, True)) == "critical"


def test_events_kept_as_records(tmp_path):
    s = BASE.updated({"store": {"path": str(tmp_path / "q.duckdb")}})
    with open_store(s) as st:
        det, inc, _ = cascade_run(store=st)
        recs = st.list_records("cascade")
        assert len(recs) == det.event_count >= 1
        assert recs[0]["leader"] == inc.servers[0] and st.get_record("cascade", recs[0]["id"]) == recs[0]
    with open_store(s) as st:                                       # kept across a restart
        again = CascadeDetector(BASE, store=st)
        assert again.event_count == len(recs) and again.status()["recent_events"][0]["id"] == recs[0]["id"]
        assert recs[0]["status"] == "active" and again.status()["recent_events"][0]["status"] == "interrupted"   # its end went unseen


def test_frame_and_xarray_input():
    sim = FleetSimulator(6, seed=2)
    df = sim.frame(T0, T0 + 130 * 15, step="15s")
    a, b = CascadeDetector(BASE, window_size=50, span=10), CascadeDetector(BASE, window_size=50, span=10)
    ra = a.update(df)
    ds = df.drop(columns=["host", "uuid", "profile"]).set_index(["server", "time"]).to_xarray()
    rb = b.update(ds)
    assert a.servers == b.servers and ra["total_servers"] == rb["total_servers"] == 6
    assert np.allclose(a.buf, b.buf, equal_nan=True)
    assert a.update(df)["total_servers"] == 6                          # old samples again: ignored
    assert a.buf.shape[-1] == a.capacity


@pytest.mark.parametrize("kw,msg", [({"metrics": ["gpu_pct"]}, "is not a cascade metric"),
                                    ({"window_size": 5}, "window_size=5"),
                                    ({"window_size": 20, "span": 12}, "span=12"),
                                    ({"correlation": 1.5}, "correlation=1.5"),
                                    ({"bogus": 1}, "not a cascade parameter")])
def test_bad_parameters(kw, msg):
    with pytest.raises(ValidationError, match=msg):
        CascadeDetector(BASE, **kw)


def test_bad_data():
    det = CascadeDetector(BASE)
    with pytest.raises(ValidationError, match="no cascade metric"):
        det.update({"disk_rd_bytes_per_s": np.zeros((2, 3))})
    with pytest.raises(ValidationError, match="missing column 'server'"):
        det.update(pd.DataFrame({"time": [pd.Timestamp.now(tz="UTC")], "cpu_pct": [1.0]}))
    with pytest.raises(ValidationError, match="'mem_pct' is not in the data"):
        CascadeDetector(BASE, metrics=["mem_pct"]).update({"cpu_pct": np.zeros((2, 3))})
    with pytest.raises(ValidationError, match="expected a DataFrame"):
        det.update([1, 2, 3])


def test_contention_names_its_host():
    "A noisy neighbour on one hypervisor: its VMs degrade together, and the host, not a VM, leads the cascade."
    sim = FleetSimulator(20, seed=7)
    det = CascadeDetector(BASE)
    onset = T0 + 200 * 15
    inc = sim.inject_contention("hv-02", start=onset, duration="1h", seed=3)
    hist = replay(det, sim, T0, 260)
    assert not any(h["cascade_detected"] for h in hist[:200])
    ev = det.status()["recent_events"][0]
    assert (ev["leader"], ev["leader_kind"]) == ("hv-02", "host") and det.event_count == 1
    assert ev["cause"].startswith("noisy neighbour on hv-02") and f"{len(inc.servers)} VMs degraded" in ev["cause"]
    on_host = set(sim.servers[sim.servers.host == "hv-02"].server)
    assert set(inc.servers) <= set(ev["affected_servers"]) <= on_host
    delay = next(c for c in ev["cascades"] if c["metric"] == "vcpu_delay_pct")
    assert set(delay["affected_servers"]) == set(inc.servers) and delay["leader"] == "hv-02"


def test_quiet_fleet_with_hosts_raises_no_contention():
    "The same hosts, their steal and the VMs' vCPU delay fed for two quiet hours: nothing is named; a VM cascade keeps its VM leader."
    det = CascadeDetector(BASE)
    hist = replay(det, FleetSimulator(20, seed=7), T0, 480)
    assert len(det.hosts) == 20 and len(det.host_names) == 4 and np.isfinite(det.hbuf).all()
    assert det.event_count == 0 and not any(h["cascade_detected"] for h in hist)
    det, inc, _ = cascade_run()
    ev = det.events[0]
    assert (ev["leader"], ev["leader_kind"], ev["cause"]) == (inc.servers[0], "server", None)


def test_three_server_cascade_raised_before_its_third_server_moves():
    "Three VMs of one host, a minute apart at 15 s steps: the pair that moved first is a cascade before the third starts, led by the first."
    sim = FleetSimulator(20, seed=7)
    host = sim.servers.host[0]
    three = sim.servers[sim.servers.host == host].server.tolist()[:3]
    det = CascadeDetector(BASE)
    onset = T0 + 200 * 15
    inc = sim.inject("cascade", server=three[0], servers=three, start=onset, duration="1h", lag="1min")
    hist = replay(det, sim, T0, 260)
    assert not any(h["cascade_detected"] for h in hist[:200])
    first = next(j for j, h in enumerate(hist) if h["cascade_detected"])
    assert onset + 60 < T0 + first * 15 <= inc.starts[2]                   # after the second server starts, by the third's start
    at, i3 = np.array([T0 + first * 15]), sim.servers.server.tolist().index(three[2])
    assert all(sim.values(at)[m][i3, 0] == FleetSimulator(20, seed=7).values(at)[m][i3, 0]
               for m in ("cpu_pct", "iowait_pct", "load1"))                 # the third has not moved yet
    c = hist[first]["cascades"][0]
    assert c["leader"] == three[0] and set(c["affected_servers"]) == set(three[:2])
    assert det.event_count == 1
    ev = det.events[0]
    assert ev["leader"] == three[0] and set(ev["affected_servers"]) == set(three)   # the third joins the same event


def test_early_cascade_needs_one_host_and_calm_servers():
    "The same cascade without hosts, or with its servers already anomalous on every metric in the past two days, waits for the third."
    sim = FleetSimulator(20, seed=7)
    three = sim.servers[sim.servers.host == sim.servers.host[0]].server.tolist()[:3]
    onset = T0 + 200 * 15
    inc = sim.inject("cascade", server=three[0], servers=three, start=onset, duration="1h", lag="1min")
    det = CascadeDetector(BASE)
    hist = replay(det, sim, T0, 260, hosts=False)
    first = next(j for j, h in enumerate(hist) if h["cascade_detected"])
    assert T0 + first * 15 > inc.starts[2] and det.events[0]["leader"] == three[0]
    det = CascadeDetector(BASE)
    replay(det, sim, T0, 190)
    det.loud_at[:] = det.clock_s - 3600                                    # as if each had been anomalous an hour ago
    hist = replay(det, sim, T0 + 190 * 15, 70)
    first = next(j for j, h in enumerate(hist) if h["cascade_detected"])
    assert T0 + (190 + first) * 15 > inc.starts[2]


def test_cascade_stays_active_while_it_lasts_at_five_minute_steps():
    "A 3-hour cascade at 5-minute steps: active from detection to its end with one leader, resolved two samples after, one event."
    sim = FleetSimulator(45, seed=11)
    det = CascadeDetector(BASE)
    t0 = int(pd.Timestamp("2025-03-03 06:00", tz="UTC").timestamp())
    sim.inject("cascade", server=sim.servers.server[0], start=t0 + 150 * 300, duration="3h", lag="1min")
    hist = replay(det, sim, t0, 200, 300)
    first = next(j for j, h in enumerate(hist) if h["cascade_detected"])
    during = hist[first:186]                                               # the cascade lasts samples 150..185
    assert all(h["cascade_detected"] for h in during)
    assert {h["active_cascade"]["id"] for h in during} == {det.events[0]["id"]}
    assert {h["active_cascade"]["leader"] for h in during} == {det.events[0]["leader"]}
    assert len(hist[185]["active_cascade"]["still_affected"]) >= 3 and hist[185]["active_cascade"]["duration_s"] >= 2.5 * 3600
    assert not any(h["cascade_detected"] or h["active_cascade"] for h in hist[190:])
    done = hist[-1]["last_resolved"]
    assert done["id"] == det.events[0]["id"] and t0 + 186 * 300 <= pd.Timestamp(done["resolved_at"]).timestamp() <= t0 + 188 * 300
    assert det.event_count == 1 and det.events[0]["status"] == "resolved" and det.health()["status"] == "healthy"
