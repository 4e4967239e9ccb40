"Heavy libraries load where they are used: a hub imports without torch, lightning or pytorch-forecasting, and what needs them still works on first use."
import json, os, subprocess, sys
from pathlib import Path

HEAVY = ("torch", "lightning", "pytorch_forecasting", "captum")

def _run(code:str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout.strip().splitlines()[-1])

def test_hub_imports_no_heavy_library_and_a_calibration_report_still_works():
    got = _run(f"""
import json, sys
import qdash.hub.app, qdash.serving, qdash.inbox
before = [m for m in {HEAVY!r} if m in sys.modules]
from qdash.config import load_settings
from qdash.store import open_store
from qdash.inbox import report_calibration
from qdash.jobs import calibration_status
store = open_store(load_settings(environ={{}}).updated({{"store": {{"path": ":memory:"}}}}))
r = report_calibration(store, {{"psi": 0.9, "rho": 0.8, "omega": 0.7, "algorithm": "vqe"}})
print(json.dumps({{"before": before, "torch_after": "torch" in sys.modules, "reported": r, "status": calibration_status(store)}}, default=str))
""")
    assert got["before"] == []                                   # importing the hub loaded none of them
    assert got["reported"]["algorithm"] == "VQE" and got["reported"]["psi"] == 0.9
    assert got["status"]["psi"] == 0.9 and got["status"]["algorithm"] == "VQE"   # the point is the newest status
    assert got["torch_after"]                                    # the first report imported qdash.calibrate (and torch) then
