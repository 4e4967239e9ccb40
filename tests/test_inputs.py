"""Bad input gets a 4xx naming the field, never a 500, the same on DuckDB and InfluxDB (issue 20 items 9, 10, 16, 18).

Each case was a 500 (or a silent 200) through a live hub before: a 1677 point poisoned every bucketed history query,
`start=9999-12-31` and `every=1e-10s` overflowed, a 20-digit line-protocol timestamp crashed the feed, names with
control characters were stored on DuckDB only, CSV exports carried formulas, a 10,000-character URL got 413."""
import csv
import io
import time

import httpx
import pandas as pd
import pytest

from qdash.testing import HubProcess

LIMITS = {f"QDASH__LIMITS__{k}": "1000000/minute" for k in ("DEFAULT", "FEED_DATA")}


@pytest.fixture(scope="module", params=["duckdb", "influxdb"])
def hub(request):
    env = {"QDASH__COLLECT__SOURCES": "", **LIMITS}
    if request.param == "influxdb":
        srv = request.getfixturevalue("influx")
        env.update({"QDASH__STORE__BACKEND": "influxdb", "QDASH__STORE__INFLUX_URL": srv.url,
                    "QDASH__STORE__INFLUX_DATABASE": f"inputs_{int(time.time() * 1000)}"})
    with HubProcess(env) as h:
        yield h


def get(hub, path, **kw):
    return httpx.get(hub.url + path, headers={"X-API-Key": hub.api_key}, timeout=60, **kw)


def feed_lines(hub, text):
    return httpx.post(hub.url + "/feed/data", content=text, timeout=60,
                      headers={"X-API-Key": hub.api_key, "Content-Type": "text/plain"})


def feed_json(hub, records):
    return httpx.post(hub.url + "/feed/data", json=records, timeout=60, headers={"X-API-Key": hub.api_key})


@pytest.mark.parametrize("query, field", [("start=9999-12-31", "start"), ("start=0001-01-01", "start"),
                                          ("stop=-99999999d", "stop"), ("start=12345678901234567890", "start"),
                                          ("every=0.0000000001s", "every"), ("every=1000000d", "every")])
def test_history_query_out_of_range_is_422(hub, query, field):
    assert feed_lines(hub, f"vm,server=q cpu_pct=1 {time.time_ns()}").status_code == 200
    r = get(hub, "/api/history/metrics?" + query)
    assert r.status_code == 422 and f"{field}=" in r.json()["detail"], r.text


@pytest.mark.parametrize("line", ["vm,server=old cpu_pct=1 -9223372036000000000",      # 1677
                                  "vm,server=old cpu_pct=1 -1",                         # before 1970
                                  "vm,server=old cpu_pct=1 12345678901234567890",       # 20 digits
                                  "vm,server=old cpu_pct=1 9200000000000000000"])       # 2261, far ahead of now
def test_feed_out_of_range_times_refused(hub, line):
    r = feed_lines(hub, line)
    assert r.status_code == 422 and ("1970-01-01..2262-01-01" in r.text or "max_future" in r.text), r.text


@pytest.mark.parametrize("t", ["1677-09-22T00:00:00Z", "9999-01-01", 1e10, (pd.Timestamp.now(tz="UTC") + pd.Timedelta(days=1)).isoformat()])
def test_feed_json_times_refused(hub, t):
    r = feed_json(hub, [{"server": "j", "cpu_pct": 1.0, "time": t}])
    assert r.status_code == 422 and r.json()["errors"][0]["reason"].startswith("time"), r.text


def test_bucketed_history_after_bad_points(hub):
    "A refused 1677 point can no longer poison every bucketed query without `start`."
    feed_lines(hub, "vm,server=old cpu_pct=1 -9223372036000000000")
    assert feed_lines(hub, f"vm,server=new cpu_pct=2 {time.time_ns()}").status_code == 200
    for every in ("1s", "1h"):
        r = get(hub, f"/api/history/metrics?every={every}")
        assert r.status_code == 200 and r.json() and all(x["time"] >= "1970" for x in r.json()), r.text


@pytest.mark.parametrize("name", ["c\n", "c\r", "c\t", "c\x00"])
def test_control_characters_in_server_names_422_on_both_backends(hub, name):
    r = feed_json(hub, [{"server": name, "cpu_pct": 1.0}])
    assert r.status_code == 422 and r.json()["errors"][0]["reason"].startswith("server "), r.text
    lp = name if name != "c\n" else "c\x0b"                    # a newline ends a line of line protocol: a vertical tab instead
    r = feed_lines(hub, f"vm,server={lp}x cpu_pct=1")
    assert r.status_code == 422, r.text


def test_csv_export_neutralises_formulas(hub):
    evil = '=HYPERLINK("http://x","y")'
    assert feed_json(hub, [{"server": evil, "cpu_pct": -3.5, "rack": "@SUM(A1)"}]).status_code == 200
    r = get(hub, "/historical/export/environment", params={"time_range": "1h", "server_name": evil})
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert r.status_code == 200 and rows, r.text
    assert (rows[-1]["server"], rows[-1]["rack"], float(rows[-1]["cpu_pct"])) == ("'" + evil, "'@SUM(A1)", -3.5)


def test_long_url_is_414(hub):
    r = get(hub, "/" + "a" * 10_000)
    assert r.status_code == 414 and r.json()["error"] == "uri_too_long"
    r = httpx.get(hub.url + "/health", headers={"X-Big": "b" * 10_000})
    assert r.status_code == 413                                     # a large header is still a 413
