"Shared pytest fixtures: a real InfluxDB server for the whole session."
import pytest

from qdash.testing import InfluxServer


@pytest.fixture(scope="session")
def influx():
    "A started `qdash.testing.InfluxServer` (Debian influxd 1.6 on a free loopback port), stopped after the session."
    srv = InfluxServer()
    srv.start()
    try:
        yield srv
    finally:
        srv.close()
