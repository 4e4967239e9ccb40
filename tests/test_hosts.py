"""Issue #19 item 6: many hosts. Three `qdash collect` agents (two simulated fleets with their own prefixes, one
hypervisor host over libvirt), one InfluxDB, one hub that collects nothing itself: it forecasts, alerts on and
explains every server the agents write, from the history InfluxDB holds."""
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pandas as pd
import requests

from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store
from qdash.testing import AgentProcess, HubProcess, InfluxServer, need

FLEET = Path(__file__).parent / "fixtures" / "fleet.xml"          # six libvirt test-driver domains: web-01 ... batch-01
MODELS = Path(__file__).resolve().parent.parent / "models"
DOMAINS = ["web-01", "web-02", "db-01", "db-02", "ml-01", "batch-01"]
FLEET_SERVERS = 4


def wait_for(cond, timeout, every=0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        v = cond()
        if v: return v
        time.sleep(every)
    return cond()


def host_tags(srv):
    r = requests.post(srv.url + "/query", data={"db": srv.database, "q": 'SHOW TAG VALUES FROM "vm" WITH KEY = "host"'})
    return {v[1] for s in r.json()["results"][0].get("series", []) for v in s["values"]}


def past_of_libvirt_host(srv, days=2):
    "Two days of the libvirt host's domains in InfluxDB, as if its agent had run that long (its live points follow)."
    now = pd.Timestamp.now(tz="UTC").floor("5min")
    sim = FleetSimulator(len(DOMAINS), seed=5)
    df = sim.frame(now - pd.Timedelta(days=days), now, "5min")
    df = df.assign(server=df.server.map(dict(zip(sim.servers.server, DOMAINS))), host="hv-c").drop(columns=["uuid", "profile"])
    st = open_store(srv.settings())
    st.write("vm", df)
    st.close()


def test_three_agents_one_influxdb_one_hub_forecasts_alerts_and_explains_every_server(tmp_path):
    need("libvirt"); need("influxd")
    with InfluxServer() as srv:
        past_of_libvirt_host(srv)
        store = {"QDASH__STORE__BACKEND": "influxdb", "QDASH__STORE__INFLUX_URL": srv.url, "QDASH__STORE__INFLUX_DATABASE": srv.database}
        fleet = lambda prefix, seed, leak: {**store, "QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_PREFIX": prefix,
                                            "QDASH__COLLECT__SIMULATOR_SERVERS": str(FLEET_SERVERS), "QDASH__COLLECT__SIMULATOR_SEED": str(seed),
                                            "QDASH__COLLECT__SIMULATOR_LEAK": leak}
        agents = [AgentProcess(fleet("east", 1, "10min"), tmp_path, "east"),   # its web-01 leaks: memory over 95 % 10 min after start
                  AgentProcess(fleet("west", 2, "0s"), tmp_path, "west"),
                  AgentProcess({**store, "QDASH__COLLECT__SOURCES": "libvirt, host", "QDASH__COLLECT__HOST_NAME": "hv-c",
                                "QDASH__COLLECT__LIBVIRT_URI": f"test://{FLEET}"}, tmp_path, "hv-c")]
        hub = HubProcess({**store, "QDASH__COLLECT__SOURCES": "", "QDASH__MODEL__DIR": str(MODELS), "QDASH__MODEL__PREDICT_EVERY": "2s",
                          **{f"QDASH__LIMITS__{k}": "100000/minute" for k in ("DEFAULT", "PREDICTIONS_CURRENT", "ALERTS_ACTIVE", "EXPLAIN")}},
                         data_dir=tmp_path / "hub")
        try:
            with ThreadPoolExecutor(4) as ex:                                     # the four processes start together
                list(ex.map(lambda p: p.start(60), [*agents, hub]))
            t0 = time.monotonic()
            sims = {p: FleetSimulator(FLEET_SERVERS, seed).prefixed(p).servers.server.tolist() for p, seed in (("east", 1), ("west", 2))}
            servers = {*sims["east"], *sims["west"], *DOMAINS}
            assert host_tags(srv) == {"east-hv-01", "west-hv-01", "hv-c"}      # one InfluxDB, three hosts, no name in common
            assert len(servers) == 2 * FLEET_SERVERS + len(DOMAINS)

            h = {"X-API-Key": hub.api_key}
            get = lambda path: httpx.get(hub.url + path, headers=h, timeout=30)
            def all_forecast():
                preds = get("/predictions/current").json()["predictions"]
                return preds if servers <= {s for s, p in preds.items() if p.get("risk_score") is not None} else None
            preds = wait_for(all_forecast, 60)
            assert preds, {s: p.get("status") for s, p in get("/predictions/current").json()["predictions"].items()}
            assert servers == set(preds)                                      # no server but the agents'
            assert all(preds[s]["status"] == "ok" and preds[s].get("stale") is False for s in servers), \
                {s: (preds[s]["status"], preds[s].get("stale")) for s in servers}

            def leak_alert():                                                 # east's leak, from the history InfluxDB holds
                return [a for a in get("/alerts/active").json()["alerts"] if a["server_name"] == "east-web-01" and a["level"] == "critical"]
            alert = wait_for(leak_alert, 30)
            assert alert and alert[0]["message"].startswith("Memory"), alert

            for server in ("east-web-01", sims["west"][0], "db-01"):          # one server of each agent (an explanation is
                r = httpx.get(hub.url + f"/explain/{server}", headers=h, timeout=120)   # seconds of attributions: not a speed test)
                assert r.status_code == 200, (server, r.text)
                assert r.json()["shap"]["top_features"], (server, r.json())
            assert get("/status").json()["servers_tracked"] >= len(servers)
            print(f"all forecast, alerted and explained {time.monotonic() - t0:.1f}s after start")
        finally:
            hub.stop()
            for a in agents: a.stop()
