"""schemathesis against the hub's OpenAPI document: no 5xx, no answer outside its schema, on every operation.

The document is api/openapi.json, which test_api_live.py checks is exactly what the hub serves at /docs/openapi.json
(schemathesis' fixture loader does not work with this pytest, so the schema is loaded from the checked-in file)."""
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import negative_data_rejection, positive_data_acceptance

from qdash.bench.reliability import schemathesis_failures
from qdash.testing import HubProcess

EXAMPLES = 100   # per operation; `qdash bench api` is the place for longer runs


@pytest.fixture(scope="module")
def hub():
    # jobs the examples start are real: keep few of them waiting (the rest get their documented 429)
    env = {"QDASH__COLLECT__SOURCES": "simulator", "QDASH__COLLECT__SIMULATOR_SERVERS": "4",
           "QDASH__JOBS__WORKERS": "1", "QDASH__JOBS__MAX_PENDING": "2",
           "QDASH__LIMITS__DEFAULT": "1000000/minute", "QDASH__LIMITS__FEED_DATA": "1000000/minute",
           "QDASH__LIMITS__AUTH_FAILURES": "1000000/minute"}   # schemathesis' ignored_auth check sends wrong keys on purpose
    with HubProcess(env) as h:
        yield h


schema = schemathesis.openapi.from_path(Path(__file__).resolve().parent.parent / "api" / "openapi.json")


@schema.parametrize()
@settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
          suppress_health_check=list(HealthCheck))
def test_api_conforms(case, hub):
    # Schema and behaviour agreeing both ways (positive_data_acceptance, negative_data_rejection) is test_api_promises' part,
    # through the CLI: here the key header is added to every case, which turns a negative case whose only fault is the
    # missing key into a valid request the hub rightly answers. All other checks run here, on many more examples.
    case.call_and_validate(base_url=hub.url, headers={"X-API-Key": hub.api_key},
                           excluded_checks=[positive_data_acceptance, negative_data_rejection])


# Operations whose request bodies the schema cannot say everything about (issue 20 item 18), each with the reason no OpenAPI
# 3.0.3 document can state it; none today. Rules that once stood here are now stated: text without control characters
# (qdash.config.TEXT_PATTERN), a calibration report's status only with its job_id (anyOf/not), task params per task (oneOf
# with a discriminator), calibration settings per algorithm, a job's times (RFC 3339, 1971..2259); a well-formed name that
# names nothing is a 404 (a model path, a retrain data_path) and a body id unlike the path's a 409. POST /feed/data: one of
# server/server_name and of time/timestamp, at least one number or boolean (not), tag text as line protocol carries it,
# RFC 3339 times, and field names as identifiers (x-patternProperties, read by schemathesis through the bench's hook).
# What still depends on the hub's state (a field keeps the kind the store holds; a time at most [store] max_future ahead)
# is described, and not met by these seeded runs.
OPEN: dict[str, str] = {}


def test_api_promises(hub):
    "schemathesis with every check, positive and negative data included: no 5xx anywhere, no mismatch outside OPEN."
    failed = schemathesis_failures(hub, max_examples=3, phases="fuzzing")
    assert {op for op, c in failed if c == "not_a_server_error"} == set()
    assert {(op, c) for op, c in failed if op not in OPEN} == set()
