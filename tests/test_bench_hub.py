"`qdash bench hub`, short: a real hub with simulated servers at 1 s, its figures measured, not made up."
from qdash.bench.registry import run
from qdash.bench.hub import HEADLINE

def test_bench_hub_short_run_measures_a_real_hub():
    figs = list(run("hub", seconds=6, servers=(150,), demo_seconds=0, ws_counts=(), components=0, extras=False, warmup=0))
    load, head = figs[0], figs[-1]
    assert [f["figure"] for f in figs] == ["hub_load", "headline"]
    assert load["servers"] == 150 and load["interval_s"] == 1.0
    assert 0 < load["cycles_per_s"] <= 1.5 and load["cycles"] >= 1                   # completed simulator cycles (about 1 s each on a quiet machine)
    assert load["points_collected"] >= 150 * load["cycles"]                           # whole cycles of 150 servers
    assert abs(load["unwritten_points"]) <= 150 + 100 and load["dropped_points"] == 0  # the writer is within one cycle's batch
    assert load["cpu_share_of_core"] > 0 and load["hub_rss_peak_mb"] >= load["hub_rss_start_mb"] > 50
    assert load["status_requests"] >= 5 and 0 < load["status_p50_ms"] <= load["status_p99_ms"]   # timed real requests
    assert list(head) == ["figure", *HEADLINE] and all(v is None for v in head.values() if v != "headline")  # sizes not run: no figure
