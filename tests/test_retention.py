"The hub applies `[store] retention` on a schedule (`[store] retain_every`): raw points older than it go, newer ones stay."
import json
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


# --- tiers: raw points older than [store] raw_retention rolled into 1 min and 1 h rows ---------------------------------------

import numpy as np  # noqa: E402

T0 = pd.Timestamp("2025-03-01", tz="UTC")


def second_fleet(t0=T0, hours=3, servers=("a", "b", "c"), seed=0):
    "1 s telemetry, time-major as the collector writes it: a float, an int and a bool field."
    rng = np.random.default_rng(seed)
    n = hours * 3600
    t = np.repeat(t0 + pd.to_timedelta(np.arange(n), "s"), len(servers))
    k = len(t)
    return pd.DataFrame({"time": t, "server": np.tile(servers, n), "cpu_pct": (50 + rng.normal(0, 5, k)).round(1),
                         "mem_pct": (40 + rng.normal(0, 3, k)).round(1), "procs": rng.integers(0, 500, k), "up": rng.random(k) > 0.1})


def tier_store(tmp_path, **store):
    return open_store(load_settings(environ={}).updated({"store": {"path": str(tmp_path / "t.duckdb"), "raw_retention": "1h",
                                                                   "minute_retention": "7d", **store}}))


QUERIES = [dict(every=e, agg=a) for e in ("1min", "5min", "7min", "1h") for a in ("mean", "min", "max", "last", "count")] + \
          [dict(every="5min", where={"server": "b"}, fields=["cpu_pct"])]


def test_bucketed_aggregates_from_the_minute_tier_equal_those_from_raw(tmp_path):
    with tier_store(tmp_path) as st:
        st.write("vm", second_fleet())
        rng = dict(start=T0, stop=T0 + pd.Timedelta("3h"))
        before = [st.query("vm", **rng, **q) for q in QUERIES]
        assert st.roll_up(now=T0 + pd.Timedelta("3h30min")) == {"vm": 3 * 2 * 3600}   # hours 0 and 1 rolled (whole hours)
        for q, b in zip(QUERIES, before):
            a = st.query("vm", **rng, **q)
            assert "resolution" not in a.attrs, q          # whole tier buckets: answered exactly
            pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=1e-12, obj=str(q))


def test_the_forecasters_day_at_its_step_is_unchanged_by_the_rollup(tmp_path):
    from qdash.model.data import load_fleet
    with tier_store(tmp_path, raw_retention="8h") as st:
        st.write("vm", second_fleet(hours=26, servers=("a", "b")))
        now = T0 + pd.Timedelta("26h")
        read = lambda: load_fleet(st, ["cpu_pct", "mem_pct"], start=now - pd.Timedelta("24h"), stop=now, every="300s")
        before = read()
        assert sum(st.roll_up(now=now).values()) == 2 * 18 * 3600
        after = read()
        assert after.sizes == before.sizes == {"server": 2, "time": 288}
        for f in ("cpu_pct", "mem_pct"):
            np.testing.assert_allclose(after[f].values, before[f].values, rtol=1e-12)


def test_the_retention_loop_rolls_raw_points_into_the_tiers_and_deletes_them(tmp_path):
    s = load_settings(environ={}).updated({"store": {"path": str(tmp_path / "hub.duckdb"), "raw_retention": "1h", "retention": "30d",
                                                     "retain_every": "1s"},
                                           "collect": {"sources": "", "spool_dir": str(tmp_path / "spool")},
                                           "model": {"dir": str(tmp_path / "models")}})
    now = pd.Timestamp.now(tz="UTC").floor("h")
    cut = (now - pd.Timedelta("2h")).value                         # at least two whole hours are older than 1h
    def sql(st, q):
        with st._tslock: return st.db.execute(q, [cut]).fetchone()[0]
    raw_old = lambda st: sql(st, "SELECT count(*) FROM ts.vm WHERE time < ?")
    with open_store(s) as st:
        st.write("vm", second_fleet(t0=now - pd.Timedelta("4h"), hours=4))
        before = st.query("vm", start=now - pd.Timedelta("4h"), stop=now, every="1h", agg="count")
        assert raw_old(st) == 3 * 2 * 3600
    svc = Services(s).start()
    try:
        end = time.monotonic() + 20
        while time.monotonic() < end and raw_old(svc.store): time.sleep(0.2)
        assert raw_old(svc.store) == 0                                     # raw points older than the raw retention are gone ...
        n1m, n1h = (sql(svc.store, f'SELECT sum("n:cpu_pct") FROM tier_{t}.vm WHERE time < ?') for t in ("1m", "1h"))
        assert n1m == n1h == 3 * 2 * 3600                         # ... and both tiers hold every one of them
        after = svc.store.query("vm", start=now - pd.Timedelta("4h"), stop=now, every="1h", agg="count")
        pd.testing.assert_frame_equal(after, before)
    finally:
        svc.stop()


def test_a_finer_bucket_over_rolled_up_time_comes_at_the_tiers_resolution_and_says_so(tmp_path):
    with tier_store(tmp_path) as st:
        st.write("vm", second_fleet())
        st.roll_up(now=T0 + pd.Timedelta("3h30min"))
        df = st.query("vm", ["cpu_pct"], start=T0 + pd.Timedelta("1h50min"), stop=T0 + pd.Timedelta("2h10min"), every="10s",
                      where={"server": "a"})
        gaps = df.time.diff().dropna().dt.total_seconds()
        old, new = gaps[df.time.iloc[1:] <= T0 + pd.Timedelta("2h")], gaps[df.time.iloc[1:] > T0 + pd.Timedelta("2h")]
        assert set(old) == {60.0} and set(new) == {10.0}, (set(old), set(new))
        assert df.attrs["resolution"] == [{"start": T0 + pd.Timedelta("1h50min"), "stop": T0 + pd.Timedelta("2h"), "every_s": 60.0}]
        raw = st.query("vm", ["cpu_pct", "procs"], start=T0, stop=T0 + pd.Timedelta("1h"), where={"server": "a"})
        assert len(raw) == 60 and raw.attrs["resolution"][0]["every_s"] == 60.0     # raw points asked for: minutes given
        assert "resolution" not in st.query("vm", start=T0 + pd.Timedelta("2h"), every="10s").attrs


def test_the_hub_names_a_coarser_resolution_over_rolled_up_time(tmp_path):
    import httpx
    from qdash.testing import HubProcess
    now = pd.Timestamp.now(tz="UTC").floor("h")
    with open_store(load_settings(environ={}).updated({"store": {"path": str(tmp_path / "qdash.duckdb")}})) as st:
        st.write("vm", second_fleet(t0=now - pd.Timedelta("4h"), hours=4))
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__STORE__RAW_RETENTION": "1h", "QDASH__STORE__RETAIN_EVERY": "1s",
           "QDASH__MODEL__DIR": str(tmp_path / "models")}
    with HubProcess(env, data_dir=tmp_path) as hub:
        get = lambda start, stop, every: httpx.get(hub.url + "/api/history/metrics", timeout=30, headers={"X-API-Key": hub.api_key},
                                                   params={"server": "a", "fields": "cpu_pct", "every": every,
                                                           "start": start.isoformat(), "stop": stop.isoformat()})
        old = (now - pd.Timedelta("3h"), now - pd.Timedelta("2h50min"))
        end = time.monotonic() + 30
        r = get(*old, "10s")
        while time.monotonic() < end and "x-resolution" not in r.headers:
            time.sleep(0.3); r = get(*old, "10s")
        assert r.status_code == 200 and len(r.json()) == 10                         # ten minutes at 1 min: the tier's rows ...
        assert json.loads(r.headers["x-resolution"]) == [{"start": old[0].isoformat().replace("+00:00", "Z"),
                                                          "stop": old[1].isoformat().replace("+00:00", "Z"), "every_s": 60.0}]
        recent = get(now - pd.Timedelta("10min"), now, "10s")                        # ... raw points where they are kept
        assert len(recent.json()) == 60 and "x-resolution" not in recent.headers
