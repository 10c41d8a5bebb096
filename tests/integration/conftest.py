"""Real brokers for the integration tests: Tansu always, and the broker that
SAGABRIDGE_TEST_BOOTSTRAP names (Apache Kafka in CI) when it is set."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator

import pytest
from servers import SCRIPT, start_elasticmq, stop_elasticmq
from workers import TANSU

from bridge.runtime.embedded import free_port, start_tansu

BROKERS = ["tansu"] + (["external"] if os.environ.get("SAGABRIDGE_TEST_BOOTSTRAP") else [])


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as env:
        env.setenv("AWS_ACCESS_KEY_ID", "x")
        env.setenv("AWS_SECRET_ACCESS_KEY", "x")
        env.delenv("AWS_PROFILE", raising=False)
        env.delenv("AWS_SESSION_TOKEN", raising=False)
        external = os.environ.get("SAGABRIDGE_TEST_SQS_ENDPOINT")
        if external:
            yield external
            return
        subprocess.run([SCRIPT, "fetch"], check=True, timeout=600)
        port = free_port()
        try:
            yield start_elasticmq(port)
        finally:
            stop_elasticmq(port)


@pytest.fixture(scope="session")
def tansu() -> Iterator[str]:
    broker = start_tansu()
    TANSU.add(broker.bootstrap)
    try:
        yield broker.bootstrap
    finally:
        broker.stop()


@pytest.fixture(scope="session", params=BROKERS)
def bootstrap(request: pytest.FixtureRequest) -> str:
    if request.param == "tansu":
        return str(request.getfixturevalue("tansu"))
    return os.environ["SAGABRIDGE_TEST_BOOTSTRAP"]
