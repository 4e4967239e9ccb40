"""The vectorised drift check against the pandas one it replaced (`qdash.bench.drift.PandasReference`, the oracle):
same standardized readings, same verdicts and statistics, on a seeded fleet calm, drifted, and with servers and a
profile the reference never saw; and the hub's drift watch judging the forecasting cycle's data as it would the store's."""
import numpy as np
import pandas as pd
import pytest

from qdash.bench.drift import PandasReference, _slot_by_index, shift_frame
from qdash.collect.simulate import FleetSimulator
from qdash.config import load_settings
from qdash.drift import DriftMonitor, Reference, season_slot
from qdash.serving import DriftWatch, Forecasting
from qdash.store import open_store

END = pd.Timestamp("2026-01-19", tz="UTC")


@pytest.fixture(scope="module")
def fleet():
    sim = FleetSimulator(40, seed=11)
    rf = sim.frame(END - pd.Timedelta(days=7), END, "5min")
    ref = Reference(rf, window="1D")
    return sim, rf, ref, PandasReference(ref, rf)


def _frames(sim):
    day = sim.frame(END, END + pd.Timedelta(days=1), "5min")
    a, b = day.server.unique()[:2]
    odd = day.assign(server=day.server.replace({a: "stranger"}))             # unknown server: its profile's statistics
    odd = odd.assign(profile=odd.profile.where(odd.server != b, "quantum"),   # unknown server and profile: the fleet's
                     server=odd.server.replace({b: "stranger-2"}))
    return {"calm": day,
            "drifted": shift_frame(day, END + pd.Timedelta(hours=4), ["web"], {"cpu_pct": ("add", 20.0), "load1": ("mul", 1.6)}),
            "fleet_mem": shift_frame(day, END, None, {"mem_pct": ("mul", 1.25)}),
            "unknown_names": odd, "no_profile": day.drop(columns=["profile"]).iloc[::3], "empty": day.iloc[:0]}


def test_vectorised_check_gives_the_same_numbers_as_the_pandas_one(fleet):
    sim, rf, ref, old = fleet
    assert np.array_equal(ref.z(rf).to_numpy(), old.z(rf).to_numpy(), equal_nan=True)         # so q, bins and noise agree too
    t = pd.date_range("2025-12-27", "2026-01-20", freq="37min", tz="UTC")
    assert np.array_equal(season_slot(t), _slot_by_index(t))
    verdicts = {}
    for name, fr in _frames(sim).items():
        assert np.array_equal(ref.z(fr).to_numpy(), old.z(fr).to_numpy(), equal_nan=True), name
        new, was = ref.compare(fr), old.compare(fr)
        assert new == was, name
        verdicts[name] = new["fds"] is not None and new["fds"] >= 0.15
    assert verdicts == {"calm": False, "drifted": True, "fleet_mem": True, "unknown_names": False, "no_profile": False, "empty": False}


def test_drift_watch_judges_the_cycle_data_as_it_judges_the_store(tmp_path):
    "The hub's drift check takes its window from the forecasting cycle (no store read) and gets the store's answer."
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"}, "model": {"dir": str(tmp_path / "models")}})
    st = open_store(s)
    sim = FleetSimulator(8, seed=4)
    st.write("vm", sim.frame(END - pd.Timedelta(days=3), END, "5min"))
    st.write("vm", shift_frame(sim.frame(END, END + pd.Timedelta(hours=12), "5min"), END + pd.Timedelta(hours=2), None,
                               {"cpu_pct": ("add", 25.0)}))
    now = END + pd.Timedelta(hours=12)
    f = Forecasting(s, st, seed=False)
    f.run_cycle(now)                                  # no model: the trend cycle still reads the fleet at the model's step
    dw = DriftWatch(s, st, forecasting=f)
    win = dw.recent(now)
    assert win is not None and win.server.nunique() == 8
    mon = DriftMonitor(st, s)
    reads = []
    read = mon._read
    mon._read = lambda *a, **k: (reads.append(a), read(*a, **k))[1]
    from_store = mon.check(now)
    assert len(reads) == 2                            # the reference, then the window
    from_cycle = dw.monitor.check(now, recent=win)
    assert dw.monitor.last["compare"] == mon.last["compare"] and from_cycle["drift_detected"] and from_store["drift_detected"]
    assert dw.recent(now + pd.Timedelta(minutes=6)) is None                  # a cycle over a step old: the store is read instead
    dw.monitor.state["last_check"] = None
    dw.monitor._read = lambda *a, **k: (reads.append(a), read(*a, **k))[1]
    dw.step(now)                                      # the loop's turn: the reference is cached, the window comes from the cycle
    assert len(reads) == 2 and dw.monitor.last["compare"] == mon.last["compare"]
