"An active alert served by a live hub carries the top drivers of its server's risk (issue 9, item 4)."
import time
from pathlib import Path

import httpx

from qdash.model.alerts import AlertEngine
from qdash.config import load_settings
from qdash.testing import HubProcess
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

MODELS = Path(__file__).resolve().parent.parent / "models"


def test_active_alert_carries_drivers(tmp_path):
    server = FleetSimulator(6, seed=42).servers.server[0]
    # an alert left open by an earlier run of the hub: the alert engine picks it up from the records
    store = open_store(load_settings(environ={}).updated({"store": {"path": str(tmp_path / "qdash.duckdb")}}))
    AlertEngine(store).update({server: {"risk_score": 85.0, "profile": "web", "target": "cpu_pct", "time_to_issue_min": 30.0,
                                        "message": "CPU saturation predicted in 30 minutes"}})
    store.close()
    env = {"QDASH__MODEL__DIR": str(MODELS), "QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "6",
           "QDASH__LIMITS__ALERTS_ACTIVE": "100000/minute"}
    with HubProcess(env, data_dir=tmp_path) as hub:
        H = {"X-API-Key": hub.api_key}
        end, alert = time.monotonic() + 90, None
        while time.monotonic() < end:
            body = httpx.get(hub.url + "/alerts/active", headers=H, timeout=30).json()
            alert = next((a for a in body["alerts"] if a["server_name"] == server), None)
            if alert and alert["drivers"]:
                break
            time.sleep(0.5)
    assert alert is not None, body
    assert 1 <= len(alert["drivers"]) <= 3
    assert all(set(d) == {"feature", "importance", "stars"} and 0 <= d["importance"] <= 1 for d in alert["drivers"])
