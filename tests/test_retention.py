"The hub applies `[store] retention` on a schedule (`[store] retain_every`): raw points older than it go, newer ones stay."
import time

import pandas as pd

from qdash.config import load_settings
from qdash.serving import Services
from qdash.store import open_store


def test_services_apply_retention_on_their_schedule(tmp_path):
    s = load_settings(environ={}).updated({"store": {"path": str(tmp_path / "hub.duckdb"), "retention": "1d", "retain_every": "1s"},
                                           "collect": {"sources": "", "spool_dir": str(tmp_path / "spool")},
                                           "model": {"dir": str(tmp_path / "models")}})
    now = pd.Timestamp.now(tz="UTC").floor("s")
    with open_store(s) as st:
        st.write("vm", pd.DataFrame({"time": [now - pd.Timedelta(days=3), now - pd.Timedelta(hours=1)], "server": "a", "cpu_pct": [1.0, 2.0]}))
    svc = Services(s).start()
    try:
        assert len(svc.store.query("vm")) == 2                         # not at start: one interval after it
        end = time.monotonic() + 20
        while time.monotonic() < end and len(svc.store.query("vm")) == 2: time.sleep(0.2)
        left = svc.store.query("vm")
        assert left.cpu_pct.tolist() == [2.0], left
        assert next(l for l in svc.loops if l.name == "retention").runs >= 1
    finally:
        svc.stop()
