"""Schemathesis against the service's own OpenAPI schema: no 500s, no off-schema answers.

Bounded by FUZZ_EXAMPLES per operation so `make test` stays quick; the ids it guesses
hit a stored model, input set and run as well as missing ones.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
)

from app.service_process import LiveServer

FUZZ_EXAMPLES = 60
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance]


@pytest.fixture(scope="module")
def fuzzed_server(keras: Any, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    data_dir = tmp_path_factory.mktemp("fuzz")
    server = LiveServer(data_dir, None)
    server.start()
    model_path = data_dir / "seed.keras"
    keras.Sequential([keras.Input((3,), name="x"), keras.layers.Dense(2)]).save(model_path)
    with server.client() as client:
        client.wait_for_run(client.queue_run(model_path, ["numpy"], batch=2)["id"])
    yield server
    server.stop()


def fuzz(operation: Any) -> int:
    """Run the checks on FUZZ_EXAMPLES generated requests; returns how many were sent."""
    sent = 0

    @given(case=operation.as_strategy())
    @settings(
        max_examples=FUZZ_EXAMPLES,
        deadline=None,
        suppress_health_check=list(HealthCheck),
        derandomize=True,
        database=None,
    )
    def call(case: Any) -> None:
        nonlocal sent
        sent += 1
        case.call_and_validate(checks=CHECKS)

    call()
    return sent


def test_api_answers_within_its_schema_and_never_500(fuzzed_server: LiveServer) -> None:
    api = schemathesis.openapi.from_url(f"{fuzzed_server.url}/openapi.json")
    sent: dict[str, int] = {}
    failures: dict[str, str] = {}
    for result in api.get_all_operations():
        operation = result.ok()
        try:
            sent[operation.label] = fuzz(operation)
        except Exception as error:  # collect every operation's failure, then report all
            failures[operation.label] = str(error)[:2000]
    print(f"fuzzed {len(sent)} operations with {sum(sent.values())} requests: {sent}")
    assert failures == {}
    assert len(sent) >= 12 and sum(sent.values()) >= 12 * 5, sent
