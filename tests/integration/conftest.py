"""Real brokers for the integration tests: Tansu always, and the broker that
SAGABRIDGE_TEST_BOOTSTRAP names (Apache Kafka in CI) when it is set."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
from workers import TANSU

from bridge.runtime.embedded import start_tansu

BROKERS = ["tansu"] + (["external"] if os.environ.get("SAGABRIDGE_TEST_BOOTSTRAP") else [])


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
