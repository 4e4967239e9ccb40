"The vectorised simulator gives the numbers the per-server one gave: sums and distributions recorded from it, incidents included."
import json
from pathlib import Path
import numpy as np, pandas as pd
from qdash.collect.simulate import FleetSimulator, FIELDS

GOLDEN = Path(__file__).parent / "fixtures" / "simulate_seed7.json"   # recorded with the per-server loop (before vectorising)

def _summary():
    sim = FleetSimulator(60, seed=7)
    end = pd.Timestamp("2024-03-15", tz="UTC"); t0 = end - pd.Timedelta("1D")
    for kind, srv, h in [("memory_leak", "web-01", 2), ("cpu_runaway", "db-01", 3), ("disk_saturation", "batch-01", 4),
                         ("swap_storm", "ml-01", 5), ("cascade", "web-02", 6), ("cpu_creep", "web-03", 1),
                         ("swap_growth", "db-02", 1), ("mem_step", "batch-02", 8)]:
        sim.inject(kind, srv, start=t0 + pd.Timedelta(hours=h), duration="6h")
    df = sim.frame(t0, end)
    (_, live), = sim.collect(t0 + pd.Timedelta("7h"))
    return {"rows": len(df), "sum": {k: float(df[k].sum()) for k in FIELDS},
            "sumsq": {k: float((df[k].astype(float) ** 2).sum()) for k in FIELDS},
            "live_sum": {k: float(live[k].sum()) for k in FIELDS},
            "profile": {f"{p}/{k}": [float(x) for x in g[k].quantile([0.05, 0.5, 0.95])] + [float(g[k].mean()), float(g[k].std())]
                        for p, g in df.groupby("profile") for k in FIELDS}}

def test_same_numbers_as_the_per_server_simulator():
    want, got = json.loads(GOLDEN.read_text()), _summary()
    assert got["rows"] == want["rows"]
    for part in ("sum", "sumsq", "live_sum", "profile"):
        for k, v in want[part].items(): np.testing.assert_allclose(got[part][k], v, rtol=1e-12, err_msg=f"{part} {k}")

def test_a_live_cycle_is_one_column_of_the_history():
    sim = FleetSimulator(1000, seed=3)
    sim.inject("cascade", "web-05", start=1_700_000_000, duration="2h", lag="1min")
    (_, live), = sim.collect(pd.Timestamp(1_700_000_600, unit="s", tz="UTC"))
    hist = sim.frame(1_700_000_600, 1_700_000_601, "1s")
    pd.testing.assert_frame_equal(live, hist)
    hit = live.set_index("server").cpu_pct
    assert hit["web-05"] > 80 and hit.median() < 60      # the cascade's origin, ten minutes in, against the fleet
