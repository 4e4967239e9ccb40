"""Issue #20 items 8, 12 and 15, through a live hub and raw sockets: slow requests get an absolute deadline, an
unauthenticated body is refused before it is read, connections, WebSocket clients and failed keys are capped per client.

Other client addresses are other loopback addresses (Linux routes all of 127.0.0.0/8 to `lo`), so one test can be
two clients without a proxy in between."""
import asyncio
import os
import socket
import threading
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from qdash.testing import HubProcess

DEADLINE_S = 3          # [server] request_deadline of the hub under test
CONNS = 6               # [limits] connections_per_address
WS_ADDR, WS_KEY = 2, 3  # [limits] ws_per_address, ws_per_key
FAILS = 5               # [limits] auth_failures per minute
SHORT_KEY = "short-key-123"   # 13 characters, in a key file others may read: the hub starts, with two warnings
OTHER_KEY = "wall-viewer-key-0123456789"   # a second key ([auth] keys_file), for the per-key WebSocket cap


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    d = tmp_path_factory.mktemp("guard-hub")
    (d / "api_key").write_text(SHORT_KEY + "\n")
    os.chmod(d / "api_key", 0o644)
    (d / "keys").write_text(f"# name role key\nwall viewer {OTHER_KEY}\n")
    os.chmod(d / "keys", 0o600)
    env = {"QDASH__COLLECT__SOURCES": "", "QDASH__AUTH__KEYS_FILE": str(d / "keys"), "QDASH__SERVER__UPDATE_INTERVAL": "200ms", "QDASH__MODEL__DIR": "no-model",
           "QDASH__SERVER__REQUEST_DEADLINE": f"{DEADLINE_S}s", "QDASH__SERVER__MAX_WS_CLIENTS": "20",
           "QDASH__LIMITS__CONNECTIONS_PER_ADDRESS": str(CONNS), "QDASH__LIMITS__WS_PER_ADDRESS": str(WS_ADDR),
           "QDASH__LIMITS__WS_PER_KEY": str(WS_KEY), "QDASH__LIMITS__AUTH_FAILURES": f"{FAILS}/minute",
           "QDASH__LIMITS__DEFAULT": "100000/minute", "QDASH__LIMITS__FEED_DATA": "100000/minute"}
    with HubProcess(env, data_dir=d) as h:
        yield h


def raw(hub, source="127.0.0.1", timeout=15.0):
    "A TCP connection to the hub from the loopback address `source`."
    s = socket.create_connection(("127.0.0.1", hub.port), timeout=timeout, source_address=(source, 0))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_all(s) -> bytes:
    "What the hub sends until it closes the connection (or the socket's timeout passes)."
    out = bytearray()
    try:
        while chunk := s.recv(65536): out += chunk
    except (ConnectionResetError, TimeoutError, socket.timeout): pass
    return bytes(out)


def trickle(s, first:bytes, pieces, every_s:float, limit_s:float) -> tuple[float, bytes]:
    "Send `first`, then one of `pieces` every `every_s` until the hub closes: (seconds open, what it answered)."
    t0 = time.monotonic()
    s.sendall(first)
    s.settimeout(every_s)
    got = bytearray()
    for p in pieces:
        if time.monotonic() - t0 > limit_s: break
        try:
            chunk = s.recv(65536)
            if not chunk: break
            got += chunk
            s.settimeout(1.0)
            got += read_all(s)
            break
        except (TimeoutError, socket.timeout): pass
        except ConnectionResetError: break
        try: s.sendall(p)
        except (BrokenPipeError, ConnectionResetError): break
    return time.monotonic() - t0, bytes(got)


def status_of(answer:bytes) -> int|None:
    return int(answer.split(b" ", 2)[1]) if answer.startswith(b"HTTP/1.1 ") else None


def test_slowloris_headers_and_bodies_get_an_absolute_deadline(hub):
    "The issue's reproduction: a header line every second (every 5 s in the attack) restarts Sanic's request timeout forever."
    res = {}
    def header_trickle():
        with raw(hub) as s:
            res["headers"] = trickle(s, b"GET /health HTTP/1.1\r\nHost: x\r\n", (b"X-a: b\r\n" for _ in range(1000)), 1.0, 15)
    def body_trickle():   # with the key: the body is allowed, but not forever
        with raw(hub) as s:
            head = f"POST /feed/data HTTP/1.1\r\nHost: x\r\nX-API-Key: {hub.api_key}\r\nContent-Length: 5000\r\n\r\n[".encode()
            res["body"] = trickle(s, head, (b" " for _ in range(1000)), 1.0, 15)
    def silent():         # connects, sends nothing
        with raw(hub) as s:
            res["silent"] = trickle(s, b"", (b"" for _ in range(1000)), 1.0, 15)
    ts = [threading.Thread(target=f) for f in (header_trickle, body_trickle, silent)]
    for t in ts: t.start()
    time.sleep(0.5)
    assert httpx.get(hub.url + "/health", timeout=5).status_code == 200      # the hub answers others meanwhile
    for t in ts: t.join()
    for what, (open_s, _) in res.items():
        assert open_s < DEADLINE_S + 3, f"{what}: the connection stayed open {open_s:.1f}s; [server] request_deadline is {DEADLINE_S}s"
    assert status_of(res["headers"][1]) == 408 and b"request_deadline" in res["headers"][1]
    assert status_of(res["body"][1]) == 408 and b"request_deadline" in res["body"][1]
    cut = [ln for ln in (hub.dir / "hub.log").read_text().splitlines() if "did not finish a request" in ln]
    assert len(cut) == 1 and "127.0.0.1" in cut[0] and "request_deadline" in cut[0]       # three cut, one line


def test_unauthenticated_body_is_refused_before_it_is_read(hub):
    for key in (None, "wrong-key"):
        with raw(hub) as s:
            s.sendall(b"POST /feed/data HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500000\r\n"
                      + (f"X-API-Key: {key}\r\n".encode() if key else b"") + b"\r\n[")   # the body never comes
            s.settimeout(DEADLINE_S - 1)
            t0 = time.monotonic()
            answer = read_all(s)
            assert status_of(answer) == 401, f"key {key}: no answer before the body: {answer[:80]!r}"
            assert time.monotonic() - t0 < 1.5 and b'"unauthorized"' in answer
    ok = httpx.post(hub.url + "/feed/data", headers={"X-API-Key": hub.api_key}, json=[{"server": "g1", "cpu_pct": 1.0}], timeout=10)
    assert ok.status_code == 200 and ok.json()["written"] == 1       # with the key, the body is read as before


def test_connections_per_address_are_capped_others_still_served(hub):
    held = [raw(hub, "127.0.0.3") for _ in range(CONNS)]
    try:
        for s in held: s.sendall(b"GET /hea")          # unfinished requests, inside their deadline
        extra = raw(hub, "127.0.0.3", timeout=5)
        t0 = time.monotonic()
        answer = read_all(extra)
        extra.close()
        assert time.monotonic() - t0 < 2 and status_of(answer) == 429, answer[:120]
        assert b"connections_per_address" in answer
        assert raw(hub, "127.0.0.3").recv(4096).startswith(b"HTTP/1.1 429")           # and the next, with no new log line
        refusals = [ln for ln in (hub.dir / "hub.log").read_text().splitlines() if "connections_per_address" in ln]
        assert len(refusals) == 1 and "127.0.0.3" in refusals[0]
        other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.4"), timeout=5)
        assert other.get(hub.url + "/health").status_code == 200            # another address is served
    finally:
        for s in held: s.close()
    time.sleep(0.3)
    again = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.3"), timeout=5)
    assert again.get(hub.url + "/health").status_code == 200                # slots come back when connections close


def ws(hub, path="/ws", source="127.0.0.1", key=None):
    "A WebSocket client from the loopback address `source` (its socket bound there), with `key` (default the hub's)."
    return connect(f"ws://127.0.0.1:{hub.port}{path}", additional_headers={"X-API-Key": key or hub.api_key}, local_addr=(source, 0))


async def refused(c, timeout=5.0) -> tuple[int|None, str|None]:
    "Read a WebSocket until it closes, for at most `timeout` seconds: (code, reason), or (None, None) if it stays open."
    async def drain():
        while True: await c.recv()
    try: await asyncio.wait_for(drain(), timeout)
    except ConnectionClosed: return c.close_code, c.close_reason
    except asyncio.TimeoutError: pass
    await c.close()
    return None, None


def no_ws_clients(hub, timeout=5.0):
    "Wait until the hub serves no WebSocket client (those of an earlier test are gone)."
    end = time.monotonic() + timeout
    while httpx.get(hub.url + "/api/metrics", headers={"X-API-Key": hub.api_key}).json()["active_connections"]:
        assert time.monotonic() < end, "WebSocket clients of an earlier test are still served"
        time.sleep(0.1)


def test_ws_per_address_cap_leaves_room_for_another_client(hub):
    no_ws_clients(hub)

    async def go():
        mine = [await ws(hub, source="127.0.0.5") for _ in range(WS_ADDR)]
        try:
            for c in mine: await asyncio.wait_for(c.recv(), 5)           # served
            code, reason = await refused(await ws(hub, source="127.0.0.5"))
            assert code == 1013 and "ws_per_address" in reason and "127.0.0.5" in reason
            async with ws(hub, source="127.0.0.6") as other:            # another client still gets in
                assert (await asyncio.wait_for(other.recv(), 5))
        finally:
            for c in mine: await c.close()
        await asyncio.sleep(0.3)
        async with ws(hub, source="127.0.0.5") as back:                  # and the first one's slots come back
            assert (await asyncio.wait_for(back.recv(), 5))
    asyncio.run(go())


def test_ws_per_key_cap_holds_across_addresses_and_leaves_room_for_another_key(hub):
    "Item 12: one key spread over several addresses is capped per key (not only per address); another key still gets in."
    assert WS_KEY > WS_ADDR     # so that only distinct addresses let one key reach its own cap
    no_ws_clients(hub)

    async def go():
        addrs = [f"127.0.0.{7 + i}" for i in range(WS_KEY)]
        mine = [await ws(hub, source=a) for a in addrs]                    # one key, one address each
        others = []
        try:
            for c in mine: assert await asyncio.wait_for(c.recv(), 5)    # all served: the guard counts each address apart
            for src in ("127.0.0.20", addrs[0]):                           # a fresh address, and one the key already uses
                code, reason = await refused(await ws(hub, source=src))
                assert code == 1013 and "ws_per_key" in reason and hub.api_key not in reason, (src, code, reason)
            others.append(await ws(hub, source="127.0.0.21", key=OTHER_KEY))   # another key, from a new address: served
            others.append(await ws(hub, source=addrs[0], key=OTHER_KEY))       # and from an address the first key holds once
            for c in others: assert await asyncio.wait_for(c.recv(), 5)
            code, reason = await refused(await ws(hub, source=addrs[0], key=OTHER_KEY))   # that address's third: its own cap
            assert code == 1013 and "ws_per_address" in reason and addrs[0] in reason, (code, reason)
        finally:
            for c in mine + others: await c.close()
        await asyncio.sleep(0.3)
        async with ws(hub, source="127.0.0.20") as back:                   # the key's slots come back when its clients leave
            assert await asyncio.wait_for(back.recv(), 5)
    asyncio.run(go())


def test_failed_keys_are_limited_per_address(hub):
    bad = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.30"), timeout=5)
    guesses = [f"guess-{i:04d}" for i in range(FAILS + 3)]
    got = [bad.get(hub.url + "/api/status", headers={"X-API-Key": g}) for g in guesses]
    assert [r.status_code for r in got] == [401] * FAILS + [429] * 3
    assert int(got[-1].headers["retry-after"]) > 0 and "auth_failures" in got[-1].json()["detail"]
    assert bad.get(hub.url + "/api/status", headers={"X-API-Key": hub.api_key}).status_code == 429   # no oracle while blocked
    assert bad.get(hub.url + "/health").status_code == 200                                          # public routes still answer
    other = httpx.Client(transport=httpx.HTTPTransport(local_address="127.0.0.31"), timeout=5)
    assert other.get(hub.url + "/api/status", headers={"X-API-Key": hub.api_key}).status_code == 200
    time.sleep(0.3)
    log = (hub.dir / "hub.log").read_text()
    lines = [ln for ln in log.splitlines() if "127.0.0.30" in ln]
    assert len(lines) == 1 and "auth_failures" in lines[0], lines
    assert not any(g in log for g in guesses) and hub.api_key not in log


def test_start_warns_about_a_readable_or_short_key(hub):
    log = (hub.dir / "hub.log").read_text()
    warn = [ln for ln in log.splitlines() if "API key" in ln]
    assert any("readable by group or others" in ln and "chmod 600" in ln for ln in warn), log[-2000:]
    assert any("13 characters" in ln and "16" in ln for ln in warn), log[-2000:]
    assert SHORT_KEY not in log
