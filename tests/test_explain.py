"qdash.model.explain on a tiny trained TFT: attributions, attention, counterfactuals and the /explain body."
import json

import numpy as np
import pandas as pd
import pytest
import torch

from qdash.config import NotFound, load_settings
from qdash.model.explain import (RULES, ExplanationCache, InsufficientData, RiskModel, attribute, ablate, drivers_for, explain_server,
                                 focus_periods, impact, period_name, recommendation, server_window, stars, typical_day)
from qdash.model.data import frame_to_fleet, load_fleet
from qdash.model.forecaster import Forecaster
from qdash.model.train import fit_tft
from qdash.model.risk import level_of, score_forecasts
from qdash.collect.simulate import FleetSimulator
from qdash.store import open_store

END = pd.Timestamp("2026-01-12", tz="UTC")
FIELDS = ["cpu_pct", "mem_pct", "swap_pct", "iowait_pct", "load1"]


@pytest.fixture(scope="module")
def setup():
    "A tiny model (1 h encoder, 30 min horizon) and a 3-day fleet: db-01's CPU ran away 2 h ago, web-01 leaks memory."
    s = load_settings(environ={}).updated({"store": {"path": ":memory:"},
                                          "model": {"encoder_length": 12, "horizon": 6, "min_history": 12}})
    st = open_store(s)
    FleetSimulator(6, seed=1).backfill(st, days=0.5, end="2026-01-05")
    card = fit_tft(load_fleet(st), s, max_epochs=1, hidden_size=4, batch_size=16, limit_train_batches=2, limit_val_batches=1,
                   register=False, targets=["cpu_pct", "mem_pct"])
    st.close()
    fc = Forecaster(card["model"], {"targets": card["settings"]["targets"], "step_s": 300})
    sim = FleetSimulator(6, seed=2)
    sim.inject("cpu_runaway", "db-01", start=END - pd.Timedelta("2h"), duration="6h")
    sim.inject("memory_leak", "web-01", start=END - pd.Timedelta(hours=11, minutes=30), duration="12h")
    data = frame_to_fleet(sim.frame(END - pd.Timedelta("3D"), END, "5min"), FIELDS)
    res = score_forecasts(fc.predict(data, min_history=12), fc.targets, dict(s.model.thresholds), fc.step)
    return s, fc, data, res


def test_risk_function_is_the_served_one(setup):
    s, fc, data, res = setup
    for srv in map(str, data.server.values):
        w = server_window(fc, data, srv)
        rm = RiskModel(fc, w, dict(s.model.thresholds))
        with torch.no_grad():
            np.testing.assert_allclose(rm.quantiles(w.X[None])[0].numpy(), res[srv]["quantiles"], atol=1e-3)
            assert abs(float(rm.risk(w.X[None])) - res[srv]["risk_score"]) < 0.06


def test_explanation_shape_and_known_drivers(setup):
    s, fc, data, res = setup
    for srv, driver, scenario in (("db-01", "cpu_pct", "Cap CPU at 70%"), ("web-01", "mem_pct", "Reduce memory by 15%")):
        ex = explain_server(fc, data, srv, s)
        json.dumps(ex)
        assert set(ex) == {"server_name", "prediction", "shap", "attention", "counterfactuals"} and ex["server_name"] == srv
        assert abs(ex["prediction"]["risk_score"] - res[srv]["risk_score"]) <= 0.1
        assert ex["prediction"]["alert_level"] == level_of(ex["prediction"]["risk_score"])
        tf = ex["shap"]["top_features"]
        assert tf[0]["feature"] == driver and tf[0]["direction"] == "raises risk"
        assert all(0 <= f["importance"] <= 1 and len(f["stars"]) == 5 for f in tf)
        assert abs(sum(f["importance"] for f in tf) - 1) < 0.01
        assert ex["shap"]["check"]["top1_agrees"]
        att = ex["attention"]
        assert att["focus_periods"] and all(isinstance(p, str) for p in att["focus_periods"])
        assert att["analysis"].startswith("Model focused on")
        assert len(att["weights"]) == len(att["timestamps"]) == 12 and abs(sum(att["weights"]) - 1) < 1e-3
        assert abs(sum(att["variable_selection"]["encoder"].values()) - 1) < 1e-3
        cf = ex["counterfactuals"][0]
        assert cf["scenario"] == scenario and cf["risk_after"] < cf["risk_before"] and cf["impact"].startswith("Risk drops from")
        assert cf["recommendation"] == recommendation(driver, ex["prediction"]["profile"])
    assert [d["feature"] for d in drivers_for(fc, data, "db-01", k=1, settings=s)] == ["cpu_pct"]


def test_attributions_are_complete_and_agree_with_ablation(setup):
    s, fc, data, res = setup
    for srv in ("db-01", "web-01", "ml-01"):
        w = server_window(fc, data, srv)
        rm = RiskModel(fc, w, dict(s.model.thresholds))
        base, src = typical_day(w)
        assert src == ["typical_day", "typical_day"]
        at = attribute(rm, base, n_steps=16)
        assert abs(at.cells.sum() - (at.value - at.base_value)) <= abs(at.gap) + 1e-3
        assert abs(at.gap) < 0.05 * abs(at.value - at.base_value) + 0.5
        fa = ablate(rm, base, at.f)
        assert np.argmax(np.abs(fa)) == np.argmax(np.abs(at.per_variable))


def test_unknown_and_young_servers(setup):
    s, fc, data, res = setup
    with pytest.raises(NotFound):
        explain_server(fc, data, "nope", s)
    short = data.copy(deep=True)
    short["cpu_pct"][0, :-5] = np.nan
    with pytest.raises(InsufficientData) as e:
        explain_server(fc, short, str(short.server.values[0]), s)
    assert (e.value.status_code, e.value.code) == (409, "insufficient_data") and "5 recent points" in e.value.detail
    young = data.isel(time=slice(-14, None))
    assert explain_server(fc, young, "db-01", s)["shap"]["baseline"] == {"cpu_pct": "window_median", "mem_pct": "window_median"}


def test_texts_and_rules():
    assert [stars(x) for x in (0.0, 0.3, 0.5, 0.62, 1.0)] == ["☆☆☆☆☆", "★★☆☆☆", "★★★☆☆", "★★★☆☆", "★★★★★"]
    assert [period_name(m) for m in (0, 45, 60, 125, 1500)] == ["Last 30 minutes", "45 minutes ago", "1 hour ago", "2 hours ago", "1 day ago"]
    assert impact(72.5, 45.2) == "Risk drops from 72.5 to 45.2" and impact(3, 3) == "Risk stays at 3.0"
    assert recommendation("mem_pct", "quantum") == RULES["mem_pct"][2]["default"]
    assert recommendation("cpu_pct", "web") != recommendation("cpu_pct", "database")
    w = np.r_[np.full(30, 0.1), np.full(6, 1.0), np.full(20, 0.1), np.full(6, 2.0)]
    assert [p[:2] for p in focus_periods(w, 300)] == [(56, 61), (30, 35)]
    assert focus_periods(np.zeros(10), 300) == []


def test_cache_keeps_one_cycle():
    c, n = ExplanationCache(), []
    def build(): n.append(1); return len(n)
    assert [c.get("a", 1, build), c.get("a", 1, build), c.get("b", 1, build), c.get("a", 2, build)] == [(1, False), (1, True), (2, False), (3, False)]
    with pytest.raises(ValueError):
        c.get("x", 2, lambda: (_ for _ in ()).throw(ValueError("boom")))
    assert c.get("x", 2, build) == (4, False)


def test_counterfactuals_propose_only_changes_that_lower_the_risk():
    "A risk that rises when memory falls (as a model may learn before a crash): 'reduce memory' is not advice."
    from types import SimpleNamespace
    from qdash.model.explain import counterfactuals

    class Risk:   # risk = mean CPU + (100 - mean memory) / 2 over the window: capping CPU helps, cutting memory hurts
        targets = ["cpu_pct", "mem_pct"]
        win = SimpleNamespace(X=torch.tensor([[95.0, 80.0]] * 12), profile="web")
        def risk(self, X): return X[..., 0].mean(-1) * 0.5 + (100 - X[..., 1].mean(-1)) * 0.5

    cf = counterfactuals(Risk(), ["mem_pct", "cpu_pct"])
    assert [c["scenario"] for c in cf] == ["Cap CPU at 70%"], cf
    assert cf[0]["risk_after"] < cf[0]["risk_before"]
    worse = Risk(); worse.win = SimpleNamespace(X=torch.tensor([[50.0, 80.0]] * 12), profile="web")   # CPU under the cap: nothing helps
    assert counterfactuals(worse, ["mem_pct", "cpu_pct"]) == []
