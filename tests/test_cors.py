"CORS (seed 000's browser clients): allowed origins get the headers and their preflights, others and a default hub none."
import httpx
import pytest

from qdash.testing import HubProcess

ORIGIN = "https://ops.example.com"
PREFLIGHT = {"Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "x-api-key"}


@pytest.fixture(scope="module")
def hub():
    with HubProcess({"QDASH__COLLECT__SOURCES": "", "QDASH__SERVER__CORS_ORIGINS": ORIGIN}) as h:
        yield h


def test_preflight_and_request_from_an_allowed_origin(hub):
    r = httpx.options(hub.url + "/api/status", headers=PREFLIGHT)          # a browser's preflight carries no key
    assert r.status_code in (200, 204), r.text
    assert r.headers["access-control-allow-origin"] == ORIGIN
    assert "x-api-key" in r.headers["access-control-allow-headers"].lower()
    r = httpx.get(hub.url + "/api/status", headers={"Origin": ORIGIN, "X-API-Key": hub.api_key})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == ORIGIN
    assert r.json()["backend_health"]["store"] is True


def test_other_origins_get_no_cors_headers_and_the_key_is_still_needed(hub):
    r = httpx.get(hub.url + "/api/status", headers={"Origin": "https://evil.example", "X-API-Key": hub.api_key})
    assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
    r = httpx.options(hub.url + "/api/status", headers={**PREFLIGHT, "Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    assert httpx.get(hub.url + "/api/status", headers={"Origin": ORIGIN}).status_code == 401


def test_a_default_hub_has_no_cors():
    with HubProcess({"QDASH__COLLECT__SOURCES": ""}) as h:
        r = httpx.options(h.url + "/api/status", headers=PREFLIGHT)
        assert r.status_code == 405 and "access-control-allow-origin" not in r.headers
        r = httpx.get(h.url + "/api/status", headers={"Origin": ORIGIN, "X-API-Key": h.api_key})
        assert r.status_code == 200 and "access-control-allow-origin" not in r.headers
