"""Issue #14 item 4, disk fill: libvirt's disk sizes cross-checked with virsh, and a live hub fed a filling disk warns
"Disk full in ..." on disk_used_pct before it reaches 90 %, while a steady disk stays quiet and a full one is a breach."""
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qdash.collect.sources import LibvirtCollector
from qdash.testing import HubProcess, need
import hubhttp
from hubhttp import fed_hub_env, get, next_cycle

FLEET = Path(__file__).parent / "fixtures" / "fleet.xml"          # six test-driver domains, one shut off, 1-2 disks each
URI = f"test://{FLEET.resolve()}"


def domblkinfo(server, device):
    "Capacity and allocation of one disk, in bytes, as `virsh domblkinfo` prints them."
    r = subprocess.run(["virsh", "-c", URI, "domblkinfo", server, device], capture_output=True, text=True, timeout=30)
    assert r.returncode == 0, r.stderr
    return {k: float(v) for k, v in re.findall(r"^(Capacity|Allocation):\s+(\d+)", r.stdout, re.M)}


def test_libvirt_disk_sizes_and_the_fullest_disk_match_virsh():
    need("libvirt"); need("virsh")
    lc = LibvirtCollector(URI, host="hv")
    try: out = dict(lc.collect())
    finally: lc.close()
    disks, vm = out["vm_disk"], out["vm"].set_index("server")
    assert len(disks) == 7 and disks.groupby("server").device.count().max() == 2   # every disk of the five running domains
    for r in disks.itertuples():
        v = domblkinfo(r.server, r.device)
        assert (r.capacity_bytes, r.allocation_bytes) == (v["Capacity"], v["Allocation"]), (r.server, r.device, v)
        assert r.used_pct == pytest.approx(v["Allocation"] / v["Capacity"] * 100, rel=1e-12)
    fullest = disks.groupby("server").used_pct.max()
    assert np.allclose(vm.loc[fullest.index, "disk_used_pct"].astype(float), fullest.astype(float), rtol=1e-12)
    assert pd.isna(vm.loc["batch-01", "disk_used_pct"])                     # shut off: no disk read, no level made up


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    "A hub that only hears fed data, serving the shipped model, with the default thresholds (disk_used_pct:90 among them)."
    with HubProcess(fed_hub_env(tmp_path_factory.mktemp("models"))) as h:
        yield h


def now() -> pd.Timestamp: return pd.Timestamp.now(tz="UTC").floor("s")


def records(server, end, disk, rng, step=300):
    "Seed 004 records of one server ending at `end`, one per `step` seconds: a quiet CPU and memory, and `disk`."
    n = len(disk)
    return [{"server_name": server, "timestamp": (end - pd.Timedelta(seconds=step * (n - 1 - i))).isoformat(), "profile": "database",
             "cpu_pct": round(30 + rng.normal(0, 1), 3), "mem_pct": round(55 + rng.normal(0, 0.3), 3), "disk_used_pct": round(float(d), 3)}
            for i, d in enumerate(disk)]


def test_a_filling_disk_is_warned_before_it_is_full_and_a_steady_one_is_not(hub):
    rng, t = np.random.default_rng(4), now()
    h = np.arange(26 * 12) / 12                                      # 26 hours at 5-minute steps, the newest last
    fill = 20 + 2.4 * h + rng.normal(0, 0.2, len(h))                 # 82 % now, 90 % in about 3.2 hours
    steady = 60 + rng.normal(0, 0.3, len(h))
    full = np.where(h > h[-5], 95.0, 40.0) + rng.normal(0, 0.2, len(h))   # over 90 % for the last 4 samples
    r = hubhttp.feed(hub, records("disk-fill", t, fill, rng) + records("disk-steady", t, steady, rng) + records("disk-full", t, full, rng))
    assert r.status_code == 200, r.text
    names = {"disk-fill", "disk-steady", "disk-full"}
    p = next_cycle(hub, now(), lambda b: names <= set(b["predictions"]))["predictions"]

    w = p["disk-fill"]
    assert w["status"] == "ok" and w["source"] == "trend" and w["target"] == "disk_used_pct" and "breach" not in w, w
    assert w["alert"]["level"] in ("warning", "critical") and w["risk_score"] >= 60, w
    assert max(fill[-3:]) < 90                                       # not full yet: a warning
    hours_left = (90 - fill[-1]) / 2.4
    assert 60 <= w["time_to_issue_min"] <= 1.5 * 60 * hours_left, (w["time_to_issue_min"], hours_left)   # warned >= 1 h ahead
    m = re.fullmatch(r"Disk full in (\d+\.\d) h \(disk_used_pct (\d+) % rising (\d+\.\d) %/h, threshold 90 %\)", w["message"])
    assert m, w["message"]
    assert float(m[1]) == pytest.approx(w["time_to_issue_min"] / 60, abs=0.051)
    assert abs(int(m[2]) - fill[-1]) <= 2 and float(m[3]) == pytest.approx(2.4, abs=0.3), w["message"]
    assert w["forecast_source"]["disk_used_pct"] == "trend" and max(w["forecast"]["disk_used_pct"]) >= 90

    s = p["disk-steady"]
    assert s["status"] == "ok" and s["alert"]["level"] == "healthy" and s["risk_score"] < 50, s
    assert abs(s["forecast"]["disk_used_pct"][-1] - 60) < 3            # forecast, at its level
    f = p["disk-full"]
    assert f["source"] == "breach" and f["breach"]["target"] == "disk_used_pct" and f["alert"]["level"] == "critical", f
    assert f["message"].startswith("Disk at 9") and "over 90 % for" in f["message"], f["message"]

    al = {a["server_name"]: a for a in get(hub, "/alerts/active").json()["alerts"] if a["kind"] == "risk"}
    assert al["disk-fill"]["target"] == "disk_used_pct" and al["disk-fill"]["message"].startswith("Disk full in "), al.get("disk-fill")
    assert al["disk-full"]["level"] == "critical" and "disk-steady" not in al
