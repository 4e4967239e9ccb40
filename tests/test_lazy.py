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

def test_hub_imports_no_http_client_and_a_receiver_still_sends():
    "httpx (alert receivers) and requests (InfluxDB) load on first use: a hub on DuckDB without receivers holds neither (~10 MB)."
    got = _run("""
import json, sys, threading
from http.server import BaseHTTPRequestHandler, HTTPServer
import qdash.hub.app, qdash.serving
before = [m for m in ("httpx", "requests") if m in sys.modules]
bodies = []
class H(BaseHTTPRequestHandler):
    def do_POST(self):
        bodies.append(self.rfile.read(int(self.headers["content-length"]))); self.send_response(204); self.end_headers()
    def log_message(self, *a): pass
srv = HTTPServer(("127.0.0.1", 0), H); threading.Thread(target=srv.serve_forever, daemon=True).start()
from qdash.model.notify import Receiver
rec = Receiver("webhook", f"http://127.0.0.1:{srv.server_port}/hook", record=lambda r: None).send({"hello": 1}, {"event": "test"})
print(json.dumps({"before": before, "httpx_after": "httpx" in sys.modules, "status": rec["status"], "http_status": rec["http_status"],
                  "bodies": [b.decode() for b in bodies]}))
""")
    assert got["before"] == []                                   # importing the hub loaded neither
    assert got["status"] == "sent" and got["http_status"] == 204 and got["httpx_after"]
    assert got["bodies"] == ['{"hello":1}']                      # the receiver got the body
