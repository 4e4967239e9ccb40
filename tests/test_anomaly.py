"The NAB harness scores as NAB does: the null detector 0, the perfect detector 100, on a real NAB file under every profile."
import numpy as np
import pytest

from qdash.anomaly import NAB_PROFILES, load_nab, nab_benchmark, nab_layout, nab_sweep
from qdash.config import ValidationError, shared_data

NAB = load_nab(shared_data("nab"))


def _file(name):
    return next(f for f in NAB if f["name"].endswith(name))


@pytest.mark.parametrize("profile", list(NAB_PROFILES))
@pytest.mark.parametrize("name", ["machine_temperature_system_failure.csv", "ec2_request_latency_system_failure.csv"])
def test_null_and_perfect_detectors(name, profile):
    f = _file(name)
    n, times = len(f["values"]), list(f["times"])
    perfect = np.zeros(n)
    for a, _ in f["windows"]: perfect[times.index(a)] = 1.0
    assert nab_sweep([f["layout"]], [np.zeros(n)], profile)["score"] == 0.0
    assert nab_sweep([f["layout"]], [perfect], profile)["score"] == 100.0
    half = perfect.copy()
    for _, b in f["windows"]: half[times.index(b) - 1] = 0.5            # late alarms only, at a lower threshold
    half[[times.index(a) for a, _ in f["windows"]]] = 0.0
    assert 0 < nab_sweep([f["layout"]], [half], profile)["score"] < 100


def test_corpus_layout_and_bad_input():
    assert len(NAB) == 7 and sum(f["layout"]["n_windows"] for f in NAB) == 19
    f = _file("rogue_agent_key_hold.csv")
    with pytest.raises(ValidationError, match="not a NAB profile"):
        nab_sweep([f["layout"]], [np.zeros(len(f["values"]))], "lenient")
    with pytest.raises(ValidationError, match="values for a file of"):
        nab_sweep([f["layout"]], [np.zeros(5)])
    with pytest.raises(ValidationError, match="not a timestamp of the file"):
        nab_layout(f["times"][:100], f["windows"])


def test_a_false_alarm_costs_what_the_profile_says():
    f = _file("rogue_agent_key_hold.csv")
    n, times = len(f["values"]), list(f["times"])
    perfect = np.zeros(n)
    for a, _ in f["windows"]: perfect[times.index(a)] = 1.0
    first = times.index(f["windows"][0][0])
    noisy = perfect.copy(); noisy[first - 5] = 1.0                      # after probation, before any window: full fp weight
    for profile, p in NAB_PROFILES.items():
        drop = nab_sweep([f["layout"]], [perfect], profile)["raw"] - nab_sweep([f["layout"]], [noisy], profile)["raw"]
        assert drop == pytest.approx(p["fp"], abs=1e-9)


def test_benchmark_runs_every_detector_through_one_harness():
    rows = {r["detector"]: r for r in nab_benchmark([_file("rogue_agent_key_hold.csv")])}
    assert set(rows) == {"qdash", "windowed_gaussian", "half_space_trees"}
    for r in rows.values():
        assert r["windows"] == 2 and 0 <= r["nab_standard"] <= 100
