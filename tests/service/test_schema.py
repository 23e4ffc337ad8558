"""Schemathesis against the OpenAPI schema of the running service: no input gives a 5xx.

The service runs under uvicorn on loopback in a thread of its own. Its resolver refuses
every name and its guard every non-public address, so the jobs the fuzzer starts never
send a packet anywhere.
"""

from __future__ import annotations

import asyncio
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error

from shoal.client.resolver import TableResolver
from shoal.service.server import build_server, listen
from shoal.service.settings import ServiceSettings

# examples per operation: the whole run stays well under a minute
EXAMPLES = int(os.environ.get("SHOAL_SCHEMA_EXAMPLES", "40"))


@pytest.fixture(scope="module")
def api_schema(tmp_path_factory: pytest.TempPathFactory) -> Iterator[schemathesis.BaseSchema]:
    tmp: Path = tmp_path_factory.mktemp("schema")
    config = ServiceSettings(db=str(tmp / "service.db"), max_jobs_per_token=1_000,
                             max_urls_per_job=100, drain_grace=0.1)
    sock = listen("127.0.0.1", 0)
    # no name resolves
    server = build_server(config, host="127.0.0.1", port=0, resolver=TableResolver({}))
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=lambda: loop.run_until_complete(
        server.serve(sockets=[sock])), name="shoal-service", daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the service did not start"
        time.sleep(0.01)
    try:
        yield schemathesis.openapi.from_url(
            f"http://127.0.0.1:{sock.getsockname()[1]}/openapi.json")
    finally:
        loop.call_soon_threadsafe(server.manager.begin_shutdown)
        server.should_exit = True
        thread.join(30)
        assert not thread.is_alive()
        loop.close()
        sock.close()


@pytest.mark.timeout(120)
def test_no_input_gives_a_server_error(api_schema: schemathesis.BaseSchema) -> None:
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 12
    calls: dict[str, int] = {}
    for operation in operations:
        @given(case=operation.as_strategy())
        @settings(max_examples=EXAMPLES, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case: schemathesis.Case) -> None:
            case.call_and_validate(checks=[not_a_server_error], timeout=10)
            calls[case.operation.label] = calls.get(case.operation.label, 0) + 1

        check()
    assert len(calls) == len(operations) and sum(calls.values()) >= 300, calls
