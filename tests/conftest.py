"Shared pytest fixtures: a real InfluxDB server for the whole session."
import signal

import pytest

from qdash.testing import InfluxServer

# Tests stop `qdash` processes with SIGINT, as Ctrl-C in a terminal does. A shell that starts pytest asynchronously
# without job control (`nohup ... &` in a script) hands it SIGINT ignored, and the processes it starts inherit that. qdash's
# commands install their own SIGINT handling, so they stop either way (checked), but a test should not depend on how pytest
# was launched: give this process the handler a terminal gives.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


@pytest.fixture(scope="session")
def influx():
    "A started `qdash.testing.InfluxServer` (Debian influxd 1.6 on a free loopback port), stopped after the session."
    srv = InfluxServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()
