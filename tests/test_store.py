"Contract tests of qdash.store against both backends (DuckDB file, real InfluxDB 1.6), line-protocol properties."
import itertools
import threading
import uuid

import numpy as np
import pandas as pd
import pytest
import requests
from hypothesis import HealthCheck, example, given, settings, strategies as st

from qdash.config import QdashError, ValidationError, load_settings
from qdash.store import StoreAuthError, StoreUnavailable, check_name, open_store, parse_line_protocol, to_line_protocol
from qdash.testing import InfluxServer, free_port

T0 = pd.Timestamp("2025-03-01", tz="UTC")
BASE = load_settings(environ={})


def fleet(n_servers=3, n=120, step="5s", seed=0, t0=T0):
    "A small fleet frame: server/host tags; float, int and bool fields."
    rng = np.random.default_rng(seed)
    t = pd.date_range(t0, periods=n, freq=step, tz="UTC")
    return pd.concat([pd.DataFrame({"time": t, "server": f"s{i}", "host": f"h{i % 2}",
                                    "cpu_pct": rng.normal(50, 10, n).round(3), "procs": rng.integers(0, 500, n),
                                    "up": rng.random(n) > 0.1}) for i in range(n_servers)], ignore_index=True)


@pytest.fixture(params=["duckdb", "influxdb"])
def store(request, tmp_path):
    if request.param == "duckdb":
        s = open_store(BASE.updated({"store": {"path": str(tmp_path / "q.duckdb")}}))
    else:
        srv = request.getfixturevalue("influx")
        s = open_store(srv.settings(path=str(tmp_path / "q.duckdb")).updated({"store": {"influx_database": f"t_{uuid.uuid4().hex[:10]}"}}))
    yield s
    s.close()


def sort(df):
    return df.sort_values(["time", "server"]).reset_index(drop=True)


# ---- contract ---------------------------------------------------------------------------------------------------

def test_round_trip_exact(store):
    df = fleet()
    assert store.write("vm", df, tags=["server", "host"]) == len(df)
    got = store.query("vm")
    assert list(got.columns) == ["time", "host", "server", "cpu_pct", "procs", "up"]
    assert str(got.time.dtype) == "datetime64[ns, UTC]"
    assert (got.procs.dtype, got.up.dtype, got.cpu_pct.dtype) == (np.dtype("int64"), np.dtype("bool"), np.dtype("float64"))
    pd.testing.assert_frame_equal(sort(got), sort(df)[list(got.columns)].assign(time=lambda d: d.time.dt.as_unit("ns")),
                                  check_dtype=False)
    assert store.measurements() == ["vm"]
    assert store.health()


def test_nanoseconds_and_new_columns_without_migration(store):
    t = pd.Series([T0 + pd.Timedelta(1, "ns"), T0 + pd.Timedelta(999, "ns")]).dt.as_unit("ns")
    store.write("vm", pd.DataFrame({"time": t, "server": ["a", "b"], "cpu_pct": [1.0, 2.0]}))
    store.write("vm", {"time": T0 + pd.Timedelta(2000, "ns"), "server": "c", "rack": "r1", "mem_pct": 3.5})
    got = store.query("vm")
    assert got.time.array.asi8.tolist() == [T0.value + 1, T0.value + 999, T0.value + 2000]
    assert list(got.columns) == ["time", "rack", "server", "cpu_pct", "mem_pct"]
    assert got.cpu_pct.isna().tolist() == [False, False, True] and got.rack.isna().tolist() == [True, True, False]
    assert store.query("vm", ["mem_pct"]).mem_pct.tolist() == [3.5]   # rows without the field are not returned


def test_sparse_nullable_fields(store):
    df = pd.DataFrame({"time": pd.date_range(T0, periods=3, freq="s"), "server": "a",
                       "x": pd.array([1.5, None, 2.5], dtype="Float64"), "n": pd.array([None, 2, 3], dtype="Int64")})
    store.write("vm", df)
    got = store.query("vm")
    assert got.x.isna().tolist() == [False, True, False] and str(got.n.dtype) == "Int64" and got.n.tolist()[1:] == [2, 3]


def test_tag_filters_ranges_limit(store):
    df = fleet()
    store.write("vm", df)
    one = store.query("vm", ["cpu_pct"], where={"server": "s1"})
    assert one.server.unique().tolist() == ["s1"] and len(one) == 120
    two = store.query("vm", where={"server": ["s0", "s2"], "host": "h0"})
    assert sorted(two.server.unique()) == ["s0", "s2"]
    assert len(store.query("vm", where={"server": "nope"})) == 0
    assert len(store.query("vm", where={"no_such_tag": "x"})) == 0
    r = store.query("vm", start=T0 + pd.Timedelta("10s"), stop=T0 + pd.Timedelta("20s"))
    assert len(r) == 2 * 3 and r.time.min() == T0 + pd.Timedelta("10s")
    assert len(store.query("vm", start=T0 + pd.Timedelta("1h"))) == 0                  # empty range
    assert len(store.query("vm", start=T0 + pd.Timedelta("1h"), stop=T0)) == 0          # reversed range
    lim = store.query("vm", limit=4)
    assert len(lim) == 4 and lim.time.is_monotonic_increasing
    assert len(store.query("no_such_measurement")) == 0


@pytest.mark.parametrize("agg", ["mean", "max", "min", "last", "count"])
def test_downsample_matches_pandas(store, agg):
    df = fleet(n=200, step="7s")
    store.write("vm", df)
    got = store.query("vm", ["cpu_pct", "procs"], every="1min", agg=agg)
    ref = (df.set_index("time").groupby(["server", "host"])[["cpu_pct", "procs"]].resample("1min").agg(agg)
           .reset_index().dropna())
    ref = sort(ref)
    got = sort(got)
    assert len(got) == len(ref)
    assert (got.time.array.asi8 == ref.time.dt.as_unit("ns").array.asi8).all()
    assert (got.server.to_numpy() == ref.server.to_numpy()).all()
    np.testing.assert_allclose(got.cpu_pct.to_numpy(float), ref.cpu_pct.to_numpy(float), rtol=1e-12)
    np.testing.assert_allclose(got.procs.to_numpy(float), ref.procs.to_numpy(float), rtol=1e-12)


def test_downsample_booleans(store):
    store.write("vm", fleet(n=30))
    assert "up" not in store.query("vm", every="1min").columns
    with pytest.raises(ValidationError, match="is boolean"):
        store.query("vm", ["up"], every="1min", agg="max")
    c = store.query("vm", ["up"], every="1min", agg="count")
    assert c.up.sum() == 90


def test_latest_series_xarray(store):
    df = fleet()
    store.write("vm", df)
    lt = store.latest("vm")
    assert lt.server.tolist() == ["s0", "s1", "s2"] and (lt.time == df.time.max()).all()
    last = df[df.time == df.time.max()].sort_values("server")
    assert lt.cpu_pct.tolist() == last.cpu_pct.tolist()
    assert store.series("vm").to_dict("records") == [{"host": "h0", "server": "s0"}, {"host": "h0", "server": "s2"},
                                                     {"host": "h1", "server": "s1"}]
    ds = store.to_xarray("vm", ["cpu_pct"], every="1min")
    assert dict(ds.sizes) == {"server": 3, "time": 10}
    ref = df[df.server == "s1"].set_index("time").cpu_pct.resample("1min").mean().to_numpy()
    np.testing.assert_allclose(ds.cpu_pct.sel(server="s1").to_numpy(), ref, rtol=1e-12)
    with pytest.raises(ValidationError, match="not a tag"):
        store.latest("vm", by="nope")
    assert len(store.latest("nothing")) == 0


def test_retain_and_downsample_into(store):
    df = fleet(n=240)   # 20 minutes
    store.write("vm", df)
    assert store.downsample_into("vm", "vm_1m", every="1min") == 3 * 20
    assert store.downsample_into("vm", "vm_1m", every="1min") == 3 * 20
    assert len(store.query("vm_1m", ["cpu_pct"])) == 3 * 20
    store.retain(T0 + pd.Timedelta("10min"), measurement="vm")
    assert store.query("vm").time.min() == T0 + pd.Timedelta("10min")
    assert len(store.query("vm_1m", ["cpu_pct"])) == 3 * 20


def test_whole_batch_rejected(store):
    store.write("vm", fleet(n=10))
    before = store.query("vm")
    bad = fleet(n=10, seed=1, t0=T0 + pd.Timedelta("1h")).assign(new_f=1.0)
    bad.loc[7, "cpu_pct"] = np.inf
    with pytest.raises(ValidationError):
        store.write("vm", bad)
    changed = fleet(n=10, seed=1, t0=T0 + pd.Timedelta("1h")).assign(procs=lambda d: d.procs.astype(float))
    with pytest.raises(ValidationError, match="holds int values; this batch has float"):
        store.write("vm", changed)
    pd.testing.assert_frame_equal(store.query("vm"), before)


@pytest.mark.parametrize("frame, message", [
    (lambda d: d.drop(columns="time"), "no 'time' column"),
    (lambda d: d.assign(time=d.time.dt.tz_localize(None)), "naive"),
    (lambda d: d.assign(state="ok"), "must hold numbers"),
    (lambda d: d.assign(cpu_pct=np.nan), "NaN"),
    (lambda d: d.assign(**{"dir\\": "x"}), "backslash"),
    (lambda d: d.drop(columns=["cpu_pct", "procs", "up"]), "no field columns"),
])
def test_bad_input(store, frame, message):
    with pytest.raises(ValidationError, match=message):
        store.write("vm", frame(fleet(n=3)), tags=["server", "host"] if "numbers" in message else None)
    assert store.measurements() == []


@pytest.mark.parametrize("value", ["a\nb", "a\tb", "a\rb", "a\x00b", "dir\\", "<img src=x onerror=alert(1)>"])
def test_tag_values_one_rule(store, value):
    "Both backends take the same tag values: markup is data; control characters and a dangling backslash are refused, naming the tag."
    frame = fleet(n=3).assign(server=value)
    if value.startswith("<"):
        store.write("vm", frame)
        assert set(store.query("vm").server) == {value}
    else:
        with pytest.raises(ValidationError, match="newline|backslash") as e:
            store.write("vm", frame)
        assert e.value.field == "server" and store.measurements() == []


def test_bad_query_parameters(store):
    store.write("vm", fleet(n=3))
    with pytest.raises(ValidationError, match="every='banana': expected a duration"):
        store.query("vm", every="banana")
    with pytest.raises(ValidationError, match="expected one of"):
        store.query("vm", every="1min", agg="median")
    with pytest.raises(ValidationError, match="no field 'nope'"):
        store.query("vm", ["nope"])
    with pytest.raises(ValidationError, match="naive"):
        store.query("vm", start=pd.Timestamp("2025-01-01").to_pydatetime())


def test_records(store):
    for i in range(5):
        store.put_record("alert", f"a{i}", {"id": f"a{i}", "level": "critical" if i % 2 else "warning", "ack": i == 3})
    store.put_record("job", "j", {"id": "j"})
    assert [r["id"] for r in store.list_records("alert")] == ["a4", "a3", "a2", "a1", "a0"]
    assert [r["id"] for r in store.list_records("alert", where={"level": "critical"})] == ["a3", "a1"]
    assert [r["id"] for r in store.list_records("alert", where={"ack": True})] == ["a3"]
    assert len(store.list_records("alert", limit=2, since=T0)) == 2
    store.put_record("alert", "a0", {"id": "a0", "level": "cleared"})
    assert store.get_record("alert", "a0") == {"id": "a0", "level": "cleared"}
    assert store.delete_record("alert", "a0") and store.get_record("alert", "a0") is None
    assert not store.delete_record("alert", "a0")
    with pytest.raises(ValidationError):
        store.put_record("alert", "x", {"f": object()})


def test_threads(store):
    errors = []

    def work(i):
        try:
            for j in range(5):
                store.write("vm", fleet(n_servers=1, n=20, seed=i * 10 + j, t0=T0 + pd.Timedelta(hours=i * 10 + j)).assign(server=f"w{i}"))
                store.query("vm", ["cpu_pct"], every="1min")
                store.put_record("job", f"{i}-{j}", {"i": i})
        except Exception as e:  # noqa: BLE001
            errors.append(e)
    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    [t.start() for t in ts]
    [t.join() for t in ts]
    assert not errors
    assert len(store.query("vm")) == 4 * 5 * 20 and len(store.list_records("job")) == 20


def test_records_in_duckdb_file_with_influx(influx, tmp_path):
    path = str(tmp_path / "rec.duckdb")
    with open_store(influx.settings(path=path)) as s:
        s.put_record("job", "1", {"ok": True})
    with open_store(BASE.updated({"store": {"path": path}})) as s:
        assert s.get_record("job", "1") == {"ok": True}


# ---- InfluxDB answers ------------------------------------------------------------------------------------------

def test_influx_down_is_unavailable(tmp_path):
    s = BASE.updated({"store": {"backend": "influxdb", "influx_url": f"http://127.0.0.1:{free_port()}", "path": ":memory:"},
                      "collect": {"retry_max_sec": "0.5s"}})
    with open_store(s) as st:
        with pytest.raises(StoreUnavailable) as e:
            st.write("vm", fleet(n=2))
        assert e.value.status_code == 503
        assert not st.health()


def test_influx_auth_and_413_split():
    with InfluxServer(http={"auth-enabled": "true", "max-body-size": "20000"}) as srv:
        requests.post(srv.url + "/query", data={"q": "CREATE USER admin WITH PASSWORD 'pw' WITH ALL PRIVILEGES"}).raise_for_status()
        requests.post(srv.url + "/query", params={"u": "admin", "p": "pw"}, data={"q": "CREATE DATABASE qdash"}).raise_for_status()
        bad = srv.settings(load_settings(environ={"QDASH_INFLUX_PASSWORD": "wrong"})).updated({"store": {"influx_username": "admin"}})
        with open_store(bad) as st, pytest.raises(StoreAuthError, match="refused the credentials"):
            st.write("vm", fleet(n=2))
        good = srv.settings(load_settings(environ={"QDASH_INFLUX_PASSWORD": "pw"})).updated({"store": {"influx_username": "admin"}})
        df = fleet(n_servers=5, n=1000)
        lines = to_line_protocol("raw", df)
        r = requests.post(srv.url + "/write", params={"db": "qdash", "u": "admin", "p": "pw"}, data="\n".join(lines).encode())
        assert r.status_code == 413   # too large as one request: the store must split it
        with open_store(good) as st:
            assert st.write("vm", df) == 5000
            assert len(st.query("vm", ["cpu_pct"])) == 5000


def test_influx_restart_same_port(influx):
    with open_store(influx.settings()) as st:
        st.write("restart", fleet(n=2))
        port = influx.port
        influx.stop()
        assert not st.health()
        influx.start()
        assert influx.port == port and st.health()
        assert len(st.query("restart")) == 6


# ---- line protocol properties ----------------------------------------------------------------------------------

_chars = st.characters(codec="utf-8", exclude_categories=["Cs", "Cc"])
_special = st.sampled_from([",", "=", " ", '"', "'", "\\", "\\\\", "é", "☃", "𝔘", "#", "*", "."])
_text = st.lists(st.one_of(_chars, _special), min_size=1, max_size=8).map("".join)


def _ok(s):
    try:
        check_name(s)
        return True
    except ValidationError:
        return False


names = _text.filter(_ok).filter(lambda s: s != "time")
values = st.one_of(st.floats(allow_nan=False, allow_infinity=False), st.integers(-2**63, 2**63 - 1), st.booleans())


@st.composite
def points(draw):
    m = draw(_text.filter(lambda s: _ok(s) and not s.startswith("#")))
    keys = draw(st.lists(names, min_size=1, max_size=5, unique_by=str.lower))
    n_tags = draw(st.integers(0, len(keys) - 1))
    tags = {k: draw(names) for k in keys[:n_tags]}
    fields = {k: draw(values) for k in keys[n_tags:]}
    t = draw(st.integers(0, 1_735_689_600 * 10**9))   # 1970..2025: the store refuses points past [store] max_future
    return m, tags, fields, t


def _frame(tags, fields, t):
    d = {"time": pd.Series([pd.Timestamp(t, unit="ns", tz="UTC")]).dt.as_unit("ns")}
    d.update({k: pd.Series([v], dtype="str") for k, v in tags.items()})
    d.update({k: [v] for k, v in fields.items()})
    return pd.DataFrame(d)


@settings(max_examples=1000, deadline=None)
@given(points())
@example(("\xa0#", {}, {"0": 0.0}, 0))          # a name starting with a non-ASCII blank and '#' is not a comment
def test_line_protocol_parse_round_trip(p):
    m, tags, fields, t = p
    (line,) = to_line_protocol(m, _frame(tags, fields, t), list(tags))
    assert parse_line_protocol(line) == [{"measurement": m, "tags": tags, "fields": fields, "time": t}]


_counter = itertools.count()


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(p=points())
def test_influx_round_trip(influx_store, p):
    m, tags, fields, t = p
    m = f"h{next(_counter)} {m}"   # one measurement per example: field kinds of earlier examples do not interfere
    influx_store.write(m, _frame(tags, fields, t), list(tags))
    got = influx_store.query(m)
    assert len(got) == 1, (m, got)
    row = got.iloc[0]
    assert row.time.value == t
    assert {k: row[k] for k in tags} == tags
    for k, v in fields.items():
        assert type(row[k].item() if hasattr(row[k], "item") else row[k]) is type(v) and row[k] == v, (k, v, row[k])


@pytest.fixture(scope="module")
def influx_store(influx):
    with open_store(influx.settings().updated({"store": {"influx_database": "hypo"}})) as s:
        yield s


bad_names = st.one_of(
    st.tuples(_text, st.sampled_from(["\n", "\r", "\t", "\x00"]), _text).map("".join),
    st.tuples(_text, st.sampled_from(["\\", "\\\\\\"])).map("".join).filter(lambda s: not _ok(s)),
)


@settings(max_examples=200, deadline=None)
@given(bad=bad_names, where=st.sampled_from(["measurement", "tag", "tag value", "field"]))
def test_unencodable_refused(bad, where):
    m, tags, fields = "m", {"t": "v"}, {"f": 1.0}
    if where == "measurement":
        m = bad
    elif where == "tag":
        tags = {bad: "v"}
    elif where == "tag value":
        tags = {"t": bad}
    else:
        fields = {bad: 1.0}
    with pytest.raises(ValidationError):
        to_line_protocol(m, _frame(tags, fields, 0), list(tags))


def test_unencodable_never_sent(influx_store):
    before = influx_store.measurements()
    for bad in ["web\n1", "dir\\", "a\\ b"]:
        with pytest.raises(QdashError):
            influx_store.write("never", {"time": T0, "server": bad, "x": 1.0})
    with pytest.raises(ValidationError, match="NaN"):
        influx_store.write("never", {"time": T0, "server": "a", "x": float("nan")})
    assert influx_store.measurements() == before


def test_parse_errors_name_the_line():
    with pytest.raises(ValidationError, match="line 3"):
        parse_line_protocol("a x=1\n\nb,t=1 y=oops 5\n")
    with pytest.raises(ValidationError, match="line 1"):
        parse_line_protocol("a x=nan")
    assert parse_line_protocol(b'a,t=1 s="q\\"x",u=3u,b=T') == [
        {"measurement": "a", "tags": {"t": "1"}, "fields": {"s": 'q"x', "u": 3, "b": True}, "time": None}]
