"""The `qdash` command as a user runs it: a separate process, real environment variables, real files."""
import json, os, signal, socket, subprocess, sys, threading, time
from pathlib import Path

import pytest

QDASH = Path(sys.executable).parent / "qdash"


def run(*args, env=None, cwd=None, timeout=60):
    e = {k: v for k, v in os.environ.items() if not k.startswith("QDASH")}
    e.update(env or {})
    return subprocess.run([str(QDASH), *args], capture_output=True, text=True, env=e, cwd=cwd, timeout=timeout)


def test_help_lists_only_working_commands(tmp_path):
    r = run("--help", cwd=tmp_path)
    assert r.returncode == 0
    assert "version" in r.stdout and "config" in r.stdout


def test_version():
    from qdash import __version__
    r = run("version")
    assert (r.returncode, r.stdout.strip()) == (0, f"qdash {__version__}")


def test_config_shows_sources_and_masks_secrets(tmp_path):
    ini = tmp_path / "s.ini"
    ini.write_text("[server]\nport = 9001\n")
    r = run("config", "--json", env={"QDASH_SETTINGS": str(ini), "QDASH__COLLECT__INTERVAL": "2s",
                                     "QDASH_API_KEY": "very-secret-key", "QDASH_INFLUX_TOKEN": "tok"}, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["server"]["port"] == {"value": 9001, "source": f"file:{ini}"}
    assert d["collect"]["interval"] == {"value": 2.0, "source": "env:QDASH__COLLECT__INTERVAL"}
    assert d["auth"]["api_key"]["value"] == "***" and d["store"]["influx_token"]["value"] == "***"
    assert "very-secret-key" not in r.stdout + r.stderr and "tok\"" not in r.stdout


def test_seed_variables_are_deprecated_aliases(tmp_path):
    r = run("config", env={"LIBVIRT_URI": "test:///default", "POLL_INTERVAL": "2.5", "QDASH__COLLECT__INTERVAL": "1s",
                           "INFLUX_DB": "vmstats", "TACHYON_API_KEY": "seed-004-key", "LIBVIRT_TIMEOUT": "7",
                           "METATRON__SERVER__PORT": "3000", "METATRON__SERVER__HOST": "0.0.0.0", "QDASH__SERVER__HOST": "127.0.0.2",
                           "INFLUX_URL": "http://influx.example:8086", "INFLUX_TOKEN": "seed-002-token", "BATCH_MAX_LINES": "777",
                           "BATCH_MAX_SEC": "3", "DEVICE_CACHE_TTL": "45"},
            cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    line = {ln.split(" ")[0]: ln for ln in r.stdout.splitlines() if " = " in ln}
    assert "test:///default" in line["libvirt_uri"] and "(LIBVIRT_URI is deprecated: set QDASH__COLLECT__LIBVIRT_URI)" in line["libvirt_uri"]
    assert "vmstats" in line["influx_database"] and "INFLUX_DB is deprecated" in line["influx_database"]
    assert "1.0" in line["interval"] and "env:QDASH__COLLECT__INTERVAL" in line["interval"]   # the QDASH__ form wins
    assert "deprecated" not in line["interval"]
    assert "TACHYON_API_KEY is deprecated" in line["api_key"] and "seed-004-key" not in r.stdout
    assert "7.0" in line["libvirt_timeout"] and "(LIBVIRT_TIMEOUT is deprecated: set QDASH__COLLECT__LIBVIRT_TIMEOUT)" in line["libvirt_timeout"]
    for key, var, value in [("influx_url", "INFLUX_URL", "http://influx.example:8086"), ("influx_token", "INFLUX_TOKEN", "***"),
                            ("batch_max_lines", "BATCH_MAX_LINES", "777"), ("batch_max_sec", "BATCH_MAX_SEC", "3.0"),
                            ("device_cache_ttl", "DEVICE_CACHE_TTL", "45.0")]:      # seed 002's other variables
        assert f"= {value} " in line[key] and f"({var} is deprecated: set QDASH__" in line[key], line[key]
    assert "seed-002-token" not in r.stdout
    srv = r.stdout.split("[server]")[1].split("\n[")[0]                 # seed 000's server variables, in [server]
    sline = {ln.split(" ")[0]: ln for ln in srv.splitlines() if " = " in ln}
    assert "3000" in sline["port"] and "(METATRON__SERVER__PORT is deprecated: set QDASH__SERVER__PORT)" in sline["port"]
    assert "127.0.0.2" in sline["host"] and "deprecated" not in sline["host"]                                    # QDASH__ wins


@pytest.mark.parametrize("env,expect", [
    ({"QDASH__SERVER__PORT": "abc"}, "QDASH__SERVER__PORT='abc' (from env:QDASH__SERVER__PORT): expected an integer from 1 to 65535"),
    ({"QDASH_SETTINGS": "/nonexistent/qdash.ini"}, "QDASH_SETTINGS names /nonexistent/qdash.ini, which does not exist"),
    ({"QDASH__SERVER__PROT": "1"}, "unknown key 'prot' in [server]; known keys: cors_origins, feed_workers, graceful_shutdown_timeout, host"),
    ({"QDASH__NOPE__X": "1"}, "unknown section 'nope'; known sections: alerts, auth, collect, dashboard"),
])
def test_bad_input_is_one_line_and_nonzero(env, expect, tmp_path):
    r = run("config", env=env, cwd=tmp_path)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and expect in lines[0], r.stderr
    assert "Traceback" not in r.stderr


def test_secret_in_file_refused(tmp_path):
    ini = tmp_path / "settings.ini"
    ini.write_text("[store]\ninflux_token = abc123\n")
    r = run("config", cwd=tmp_path)
    assert r.returncode == 2 and "is a secret and is not read from a settings file" in r.stderr
    assert "abc123" not in r.stderr


def test_repo_settings_ini_is_the_template():
    root = Path(__file__).resolve().parent.parent
    r = run("config", "--template")
    assert r.returncode == 0 and r.stdout == (root / "settings.ini").read_text()


def test_train_registers_a_model_from_the_store(tmp_path):
    from qdash.config import load_settings
    from qdash.collect.simulate import FleetSimulator
    from qdash.store import open_store
    db = tmp_path / "fleet.duckdb"
    st = open_store(load_settings(environ={}).updated({"store": {"path": str(db)}}))
    FleetSimulator(4, seed=1).backfill(st, days=0.5, end="2026-01-05")
    st.close()
    env = {"QDASH__STORE__PATH": str(db), "QDASH__MODEL__DIR": str(tmp_path / "models"), "QDASH__MODEL__ENCODER_LENGTH": "12",
           "QDASH__MODEL__HORIZON": "6", "QDASH__MODEL__MIN_HISTORY": "12"}
    r = run("train", "--epochs", "1", "--batches", "2", "--hidden-size", "4", "--name", "cli", env=env, cwd=tmp_path, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert (out["name"], out["servers"]) == ("cli", 4) and out["val_mase"] > 0
    card = json.loads((tmp_path / "models/cli/card.json").read_text())
    assert card["command"].startswith("qdash train") and card["settings"]["encoder_length"] == 12
    assert "reload-model?model_path=cli" in r.stderr
    again = run("train", "--name", "cli", env=env, cwd=tmp_path, timeout=120)      # refused before any training
    assert again.returncode == 2 and again.stderr.strip() == f"qdash: error: model 'cli' already exists in {tmp_path / 'models'}"
    empty = run("train", env={**env, "QDASH__STORE__PATH": str(tmp_path / "empty.duckdb")}, cwd=tmp_path, timeout=120)
    assert empty.returncode == 2 and "Traceback" not in empty.stderr and empty.stderr.startswith("qdash: error:"), empty.stderr[-1500:]


def _hub_env(tmp_path, hub_port, dashboard_port):
    return {"QDASH__SERVER__HOST": "127.0.0.1", "QDASH__SERVER__PORT": str(hub_port), "QDASH__DASHBOARD__PORT": str(dashboard_port),
            "QDASH__STORE__PATH": str(tmp_path / "qdash.duckdb"), "QDASH__AUTH__API_KEY_FILE": str(tmp_path / "api_key"),
            "QDASH__COLLECT__SOURCES": "", "QDASH__COLLECT__SPOOL_DIR": str(tmp_path / "spool")}


@pytest.mark.parametrize("command,taken,expect", [
    ("serve", "hub", "port {port} on 127.0.0.1 is in use (set [server] port or QDASH__SERVER__PORT)"),
    ("up", "hub", "port {port} on 127.0.0.1 is in use (set [server] port or QDASH__SERVER__PORT)"),
    ("up", "dashboard", "port {port} on 127.0.0.1 is in use (set [dashboard] port or QDASH__DASHBOARD__PORT, or pass --port)"),
    ("dashboard", "dashboard", "port {port} on 127.0.0.1 is in use (set [dashboard] port or QDASH__DASHBOARD__PORT, or pass --port)"),
], ids=["serve", "up-hub-port", "up-dashboard-port", "dashboard"])
def test_a_port_in_use_is_one_line_and_nothing_starts(command, taken, expect, tmp_path):
    from qdash.testing import free_port
    with socket.socket() as held:                    # another server on the port: bound and listening
        held.bind(("127.0.0.1", 0)); held.listen()
        port = held.getsockname()[1]
        ports = (port, free_port()) if taken == "hub" else (free_port(), port)
        r = run(command, env=_hub_env(tmp_path, *ports), cwd=tmp_path, timeout=120)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert r.stderr.splitlines() == [f"qdash: error: {expect.format(port=port)}"], r.stderr
    assert r.stdout == ""                            # no URL of a hub or dashboard that is not there
    assert not (tmp_path / "qdash.duckdb").exists()  # the hub did not start: its store was never opened


def test_up_stops_when_its_hub_dies(tmp_path):
    import psutil
    from qdash.testing import free_port
    hub_port, dash_port = free_port(), free_port()
    e = {k: v for k, v in os.environ.items() if not k.startswith("QDASH")}
    e.update(_hub_env(tmp_path, hub_port, dash_port))
    with open(tmp_path / "out", "w") as out, open(tmp_path / "err", "w") as err:
        up = subprocess.Popen([str(QDASH), "up"], stdout=out, stderr=err, env=e, cwd=tmp_path)
    try:
        end = time.monotonic() + 120
        while "qdash dashboard:" not in (tmp_path / "out").read_text() and up.poll() is None and time.monotonic() < end:
            time.sleep(0.2)
        assert f"http://127.0.0.1:{dash_port}/" in (tmp_path / "out").read_text(), (tmp_path / "err").read_text()[-2000:]
        (hub,) = psutil.Process(up.pid).children()
        hub.kill()                                   # the hub dies under `up`
        assert up.wait(30) == 2
        last = (tmp_path / "err").read_text().strip().splitlines()[-1]
        assert last == "qdash: error: the hub exited with status -9; the dashboard stopped with it"
        with pytest.raises(OSError):                 # and the dashboard is gone with it
            socket.create_connection(("127.0.0.1", dash_port), timeout=2).close()
    finally:
        if up.poll() is None: up.kill(); up.wait()


def test_collect_says_why_libvirt_is_down(tmp_path):
    "Seed 002: `qdash collect --sources libvirt` names the URI and libvirt's own reason when it cannot connect."
    uri = f"test://{tmp_path}/no-such-fleet.xml"
    e = {k: v for k, v in os.environ.items() if not k.startswith("QDASH")}
    e.update(QDASH__COLLECT__LIBVIRT_URI=uri, QDASH__STORE__PATH=str(tmp_path / "q.duckdb"), QDASH__COLLECT__SPOOL_DIR=str(tmp_path / "spool"))
    p = subprocess.Popen([str(QDASH), "collect", "--sources", "libvirt"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         env=e, cwd=tmp_path)
    lines = []                                          # its status lines as they come: stopped once one says DOWN (a cold start takes seconds)
    reader = threading.Thread(target=lambda: [lines.append(x) for x in p.stderr], daemon=True)
    reader.start()
    end = time.monotonic() + 90
    while time.monotonic() < end and not any("libvirt:DOWN" in x for x in lines): time.sleep(0.2)
    p.send_signal(2)
    p.wait(timeout=30); reader.join(10)
    err = "".join(lines)
    final = err.strip().splitlines()[-1]
    assert "libvirt:DOWN" in final and f"connect {uri}:" in final and "no-such-fleet.xml" in final.split(f"connect {uri}:")[1], err


def test_empty_port_is_refused_saying_what_to_do(tmp_path):
    "Seed 003: an empty port means 'no HTTP server'; the hub has no other way in, so `serve` refuses it in one line."
    ini = tmp_path / "s.ini"
    ini.write_text("[server]\nport =\n")
    for env in ({"QDASH_SETTINGS": str(ini)}, {"QDASH__SERVER__PORT": ""}):
        base = {k: v for k, v in _hub_env(tmp_path, 1, 1).items() if k != "QDASH__SERVER__PORT"}
        r = run("serve", env={**base, **env}, cwd=tmp_path)
        source = f"file:{ini}" if "QDASH_SETTINGS" in env else "env:QDASH__SERVER__PORT"
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [
            f"qdash: error: [server] port is empty (from {source}): the hub is reached only over HTTP, so `qdash serve` needs a port; "
            "set [server] port (default 8080) or QDASH__SERVER__PORT, or run `qdash collect` to collect into the store without "
            "an HTTP server"], r.stderr
        assert not (tmp_path / "qdash.duckdb").exists()
    assert run("config", env={"QDASH_SETTINGS": str(ini)}, cwd=tmp_path).returncode == 0   # the settings themselves are fine


def test_tls_settings_are_checked_at_start(tmp_path):
    from qdash.testing import self_signed_cert
    cert, key = self_signed_cert(tmp_path / "tls")
    env = _hub_env(tmp_path, 1, 1)
    for extra, expect in [({"QDASH__SERVER__TLS_CERT": str(cert)}, "[server] tls_cert is set but tls_key is empty: set both (HTTPS) or neither (plain HTTP)"),
                          ({"QDASH__SERVER__TLS_KEY": str(key)}, "[server] tls_key is set but tls_cert is empty: set both (HTTPS) or neither (plain HTTP)"),
                          ({"QDASH__SERVER__TLS_CERT": str(cert), "QDASH__SERVER__TLS_KEY": str(tmp_path / "gone.pem")},
                           f"[server] tls_key={tmp_path / 'gone.pem'}: cannot read it (No such file or directory)"),
                          ({"QDASH__SERVER__TLS_CERT": str(key), "QDASH__SERVER__TLS_KEY": str(key)},
                           f"[server] tls_cert={key} and tls_key={key} are not a PEM certificate and its unencrypted key")]:
        r = run("serve", env={**env, **extra}, cwd=tmp_path)
        assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and r.stderr.startswith(f"qdash: error: {expect}"), r.stderr
        assert not (tmp_path / "qdash.duckdb").exists()


def test_hub_serves_https_with_the_configured_certificate(tmp_path):
    "Seed 000: TLS. The hub answers over https to a client that trusts its certificate, and not over plain http."
    import httpx
    from qdash.testing import HubProcess, self_signed_cert
    cert, key = self_signed_cert(tmp_path / "tls")
    with HubProcess({"QDASH__COLLECT__SOURCES": "", "QDASH__SERVER__TLS_CERT": str(cert), "QDASH__SERVER__TLS_KEY": str(key)},
                    data_dir=tmp_path, argv=["serve"]) as h:
        assert h.url.startswith("https://")
        r = httpx.get(h.url + "/health", verify=h.verify)
        assert r.status_code == 200 and r.json()["service"] == "qdash"
        r = httpx.get(h.url + "/api/status", verify=h.verify, headers={"X-API-Key": h.api_key})
        assert r.status_code == 200 and r.json()["backend_health"]["store"] is True
        with pytest.raises(httpx.ConnectError):                     # an untrusted certificate is refused by a default client
            httpx.get(h.url + "/health")
        with pytest.raises(httpx.HTTPError):                        # and plain http gets no answer
            httpx.get(f"http://127.0.0.1:{h.port}/health", timeout=5)


def test_enable_retraining_flag_wins_over_the_file(tmp_path):
    "Seed 004: `--enable-retraining` turns auto-retraining on for this run, whatever settings.ini says."
    import httpx
    from qdash.testing import HubProcess
    ini = tmp_path / "settings.ini"
    ini.write_text("[model]\nauto_retrain = false\n")
    assert json.loads(run("config", "--json", env={"QDASH_SETTINGS": str(ini)}, cwd=tmp_path).stdout)["model"]["auto_retrain"]["value"] is False
    with HubProcess({"QDASH__COLLECT__SOURCES": "", "QDASH_SETTINGS": str(ini)}, data_dir=tmp_path,
                    argv=["serve", "--enable-retraining"]) as h:
        H = {"X-API-Key": h.api_key}
        d = httpx.get(h.url + "/drift/status", headers=H).json()
        assert d["auto_retrain_enabled"] is True
        assert httpx.get(h.url + "/drift/report", headers=H).json()["auto_retrain"]["enabled"] is True


def test_serve_with_a_locked_store_is_one_line_and_logs_once(tmp_path):
    "Issue 16 item 3: a store file another process holds is one line (it was 96 lines of traceback); Sanic's lines print once."
    holder = subprocess.Popen([sys.executable, "-c", f"import duckdb, time; c = duckdb.connect({str(tmp_path / 'q.duckdb')!r}); "
                               "print('held', flush=True); time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        from qdash.testing import free_port
        env = {"QDASH__STORE__PATH": str(tmp_path / "q.duckdb"), "QDASH__SERVER__PORT": str(free_port()), "QDASH__COLLECT__SOURCES": ""}
        r = run("serve", env=env, cwd=tmp_path)
        assert r.returncode == 2 and r.stdout == ""
        assert r.stderr.strip().splitlines() == [r.stderr.strip()] and "cannot open the store file" in r.stderr, r.stderr
    finally:
        holder.kill(); holder.wait()
    env = {"QDASH__STORE__PATH": str(tmp_path / "q2.duckdb"), "QDASH__SERVER__PORT": str(free_port()), "QDASH__COLLECT__SOURCES": ""}
    p = subprocess.Popen([str(QDASH), "serve"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                         env={**{k: v for k, v in os.environ.items() if not k.startswith("QDASH")}, **env})
    try:
        lines = []
        for ln in p.stdout:
            lines.append(ln)
            if "Worker ready" in ln or len(lines) > 200: break
    finally:
        p.send_signal(signal.SIGINT)            # at once: a signal right after "Worker ready" stops it too (it was lost: stop_on_signals)
        rest, _ = p.communicate(timeout=60)
    assert p.returncode == 0, rest
    assert sum("Starting worker" in ln for ln in lines) == 1, "".join(lines)   # not again through a root handler


def test_dashboard_with_a_key_the_hub_refuses_is_one_line(tmp_path):
    "Issue 16 item 3: a dashboard whose key the hub refuses said 'hub down' forever (the hub answered 401, then 429)."
    from qdash.testing import HubProcess, free_port
    (tmp_path / "wrong").write_text("not-the-hubs-key-0123456789\n")
    (tmp_path / "wrong").chmod(0o600)
    with HubProcess({"QDASH__COLLECT__SOURCES": ""}, data_dir=tmp_path / "hub") as hub:
        port = free_port()
        env = {"QDASH__DASHBOARD__HUB_URL": hub.url, "QDASH__DASHBOARD__PORT": str(port)}
        r = run("dashboard", env={**env, "QDASH__AUTH__API_KEY_FILE": str(tmp_path / "wrong")}, cwd=tmp_path, timeout=60)
        assert r.returncode == 2 and r.stdout == "", (r.stdout, r.stderr)
        assert r.stderr.splitlines() == [f"qdash: error: the hub at {hub.url} refuses the dashboard's key (from "
                                         f"{tmp_path / 'wrong'}): HTTP 401; give it the hub's key (QDASH_API_KEY or "
                                         "[auth] api_key_file)"], r.stderr
        with pytest.raises(OSError):                 # nothing listens: no dashboard of a hub it cannot read
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
        # the hub's own key file: the dashboard starts and says where it is
        p = subprocess.Popen([str(QDASH), "dashboard"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path,
                             env={**{k: v for k, v in os.environ.items() if not k.startswith("QDASH")}, **env,
                                  "QDASH__AUTH__API_KEY_FILE": str(tmp_path / "hub" / "api_key")})
        try: assert p.stdout.readline().startswith(f"qdash dashboard: http://127.0.0.1:{port}/")
        finally: p.send_signal(signal.SIGINT); p.wait(30)
