"""Issue #14 item 4, disk fill: libvirt's disk image sizes cross-checked with virsh, a VM's fill level from its guest
agent only (never from an image's allocation), and a live hub fed a filling disk warns "Disk full in ..." on
disk_used_pct before it reaches 90 %, while a steady disk stays quiet and a full one is a breach."""
import re
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qdash.collect.sources import LibvirtCollector, guest_filesystems
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


def test_libvirt_disk_image_sizes_match_virsh_and_give_no_vm_a_fill_level():
    need("libvirt"); need("virsh")
    lc = LibvirtCollector(URI, host="hv")
    try: out = dict(lc.collect())
    finally: lc.close()
    disks = out["vm_disk"]
    assert len(disks) == 7 and disks.groupby("server").device.count().max() == 2   # every disk of the five running domains
    for r in disks.itertuples():
        v = domblkinfo(r.server, r.device)
        assert (r.capacity_bytes, r.allocation_bytes) == (v["Capacity"], v["Allocation"]), (r.server, r.device, v)
        assert r.allocated_pct == pytest.approx(v["Allocation"] / v["Capacity"] * 100, rel=1e-12)
        assert r.allocated_pct >= 99.9                                     # the test driver's images are allocated in full
    assert "used_pct" not in disks                                          # an image's allocation is not named as a fill level
    assert "disk_used_pct" not in out["vm"] and "vm_fs" not in out          # no guest agent here: no VM has a fill level


def virsh_guestinfo(server):
    r = subprocess.run(["virsh", "-c", URI, "guestinfo", server, "--filesystem"], capture_output=True, text=True, timeout=30)
    return r.returncode, r.stderr


def test_without_a_guest_agent_each_domain_is_asked_once_per_cache_period():
    """The test driver has no guest agent (virsh guestinfo says so): each running domain is asked once per
    [collect] device_cache_ttl, counted by the collector, not once per cycle; without the cache it would be every cycle."""
    need("libvirt"); need("virsh")
    rc, err = virsh_guestinfo("web-01")
    assert rc != 0 and "not supported" in err, err
    cached, uncached = LibvirtCollector(URI, host="hv", device_cache_ttl=3600), LibvirtCollector(URI, host="hv", device_cache_ttl=0)
    try:
        for _ in range(4): a = dict(cached.collect()); uncached.collect()
    finally: cached.close(); uncached.close()
    assert (cached.guest_calls, cached.guest_errors) == (5, 5), (cached.guest_calls, cached.guest_errors)   # five running domains, once each
    assert (uncached.guest_calls, uncached.guest_errors) == (20, 20)                                        # four cycles of five
    assert a["libvirt"][["guest_calls", "guest_errors"]].iloc[0].tolist() == [5, 5]   # in the collector's health measurement
    assert (cached.errors, cached.last_error) == (0, None)                  # a VM without an agent is not a fault of the link
    assert len(a["vm"]) == 6 and len(a["vm_disk"]) == 7 and "disk_used_pct" not in a["vm"]   # the cycle goes on, whole


def test_guest_filesystems_from_a_guest_info_answer():
    """`virDomainGetGuestInfo(VIR_DOMAIN_GUEST_INFO_FILESYSTEM)` as libvirt documents its keys (fs.count,
    fs.<num>.mountpoint, .name, .fstype, .total-bytes, .used-bytes, .disk.<num>.*): the VM's level is its fullest real
    filesystem, what df says inside the guest."""
    gib = 2**30
    info = {"fs.count": 4,
            "fs.0.mountpoint": "/", "fs.0.name": "vda2", "fs.0.fstype": "ext4", "fs.0.total-bytes": 40 * gib, "fs.0.used-bytes": 10 * gib,
            "fs.0.disk.count": 1, "fs.0.disk.0.alias": "vda", "fs.0.disk.0.serial": "root-1", "fs.0.disk.0.device": "/dev/vda2",
            "fs.1.mountpoint": "/var/lib/pgsql", "fs.1.name": "dm-0", "fs.1.fstype": "xfs", "fs.1.total-bytes": 200 * gib,
            "fs.1.used-bytes": 183 * gib, "fs.1.disk.count": 1, "fs.1.disk.0.alias": "vdb", "fs.1.disk.0.device": "/dev/vdb1",
            "fs.2.mountpoint": "/boot", "fs.2.name": "vda1", "fs.2.fstype": "vfat", "fs.2.total-bytes": gib // 2, "fs.2.used-bytes": gib // 4,
            "fs.2.disk.count": 1, "fs.2.disk.0.alias": "vda",
            "fs.3.mountpoint": "/mnt/iso", "fs.3.name": "loop3", "fs.3.fstype": "iso9660", "fs.3.total-bytes": gib, "fs.3.used-bytes": gib,
            "fs.3.disk.count": 0}
    fs = guest_filesystems(info)
    assert [(f["mount"], f["fstype"]) for f in fs] == [("/", "ext4"), ("/var/lib/pgsql", "xfs"), ("/boot", "vfat")]   # not the ISO
    assert [f["used_pct"] for f in fs] == pytest.approx([25.0, 91.5, 50.0])
    assert max(f["used_pct"] for f in fs) == pytest.approx(91.5)              # over disk_used_pct:90, and only from the guest's own view
    assert fs[1]["used_bytes"] == 183 * gib and fs[1]["total_bytes"] == 200 * gib
    assert guest_filesystems({}) == [] and guest_filesystems({"fs.count": 1, "fs.0.mountpoint": "E:\\", "fs.0.fstype": "CDFS"}) == []


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


def test_a_hub_collecting_the_test_driver_raises_no_disk_alert(tmp_path):
    """The test driver's disks read allocation ≈ capacity (an image allocated in full, as a preallocated raw image or
    an LVM volume is) and it has no guest agent: no VM gets a disk_used_pct, so no forecasting cycle says "Disk at 100 %"."""
    need("libvirt")
    env = {**fed_hub_env(tmp_path / "models"), "QDASH__COLLECT__SOURCES": "libvirt", "QDASH__COLLECT__LIBVIRT_URI": URI}
    running = {"web-01", "web-02", "db-01", "db-02", "ml-01"}
    with HubProcess(env, data_dir=tmp_path / "hub") as hub:
        first = next_cycle(hub, now(), lambda b: running <= set(b["predictions"]))
        body = next_cycle(hub, pd.Timestamp(first["timestamp"]) + pd.Timedelta(seconds=3), lambda b: running <= set(b["predictions"]))
        preds = body["predictions"]
        assert not [s for s in running if preds[s].get("target") == "disk_used_pct" or "disk_used_pct" in preds[s].get("forecast", {})], \
            {s: preds[s].get("message") for s in running}
        alerts = get(hub, "/alerts/active").json()["alerts"]
        assert not [a for a in alerts if a["server_name"] in running and (a.get("target") == "disk_used_pct" or "Disk" in a["message"])], alerts
        r = get(hub, "/api/history/metrics", params={"measurement": "vm_disk", "fields": "allocated_pct,allocation_bytes", "server": "web-01"})
        assert r.status_code == 200 and r.json() and r.json()[-1]["allocated_pct"] >= 99.9, r.text   # the image's allocation, kept for what it is
        r = get(hub, "/api/history/metrics", params={"measurement": "vm", "fields": "disk_used_pct", "server": "web-01"})
        assert r.status_code == 404 and "no field 'disk_used_pct'" in r.text, r.text   # the store has no such field for these VMs at all
