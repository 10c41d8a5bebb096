"""The flow language: YAML flow files, their validation, and the tables the engine runs on."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from bridge.errors import FlowError
from bridge.flow.compiled import CompiledFlow, compile_flow
from bridge.flow.loader import FlowDef, load_flow_text, load_flows

__all__ = [
    "CompiledFlow",
    "FlowDef",
    "compile_flow",
    "load_compiled",
    "load_flow_text",
    "load_flows",
]


def load_compiled(paths: Iterable[str | Path]) -> list[CompiledFlow]:
    """Load and compile every flow named by `paths`; FlowError lists every problem found."""
    flows, problems, _ = load_flows(paths)
    if problems:
        raise FlowError(problems)
    return [compile_flow(f) for f in flows]
