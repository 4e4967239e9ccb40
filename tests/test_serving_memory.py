"""Issue #19 item 2: what a forecasting cycle keeps is lighter, and what the hub serves from it is the same bytes.
A real cycle over a simulated fleet: its payload's JSON before and after `compact_payload`, its kept results."""
import numpy as np
import pandas as pd

import qdash.serving as serving
from qdash.collect.simulate import FleetSimulator
from qdash.config import load_settings
from qdash.hub.http import dumps
from qdash.store import open_store


def test_a_cycle_keeps_arrays_and_shared_times_and_serves_the_same_json(tmp_path, monkeypatch):
    s = load_settings(environ={}).updated({"store": {"path": str(tmp_path / "q.duckdb")}, "model": {"dir": str(tmp_path / "models")}})
    store = open_store(s)
    try:
        end = pd.Timestamp.now(tz="UTC").floor("5min")
        FleetSimulator(12, seed=5).backfill(store, days=2, end=end)
        seen = []
        real = serving.compact_payload
        def spy(payload):                                        # the JSON the hub served before this change: lists of floats
            seen.append(dumps(payload))
            return real(payload)
        monkeypatch.setattr(serving, "compact_payload", spy)
        f = serving.Forecasting(s, store)                        # no model: every server forecast by its trend
        f.run_cycle(end)
        assert len(seen) == 1 and dumps(f.payload) == seen[0]    # the same bytes, served from arrays
        preds = {k: p for k, p in f.payload["predictions"].items() if "forecast" in p}
        assert len(preds) == 12, list(f.payload["predictions"].items())[:1]
        fcs = [p["forecast"] for p in preds.values()]
        paths = [v for fc in fcs for k, v in fc.items() if k not in ("timestamps", "p10", "p90")]
        assert paths and all(isinstance(v, np.ndarray) and v.dtype == np.float64 and len(v) == 96 for v in paths)
        assert all(isinstance(v, np.ndarray) for fc in fcs for b in ("p10", "p90") for v in fc[b].values())
        assert len({id(fc["timestamps"]) for fc in fcs}) == 1    # one list of times for the fleet
        ok = [r for r in f.results.values() if r.get("status") == "ok"]
        assert ok and not any(k in r for r in ok for k in serving.CYCLE_ONLY)
        assert len({id(r["timestamps"]) for r in ok}) == 1 and all(r["quantiles"].dtype == np.float32 for r in ok)
    finally: store.close()
