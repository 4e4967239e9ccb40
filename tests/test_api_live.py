"A hub in its own process on a free port (simulated fleet), driven by qdash.client and by `websockets` as an outside client."
import asyncio
import base64
import json
import os
import socket
import struct
import threading
import time
from pathlib import Path

import httpx
import orjson
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from qdash.testing import HubProcess
from qdash.client import Client, HubError
from qdash.config import NotFound, ValidationError, load_settings

ROOT = Path(__file__).resolve().parent.parent
MAX_WS = 6


@pytest.fixture(scope="module")
def hub():
    env = {"QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "8", "QDASH__SERVER__WS_QUEUE": "4",
           "QDASH__SERVER__MAX_WS_CLIENTS": str(MAX_WS), "QDASH__SERVER__UPDATE_INTERVAL": "300ms",
           "QDASH__LIMITS__DEFAULT": "100000/minute", "QDASH__LIMITS__FEED_DATA": "100000/minute",
           "QDASH__LIMITS__FEED_MAX_BYTES": "4000000"}
    with HubProcess(env) as h:
        yield h


def ws_url(hub, path): return f"ws://127.0.0.1:{hub.port}{path}"


def headers(hub): return {"X-API-Key": hub.api_key}


def test_served_spec_is_the_checked_in_one(hub):
    r = httpx.get(hub.url + "/docs/openapi.json")
    assert r.status_code == 200
    assert r.json() == json.loads((ROOT / "api" / "openapi.json").read_text()), "api/openapi.json is stale: run tools/openapi.py"


def test_key_file_written_0600(hub):
    assert oct((hub.dir / "api_key").stat().st_mode & 0o777) == "0o600"
    assert "generated an API key" in (hub.dir / "hub.log").read_text() and hub.api_key not in (hub.dir / "hub.log").read_text()


def test_client_routes(hub):
    with Client(hub.url, hub.api_key) as c:
        assert c.health()["service"] == "qdash"
        assert c.status()["uptime_seconds"] >= 0
        assert c.api_status()["backend_health"]["store"] is True
        m = c.metrics()
        assert m["memory_usage"] > 10 and m["source_stats"].get("simulator") == 8
        assert c.telemetry_status()["running"] is True
        assert len(c.vms()) == 8
        assert c.telemetry_config()["collect"]["simulator_servers"] == 8
        assert all("worker" in w for w in c.workers())        # the job pool's heartbeats (tests/test_seeds.py checks them)
        c.feed([{"server": "cli-1", "time": "2025-01-15T10:00:00Z", "cpu_pct": 1.0},
                {"server": "cli-1", "time": "2025-01-15T10:00:01Z", "cpu_pct": 2.0}])
        assert c.telemetry("cli-1")["vm"]["cpu_pct"] == 2.0
        df = c.history("vm", server="cli-1")
        assert list(df.cpu_pct) == [1.0, 2.0] and str(df.time.dt.tz) == "UTC"
        ds = c.history("vm", server="cli-1", as_="xarray")
        assert dict(ds.sizes) == {"server": 1, "time": 2} and float(ds.cpu_pct.sum()) == 3.0
        deadline = time.monotonic() + 10
        while c.history("vm", limit=1).empty and time.monotonic() < deadline: time.sleep(0.2)
        assert {"server", "time"} <= set(c.history("vm", limit=5).columns)
        with pytest.raises(NotFound):
            c.telemetry("nobody")
        with pytest.raises(NotFound, match="measurement='mv'.*it has .*vm"):   # a misspelling is an error naming what exists
            c.history("mv")
        with pytest.raises(NotFound, match="server='cli-2'"):
            c.history("vm", server="cli-2")
        ds = c.history("vm", server="cli-1", start="2024-01-01T00:00:00Z", stop="2024-01-02T00:00:00Z", as_="xarray")
        assert ds.sizes.get("time", 0) == 0                 # nothing in the range: an empty Dataset
        with pytest.raises(ValidationError) as e:
            c.feed([{"server": "ok", "cpu_pct": 1}, {"server": "bad"}])
        assert [x["index"] for x in e.value.errors] == [1]
    with pytest.raises(HubError) as e, Client(hub.url, "wrong key") as c:
        c.metrics()
    assert e.value.status_code == 401


def test_default_client_finds_hub_and_key(hub):
    env = {"QDASH__SERVER__PORT": str(hub.port), "QDASH__AUTH__API_KEY_FILE": str(hub.dir / "api_key")}
    (hub.dir / "empty.ini").write_text("")
    with Client(settings=load_settings(hub.dir / "empty.ini", environ=env)) as c:
        assert c.url == hub.url and c.api_status()["backend_health"]["store"] is True


def test_feed_too_large_without_key_is_413(hub):
    r = httpx.post(hub.url + "/feed/data", content=b"[" + b" " * 4_100_000 + b"]")
    assert r.status_code == 413 and r.json()["error"] == "payload_too_large"


def test_xss_and_odd_names_come_back_unchanged(hub):
    names = ["<script>alert(document.cookie)</script>", "'\"><svg/onload=alert(1)>", "x\u2028y", "tab\\tname ; rm -rf /",
             "a/b c%2F"]
    with Client(hub.url, hub.api_key) as c:
        c.feed([{"server": n, "cpu_pct": 5.0, "label": n} for n in names])
        got = c.telemetry()
        for n in names:   # text is data (control characters are refused, see test_api.py); the client percent-encodes ids
            assert got[n]["vm"]["label"] == n and c.telemetry(n)["vm"]["label"] == n
    r = httpx.get(hub.url + "/telemetry", headers=headers(hub))
    assert r.headers["content-type"] == "application/json"


async def _first(ws, timeout):
    return orjson.loads(await asyncio.wait_for(ws.recv(), timeout))


def test_ws_telemetry_arrives_within_2s(hub):
    async def go():
        async with connect(ws_url(hub, "/ws/telemetry"), additional_headers=headers(hub), max_size=2**24) as ws:
            msg = await _first(ws, 2.0)
            key = "worker" if msg["measurement"] == "worker" else "server"   # a job worker's heartbeat is keyed by its worker id
            assert msg["measurement"] and msg["records"] and key in msg["records"][0]
        async with connect(ws_url(hub, f"/ws/telemetry?api_key={hub.api_key}")) as ws:   # browsers send the key as a parameter
            assert (await _first(ws, 2.0))["records"]
        async with connect(ws_url(hub, "/ws"), additional_headers=headers(hub)) as ws:
            m = await _first(ws, 2.0)
            assert m["active_connections"] >= 1 and "http_requests" in m
    asyncio.run(go())


def test_ws_one_server(hub):
    async def go():
        async with connect(ws_url(hub, "/ws/telemetry/ws%3Cone%3E"), additional_headers=headers(hub)) as ws:
            await asyncio.sleep(0.2)
            async with httpx.AsyncClient() as c:
                await c.post(hub.url + "/feed/data", headers=headers(hub), content=orjson.dumps(
                    [{"server": "ws<one>", "cpu_pct": 7.0}, {"server": "ws-two", "cpu_pct": 8.0}]))
            msg = await _first(ws, 5.0)
            assert [r["server"] for r in msg["records"]] == ["ws<one>"]
    asyncio.run(go())


def test_ws_needs_key(hub):
    async def go():
        for extra in ({}, {"additional_headers": {"X-API-Key": "nope"}}):
            with pytest.raises(InvalidStatus) as e:
                async with connect(ws_url(hub, "/ws/telemetry"), **extra):
                    pass
            assert e.value.response.status_code == 401
    asyncio.run(go())


def test_ws_max_clients(hub):
    async def go():
        clients = [await connect(ws_url(hub, "/ws"), additional_headers=headers(hub)) for _ in range(MAX_WS)]
        try:
            extra = await connect(ws_url(hub, "/ws"), additional_headers=headers(hub))
            with pytest.raises(ConnectionClosed):
                while True: await asyncio.wait_for(extra.recv(), 5)
            assert extra.close_code == 1013 and "max_ws_clients" in extra.close_reason
        finally:
            for c in clients: await c.close()
    asyncio.run(go())


def raw_ws(port, path, key):
    "A WebSocket client that never reads: a tiny receive buffer, the handshake, nothing more."
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    k = base64.b64encode(os.urandom(16)).decode()
    s.sendall((f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               f"Sec-WebSocket-Key: {k}\r\nSec-WebSocket-Version: 13\r\nX-API-Key: {key}\r\n\r\n").encode())
    return s


def close_code(s, timeout=30.0):
    "Read a raw WebSocket to its end: the close frame's code, or None if the connection was cut without one."
    s.settimeout(timeout)
    buf = bytearray()

    def need(k):
        while len(buf) < k:
            try: chunk = s.recv(1 << 20)
            except ConnectionResetError: return False
            if not chunk: return False
            buf.extend(chunk)
        return True
    while b"\r\n\r\n" not in buf:
        if not need(len(buf) + 1): return None
    del buf[:buf.index(b"\r\n\r\n") + 4]
    while True:
        if not need(2): return None
        n = buf[1] & 0x7F
        hl = 2 + (2 if n == 126 else 8 if n == 127 else 0)
        if not need(hl): return None
        plen = struct.unpack(">H", buf[2:4])[0] if n == 126 else struct.unpack(">Q", buf[2:10])[0] if n == 127 else n
        if not need(hl + plen): return None
        if buf[0] & 0x0F == 0x8: return struct.unpack(">H", bytes(buf[hl:hl + 2]))[0]
        del buf[:hl + plen]


def test_slow_client_is_dropped_others_keep_receiving(hub):
    big = orjson.dumps([{"server": f"big-{i}", "cpu_pct": float(i), "pad": "x" * 200} for i in range(12000)])
    assert len(big) < 4_000_000

    async def go():
        got = []
        async with connect(ws_url(hub, "/ws/telemetry"), additional_headers=headers(hub), max_size=2**25) as fast:
            slow = raw_ws(hub.port, "/ws/telemetry", hub.api_key)
            async def read_fast():
                while True:
                    msg = await fast.recv()
                    got.append((len(msg), '"after"' in (msg if isinstance(msg, str) else msg.decode())))
            reader = asyncio.ensure_future(read_fast())
            await asyncio.sleep(0.3)
            async with httpx.AsyncClient(timeout=30) as c:
                before = (await c.get(hub.url + "/api/metrics", headers=headers(hub))).json()["ws_slow_disconnects"]
                sent = 0
                for _ in range(40):                           # bounded: a few batches overflow socket buffers and the queue
                    r = await c.post(hub.url + "/feed/data", headers=headers(hub), content=big)
                    assert r.status_code == 200
                    sent += 1
                    await asyncio.sleep(0.4)
                    m = (await c.get(hub.url + "/api/metrics", headers=headers(hub))).json()
                    if m["ws_slow_disconnects"] > before: break
                assert m["ws_slow_disconnects"] > before, "the slow client was never dropped"
                code = await asyncio.to_thread(close_code, slow)
                assert code == 1008
                # the fast client gets every big batch, in order, and keeps receiving after the slow one is gone
                await c.post(hub.url + "/feed/data", headers=headers(hub), content=orjson.dumps([{"server": "after", "cpu_pct": 1.0}]))
                for _ in range(120):                          # until the small batch posted last has come (it comes after every big one)
                    if any(a for _, a in got): break
                    await asyncio.sleep(0.25)
                assert any(a for _, a in got), "the fast client stopped receiving"
                assert sum(1 for size, _ in got if size > 1_000_000) == sent
            reader.cancel()
        slow.close()
    asyncio.run(go())


def test_client_stream_reconnects_after_restart(hub):
    async def go():
        c = Client(hub.url, hub.api_key)
        states, msgs = [], []
        async def consume():
            async for m in c.stream("/ws/telemetry", max_backoff=1.0, on_status=lambda *s: states.append(s)):
                msgs.append((sum(s == "connected" for s, _ in states), m))
        task = asyncio.ensure_future(consume())
        try:
            for _ in range(100):
                if msgs: break
                await asyncio.sleep(0.1)
            assert msgs and states == [("connected", "")]
            await asyncio.to_thread(hub.restart)
            for _ in range(150):
                if any(n == 2 for n, _ in msgs): break
                await asyncio.sleep(0.1)
            assert any(n == 2 for n, _ in msgs), states
            # connected, then one or more failed attempts, each with its reason, then connected again
            assert states[0][0] == states[-1][0] == "connected" and sum(s == "connected" for s, _ in states) == 2, states
            drops = states[1:-1]
            assert drops and all(s == "reconnecting" and "/ws/telemetry" in why for s, why in drops), states
        finally:
            task.cancel()
            c.close()
    asyncio.run(go())


def test_client_stream_waits_for_a_hub_that_is_half_up(tmp_path):
    "A port that takes the connection and closes it before the handshake (a hub starting, a port being taken over) is retried."
    half = socket.create_server(("127.0.0.1", 0))
    port = half.getsockname()[1]

    def refuse():
        while True:
            try: conn, _ = half.accept()
            except OSError: return
            conn.close()
    threading.Thread(target=refuse, daemon=True).start()

    key = "half-up-test-key"
    (tmp_path / "api_key").write_text(key + "\n")            # the key the hub will read on its start
    (tmp_path / "api_key").chmod(0o600)

    async def go():
        c = Client(f"http://127.0.0.1:{port}", key)
        states, msgs = [], []
        async def consume():
            async for m in c.stream("/ws", max_backoff=0.5, on_status=lambda *s: states.append(s)):
                msgs.append(m)
        task = asyncio.ensure_future(consume())
        try:
            for _ in range(100):
                if len(states) >= 3 or task.done(): break
                await asyncio.sleep(0.05)
            assert not task.done(), task.exception()
            assert [s for s, _ in states[:3]] == ["reconnecting"] * 3 and "InvalidMessage" in states[0][1], states
            half.close()
            hub = await asyncio.to_thread(HubProcess({"QDASH__COLLECT__SOURCES": "", "QDASH__SERVER__UPDATE_INTERVAL": "300ms"},
                                                     data_dir=tmp_path, port=port).start)
            try:
                for _ in range(200):
                    if msgs: break
                    await asyncio.sleep(0.1)
                assert msgs and "jobs_active" in msgs[0] and ("connected", "") in states, states[-3:]
            finally:
                await asyncio.to_thread(hub.stop)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
            c.close()
    asyncio.run(go())


def test_spec_says_what_each_route_does_and_shows_a_feed_record(hub):
    "Issue 16 item 11: a summary describes its route (not the seed it came from); /feed/data documents a record and an example the hub takes."
    import jsonschema, re
    spec = httpx.get(hub.url + "/docs/openapi.json").json()
    ops = [(m.upper(), p, op) for p, item in spec["paths"].items() for m, op in item.items()]
    assert [(m, p) for m, p, op in ops if not op.get("summary")] == []
    assert [(m, p, op["summary"]) for m, p, op in ops if re.search(r"seed\s*\d", op["summary"], re.I)] == []
    body = spec["paths"]["/feed/data"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record, example = body["items"], body["example"]
    assert {"server", "server_name", "time", "timestamp"} <= set(record["properties"]) and record.get("description")
    assert len(example) >= 1
    for rec in example: jsonschema.Draft4Validator(record).validate(rec)   # a record as the schema says (3.0's draft-4 dialect)
    r = httpx.post(hub.url + "/feed/data", json=example, headers=headers(hub), timeout=30)
    assert r.status_code == 200, r.text                               # and the hub takes it as documented
