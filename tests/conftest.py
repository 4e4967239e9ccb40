"Shared pytest fixtures: a real InfluxDB server for the whole session."
import signal

import pytest

from qdash.testing import InfluxServer

# Tests stop `qdash` processes with SIGINT, as Ctrl-C in a terminal does. A shell that starts pytest asynchronously
# without job control (`make test &` in a script, `nohup ... &`) hands it SIGINT ignored, every process it starts inherits
# that, and a `qdash collect` or `qdash dashboard` then never stops on SIGINT (seen: two test_cli tests waited 30 s). Give
# this process the handler a terminal gives, so the processes the tests start get SIGINT's default action, as users' do.
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
