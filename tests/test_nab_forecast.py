"Per-series MASE on a real NAB file (issue #14): the scorer every method goes through, checked against answers computed by hand."
import numpy as np, pandas as pd, pytest
from qdash.bench.forecast import NAB_DIR, nab_dataset, series_arrays, mase_scale, naive_paths, score_paths, nab_summary
from qdash.model.data import fleet_frame

FILE, DAYS, H, SEASON = "ec2_request_latency_system_failure.csv", 5, 96, 288


@pytest.fixture(scope="module")
def nab(tmp_path_factory):
    src = NAB_DIR / FILE
    if not src.exists(): pytest.skip(f"NAB data not found at {src}")
    d = tmp_path_factory.mktemp("nab")
    raw = pd.read_csv(src, parse_dates=["timestamp"])
    raw = raw[raw.timestamp < raw.timestamp.iloc[0] + pd.Timedelta(days=DAYS)]      # a real slice: five days
    raw.to_csv(d / FILE, index=False)
    ds = nab_dataset(d, min_days=DAYS - 1)
    frame = fleet_frame(ds, ["value"], 300, 6)
    # by hand: the file's values on a regular 5-minute grid, NaN where a timestamp is missing
    g = raw.groupby("timestamp").value.mean()                                        # duplicate timestamps averaged first
    g = g.groupby(g.index.floor("5min")).mean()
    grid = g.reindex(pd.date_range(g.index[0], g.index[-1], freq="5min")).to_numpy(float)
    return frame, grid


def test_scorer_known_answers(nab):
    frame, grid = nab
    arrays = series_arrays(frame)
    (srv, (b, a)), = arrays.items()
    assert srv == FILE[:-4]
    m = min(len(a), len(grid))
    np.testing.assert_allclose(a[:m], grid[:m], equal_nan=True)          # the server's grid is the file's
    start = 3 * SEASON                                                  # the last two days are scored
    origins = [j for j in range(start, len(a) - H + 1, 36) if np.isfinite(a[j - 1])]
    windows = [(srv, b + j) for j in origins]
    perfect = np.stack([a[j:j + H] for j in origins])
    lv = np.stack([naive_paths(a, j, H)["last_value"] for j in origins])
    sn = np.stack([naive_paths(a, j, H)["seasonal_naive"] for j in origins])
    scale = mase_scale(a, start)
    x = grid[:start]
    by_hand = np.nanmean(np.abs(x[SEASON:] - x[:-SEASON]))             # the scale's definition: a day's change, before the scored part
    assert scale == pytest.approx(by_hand)
    tab = score_paths(arrays, windows, {"perfect": perfect, "last_value": lv, "seasonal_naive": sn}, {srv: scale}).set_index("method")
    ok = [k for k, j in enumerate(origins) if np.isfinite(grid[j:j + H]).all() and np.isfinite(grid[j - SEASON:j - SEASON + H]).all()]
    assert len(ok) >= 5 and (tab.windows == len(ok)).all()              # windows with a gap in the actuals or any method: dropped for all
    assert tab.loc["perfect", "mase"] == 0.0
    lv_hand = np.mean([np.abs(grid[origins[k]:origins[k] + H] - grid[origins[k] - 1]).mean() for k in ok]) / by_hand
    assert tab.loc["last_value", "mase"] == pytest.approx(lv_hand)
    sn_hand = np.mean([np.abs(grid[origins[k]:origins[k] + H] - grid[origins[k] - SEASON:origins[k] - SEASON + H]).mean() for k in ok]) / by_hand
    assert tab.loc["seasonal_naive", "mase"] == pytest.approx(sn_hand)


def test_summary_counts_series():
    tab = pd.DataFrame([("a", "qdash", 4, 1.0, 0.5), ("a", "last_value", 4, 2.0, 1.0), ("a", "seasonal_naive", 4, 1.0, 0.4),
                        ("b", "qdash", 2, 3.0, 1.5), ("b", "last_value", 2, 2.0, 1.0), ("b", "seasonal_naive", 2, 4.0, 2.0),
                        ("c", "qdash", 6, 1.0, 0.9), ("c", "last_value", 6, 2.0, 1.0), ("c", "seasonal_naive", 6, 1.0, 0.8)],
                       columns=["series", "method", "windows", "mae", "mase"])
    sm = nab_summary(tab)
    assert sm["series"] == 3 and sm["windows"] == 12
    assert sm["share_beating_last_value"]["qdash"] == round(2 / 3, 3)     # a and c
    assert sm["share_beating_seasonal_naive"]["qdash"] == round(1 / 3, 3)  # b only
    assert sm["median_mase"]["qdash"] == 0.9
    assert sm["pooled_mase"]["qdash"] == pytest.approx(round((0.5 * 4 + 1.5 * 2 + 0.9 * 6) / 12, 3))
