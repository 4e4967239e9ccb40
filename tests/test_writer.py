"""The Writer against a real InfluxDB that goes away: no loss, exactly once, across a process restart; exact overflow counts."""
import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time

import numpy as np
import pandas as pd
import pytest

from qdash.collect.service import Writer
from qdash.config import load_settings
from qdash.store import open_store
from qdash.testing import InfluxServer

T0 = 1_717_200_000  # epoch seconds; each point's time is T0 + seq ms, unique per (server, time)


def frame(seqs):
    seqs = np.asarray(seqs, dtype=np.int64)
    return pd.DataFrame({"time": pd.to_datetime(T0 * 1000 + seqs, unit="ms", utc=True),
                         "server": [f"s{k % 10}" for k in seqs], "seq": seqs})


def settings_for(srv, tmp_path):
    base = load_settings(environ={}).updated({"collect": {"retry_max_sec": "500ms"}, "server": {"graceful_shutdown_timeout": "10s"}})
    return srv.settings(base, path=str(tmp_path / "records.duckdb"))


class Producer(threading.Thread):
    "Puts 50 points every 50 ms (1,000 points/s) into a writer, numbering them from `start`."
    def __init__(self, writer, start=0):
        super().__init__(daemon=True)
        self.writer, self.next, self.halt = writer, start, threading.Event()
    def run(self):
        t = time.monotonic()
        while not self.halt.is_set():
            self.writer.put("t", frame(range(self.next, self.next + 50)))
            self.next += 50
            t += 0.05
            self.halt.wait(max(0.0, t - time.monotonic()))
    def stop(self):
        self.halt.set(); self.join()


def assert_exactly_once(store, expected):
    df = store.query("t", fields=["seq"])
    assert len(df) == len(expected), (len(df), len(expected))
    assert not df.duplicated(["server", "time"]).any()
    assert sorted(df.seq.astype(int)) == sorted(expected)


def wait_for(cond, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond(): return True
        time.sleep(0.05)
    return False


@pytest.fixture
def srv():
    s = InfluxServer().start()
    yield s
    s.close()


def test_no_loss_across_a_10s_outage(srv, tmp_path):
    s = settings_for(srv, tmp_path)
    store = open_store(s)
    w = Writer(store, s, spool_dir=tmp_path / "spool", batch_max_sec=0.2, retry_max_sec=1.0).start()
    p = Producer(w); p.start()
    time.sleep(1.5)
    srv.stop()
    time.sleep(10)
    assert w.stats["spooled"] > 0 and not w.stats["store_up"]
    srv.start()
    time.sleep(1.5)
    p.stop()
    assert w.flush(60)
    st = w.stop(10)
    assert st["dropped"] == 0 and st["rejected"] == 0 and st["replayed"] > 0 and st["retried"] > 0
    assert st["accepted"] == st["put"] == p.next >= 12_500          # 1,000 points/s for 13 s and more
    assert_exactly_once(store, range(p.next))


WRITER_PROCESS = textwrap.dedent("""
    import json, signal, sys, time
    from qdash.collect.service import Writer
    from qdash.config import load_settings
    from qdash.store import open_store
    sys.path.insert(0, {tests!r})
    from test_writer import frame
    s = load_settings(environ={{}}).updated({{"collect": {{"retry_max_sec": "500ms"}},
        "store": {{"backend": "influxdb", "influx_url": {url!r}, "path": {path!r}}}}})
    w = Writer(open_store(s), s, spool_dir={spool!r}, batch_max_sec=0.2, retry_max_sec=1.0).start()
    halt = []
    signal.signal(signal.SIGTERM, lambda *a: halt.append(1))
    n, t = 0, time.monotonic()
    print("ready", flush=True)
    while not halt:
        w.put("t", frame(range(n, n + 50))); n += 50
        t += 0.05; time.sleep(max(0.0, t - time.monotonic()))
    st = w.stop(10)
    print(json.dumps({{"sent": n, **{{k: v for k, v in st.items() if k != "last_error"}}}}), flush=True)
""")


def test_no_loss_with_a_process_restart_during_the_outage(srv, tmp_path):
    spool = str(tmp_path / "spool")
    code = WRITER_PROCESS.format(tests=os.path.dirname(__file__), url=srv.url, path=str(tmp_path / "a.duckdb"), spool=spool)
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "ready"
    time.sleep(1.5)
    t_down = time.monotonic()
    srv.stop()
    time.sleep(4)
    proc.send_signal(signal.SIGTERM)                      # the first process stops in the middle of the outage
    out, _ = proc.communicate(timeout=60)
    first = json.loads(out.strip().splitlines()[-1])
    assert first["dropped"] == 0 and first["spool_points"] > 0 and first["put"] == first["sent"]
    assert first["accepted"] + first["spool_points"] == first["sent"]

    s = settings_for(srv, tmp_path)                       # the restarted process: same spool directory
    store = open_store(s)
    w = Writer(store, s, spool_dir=spool, batch_max_sec=0.2, retry_max_sec=1.0).start()
    p = Producer(w, start=10_000_000); p.start()
    time.sleep(max(0.0, 10 - (time.monotonic() - t_down)))
    srv.start()
    time.sleep(1.5)
    p.stop()
    assert w.flush(60)
    st = w.stop(10)
    assert st["dropped"] == 0 and st["rejected"] == 0
    assert st["replayed"] >= first["spool_points"]
    assert_exactly_once(store, list(range(first["sent"])) + list(range(10_000_000, p.next)))


def test_overflow_drops_oldest_first_and_counts_exactly(srv, tmp_path):
    s = settings_for(srv, tmp_path)
    store = open_store(s)
    srv.stop()
    w = Writer(store, s, queue_max=200, spool=False, batch_max_lines=50, batch_max_sec=0.05,
               retry_base_sec=0.05, retry_max_sec=0.2).start()
    for k in range(0, 1000, 10):
        w.put("t", frame(range(k, k + 10)))
        time.sleep(0.002)
    assert wait_for(lambda: w.stats["retried"] >= 2)
    st = w.stats
    assert st["queue_depth"] == 200 and st["dropped"] == 800
    srv.start()
    assert w.flush(60)
    st = w.stop(10)
    df = store.query("t", fields=["seq"])
    present = sorted(df.seq.astype(int))
    missing = sorted(set(range(1000)) - set(present))
    assert st["dropped"] == len(missing) == 800 and st["accepted"] == len(present) == 200
    # oldest first: what survives is the newest points, plus at most the one batch that was mid-write when
    # the queue overflowed (never dropped under the writer's feet)
    tail = [x for x in present if x >= missing[-1]]
    head = [x for x in present if x < missing[-1]]
    # (which batch that is depends on when the writer first tried: under load it may not be the first one)
    assert tail == list(range(1000 - len(tail), 1000)) and len(head) <= 50
    assert head == list(range(head[0], head[0] + len(head))) if head else True
