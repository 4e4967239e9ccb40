"""Print statsforecast's AutoTheta forecasts on fixed series as one JSON line, to compare two installs.

qdash pins statsforecast 2.0.1 (pyproject's dev extra): 2.1 declares pandas<3, and so does fugue from 0.9.5 on, which
statsforecast imports. Run this under the project's venv (2.0.1, pandas 3) and under a throwaway venv with the newest
statsforecast (2.1.x, pandas 2.x); the two lines must name the same model for every series and agree on the means to
1e-5 relative (checked with 2.1.1: identical on five series, 2e-6 apart on a near-flat one):

    .venv/bin/python tools/autotheta_check.py
    python -m venv /tmp/sf21 && /tmp/sf21/bin/pip install -q "statsforecast>=2.1" && /tmp/sf21/bin/python tools/autotheta_check.py

Each series is a week of 5-minute steps: a daily sine, a slow trend under a daily swing, white noise, and the last
week of three real NAB files when ../shared/data/nab is there. AutoTheta has a season of one day, as in the NAB
benchmark, and chooses among STM, OTM, DSTM and DOTM itself: the chosen model and every 16th step of its 8-hour
mean forecast are printed. It needs numpy and statsforecast only.
"""
import json
from pathlib import Path
import numpy as np
import statsforecast
from statsforecast.models import AutoTheta

S, H = 288, 96
NAB = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "nab" / "realKnownCause"
NAB_FILES = ("cpu_utilization_asg_misconfiguration", "ec2_request_latency_system_failure", "machine_temperature_system_failure")


def series() -> dict:
    rng = np.random.default_rng(0)
    t = np.arange(7 * S)
    return {"sine": 50 + 10 * np.sin(2 * np.pi * t / S) + rng.normal(0, 0.5, len(t)),
            "trend": 20 + 0.01 * t + 3 * np.sin(2 * np.pi * t / S) + rng.normal(0, 1, len(t)),
            "noise": 100 + rng.normal(0, 5, len(t)),
            **{f: np.loadtxt(NAB / f"{f}.csv", delimiter=",", skiprows=1, usecols=1)[-7 * S:]
               for f in NAB_FILES if (NAB / f"{f}.csv").exists()}}


def main():
    import pandas
    out = {"statsforecast": statsforecast.__version__, "pandas": pandas.__version__}
    for name, y in series().items():
        m = AutoTheta(season_length=S).fit(y)
        out[name] = {"model": str(m.model_["modeltype"]), "mean": [round(float(v), 6) for v in m.predict(h=H)["mean"][::16]]}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
