"""Fixtures shared by the whole suite."""

from __future__ import annotations

import pytest
from support import example_flow

from bridge.flow import CompiledFlow


@pytest.fixture
def example() -> CompiledFlow:
    return example_flow()
