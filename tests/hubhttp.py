"What the HTTP tests of a live hub share: authenticated requests, and a hub that hears only fed data with the shipped model."
import shutil
from pathlib import Path

import httpx

SHIPPED = Path(__file__).resolve().parent.parent / "models" / "tft-fleet45"   # encoder 288 × 5 min, targets cpu_pct, mem_pct
NO_LIMITS = {f"QDASH__LIMITS__{k}": "100000/minute" for k in ("DEFAULT", "FEED_DATA", "PREDICTIONS_CURRENT", "ALERTS_ACTIVE", "EXPLAIN")}


def get(hub, path, **kw):
    return httpx.get(hub.url + path, headers={"X-API-Key": hub.api_key}, timeout=60, **kw)


def post(hub, path, **kw):
    return httpx.post(hub.url + path, headers={"X-API-Key": hub.api_key}, timeout=60, **kw)


def feed(hub, records):
    return post(hub, "/feed/data", json=records)


def fed_hub_env(model_dir: Path) -> dict:
    "Settings of a hub that only hears fed data, serves a copy of the shipped model and forecasts every second."
    shutil.copytree(SHIPPED, model_dir / SHIPPED.name)
    return {"QDASH__MODEL__DIR": str(model_dir), "QDASH__COLLECT__SOURCES": "", "QDASH__MODEL__PREDICT_EVERY": "1s", **NO_LIMITS}


def next_cycle(hub, after, until=lambda body: True, timeout=90.0) -> dict:
    "The first /predictions/current payload of a cycle started after `after` (a UTC Timestamp) for which `until` holds."
    import time
    import pandas as pd
    end, body = time.monotonic() + timeout, {}
    while time.monotonic() < end:
        body = get(hub, "/predictions/current").json()
        if pd.Timestamp(body["timestamp"]) > after and until(body): return body
        time.sleep(0.3)
    raise AssertionError(f"no such cycle after {after} within {timeout}s; last payload: {body.get('predictions')}")
