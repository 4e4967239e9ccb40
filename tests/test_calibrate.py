"qdash.calibrate across a process boundary: run_calibration in a ProcessPoolExecutor, as the job runner runs it."
import json
import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor
from functools import partial

import pytest

from qdash.calibrate import CHEMICAL_ACCURACY, CalibrationCancelled, check_calibration, run_calibration
from qdash.config import ValidationError

METRICS = ("energy", "accuracy", "duration_secs", "iterations", "psi", "rho", "omega", "algorithm", "mode")


@pytest.fixture(scope="module")
def pool():
    "Two worker processes started with spawn (no fork of a process that already runs torch threads)."
    with ProcessPoolExecutor(max_workers=2, mp_context=mp.get_context("spawn")) as ex:
        yield ex


@pytest.fixture(scope="module")
def manager():
    with mp.Manager() as m:
        yield m


def _record(queue, pct, metrics):
    "A progress callback that crosses back to the parent the way a job runner's would: through a queue."
    queue.put((pct, metrics))


def _stop_when_set(event):
    return event.is_set()


def _drain(queue):
    out = []
    while not queue.empty(): out.append(queue.get())
    return out


def test_vqe_and_qaoa_in_pool(pool):
    vqe = pool.submit(run_calibration, "VQE", "Exploit", {"ansatz": "uccd", "optimizer": "gd", "lr": 0.4}, trials=2, seed=1)
    qaoa = pool.submit(run_calibration, algorithm="QAOA", mode="Explore", params={"graph": "prism6", "max_iter": 40}, trials=2, seed=2)
    v, q = vqe.result(timeout=120), qaoa.result(timeout=120)
    for r in (v, q):
        assert set(METRICS) <= set(r)
        assert all(0 <= r[k] <= 1 for k in ("psi", "rho", "omega", "accuracy"))
        json.dumps(r)  # plain data: storable as a job record
    assert (v["algorithm"], v["mode"], q["algorithm"], q["mode"]) == ("VQE", "Exploit", "QAOA", "Explore")
    assert v["error"] < CHEMICAL_ACCURACY and v["psi"] > 0.999
    assert q["exact_energy"] == -7.0 and q["accuracy"] > 0.6924  # p >= 1 QAOA bound on 3-regular graphs


def test_same_seed_same_result_in_two_processes(pool):
    a, b = (pool.submit(run_calibration, "VQE", "Explore", {"max_iter": 30}, 2, 11) for _ in range(2))
    ra, rb = a.result(timeout=120), b.result(timeout=120)
    assert (ra["energy"], ra["settings"], ra["curve"]) == (rb["energy"], rb["settings"], rb["curve"])
    assert ra["seed"] == 11


def test_progress_reaches_parent(pool, manager):
    q = manager.Queue()
    r = pool.submit(run_calibration, "QAOA", "Exploit", {"p": 1, "max_iter": 50}, trials=2, seed=3,
                    progress=partial(_record, q)).result(timeout=120)
    seen = _drain(q)
    pcts = [p for p, _ in seen]
    assert pcts == sorted(pcts) and pcts[0] == 0.0 and pcts[-1] == 100.0
    assert all(p < 100 for p in pcts[:-1]) and len(set(int(p) for p in pcts)) == len(pcts)
    assert {"trial", "iteration", "energy", "accuracy"} <= set(seen[len(seen) // 2][1])
    assert seen[-1][1] == {k: r[k] for k in ("energy", "accuracy", "psi", "rho", "omega", "iterations", "duration_secs")}


def test_cancel_running(pool, manager):
    stop, q = manager.Event(), manager.Queue()
    fut = pool.submit(run_calibration, "VQE", "Exploit", {"ansatz": "hea", "depth": 3, "max_iter": 10_000, "lr": 0.001},
                      trials=4, seed=4, progress=partial(_record, q), should_stop=partial(_stop_when_set, stop))
    q.get(timeout=120)  # it has started
    stop.set()
    with pytest.raises(CalibrationCancelled, match="cancelled in trial 1 of 4"):
        fut.result(timeout=120)


@pytest.mark.parametrize("kwargs,message", [
    (dict(algorithm="Grover"), "algorithm='Grover': expected one of VQE, QAOA"),
    (dict(mode="Random"), "mode='Random': expected one of Explore, Exploit"),
    (dict(params={"lr": "fast"}), "params.lr='fast': expected a number from 0.0001 to 10"),
    (dict(params={"ansatz": "uccsdt"}), "params.ansatz='uccsdt': expected one of uccd, uccsd, hea"),
    (dict(algorithm="QAOA", params={"graph": [[0, 0]]}), "params.graph=[[0, 0]]: expected a graph name"),
    (dict(algorithm="QAOA", params={"ansatz": "hea"}), "params.ansatz: unknown setting for QAOA; allowed: graph, p"),
    (dict(params=[1, 2]), "params=[1, 2]: expected an object of settings"),
    (dict(trials=0), "trials=0: expected an integer from 2 to 64"),
    (dict(seed="x"), "seed='x': expected a non-negative integer or null"),
])
def test_bad_input(pool, kwargs, message):
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("(", r"\(")) as e:
        run_calibration(**kwargs)
    if "seed" not in kwargs: assert e.value.field.split(".")[0] in ("algorithm", "mode", "params", "trials")
    with pytest.raises(ValidationError, match=message.replace("[", r"\[").replace("(", r"\(")):
        pool.submit(run_calibration, **kwargs).result(timeout=120)  # the same error, pickled back from the worker


def test_check_calibration_is_what_run_uses():
    assert check_calibration("qaoa", "EXPLOIT", {"p": 3}) == ("QAOA", "Exploit", {"p": 3}, 3)
