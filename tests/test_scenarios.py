"""Recorded scenarios, replayed end to end through `sagabridge simulate`.

Each folder under `tests/scenarios/` holds `events.jsonl` (the simulate input), optionally
`flow.yaml` or a `flows/` directory (else the example flow), optionally `args` (extra simulate
arguments such as `--until`), and `expected.json`: the parts of the output that must hold, checked
by hand against DESIGN.md. `project()` below reduces a simulate document to those parts.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import shlex
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from bridge.cli import main
from bridge.engine.timefmt import parse_time

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = Path(__file__).resolve().parent / "scenarios"
EXAMPLE_FLOW = ROOT / "examples" / "flows" / "order-fulfilment.yaml"
SCENARIO_NAMES = sorted(p.name for p in SCENARIOS.iterdir() if p.is_dir())

# Lifecycle details that change what a record means, shown next to its type.
_FLAGS = ("event", "via", "late", "final")


def flow_arg(folder: Path) -> Path:
    if (folder / "flow.yaml").exists():
        return folder / "flow.yaml"
    if (folder / "flows").is_dir():
        return folder / "flows"
    return EXAMPLE_FLOW


def simulate(folder: Path) -> dict[str, Any]:
    """Run the real CLI on a scenario folder and return its JSON document."""
    args = ["simulate", "--flow", str(flow_arg(folder)), "--events", str(folder / "events.jsonl")]
    if (folder / "args").exists():
        args += shlex.split((folder / "args").read_text())
    result = CliRunner().invoke(main, [*args, "--compact"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    doc: dict[str, Any] = json.loads(result.output)
    return doc


def lifecycle_line(rec: dict[str, Any]) -> str:
    """`command.sent reserve ReserveInventory/retry/2`, `step.done pay late=True`, ..."""
    parts = [rec["type"]]
    if "step" in rec:
        parts.append(rec["step"])
    if "command" in rec:
        parts.append(f"{rec['command']}/{rec['action']}/{rec['attempt']}")
    parts.extend(f"{k}={rec[k]}" for k in _FLAGS if k in rec)
    return " ".join(parts)


def history_line(entry: dict[str, Any]) -> str:
    parts = [entry["type"]]
    if "step" in entry:
        parts.append(entry["step"])
    if "event" in entry:
        parts.append(f"event={entry['event']}")
    return " ".join(parts)


def step_view(view: dict[str, Any]) -> dict[str, Any]:
    out = {"status": view["status"], "attempts": view["attempts"]}
    if view.get("late"):
        out["late"] = True
    return out


def project(doc: dict[str, Any]) -> dict[str, Any]:
    """The parts of a simulate document that a scenario pins down."""
    lifecycle: dict[str, list[str]] = {}
    for rec in doc["lifecycle"]:
        lifecycle.setdefault(rec["key"], []).append(lifecycle_line(rec))
    return {
        "instances": {
            inst["key"]: {
                "flow": inst["flow"],
                "version": inst["version"],
                "status": inst["status"],
                "steps": {name: step_view(v) for name, v in inst["steps"].items()},
                "history": [history_line(h) for h in inst["history"]],
            }
            for inst in doc["instances"]
        },
        "commands": [
            [c["name"], c["action"], c["attempt"], c["to"], c["key"]] for c in doc["commands"]
        ],
        "lifecycle": lifecycle,
        "dlq": [d["reason"] for d in doc["dlq"]],
        "buffered": [
            [b["key"], b.get("via"), b["event"], b["id"]] for b in doc.get("buffered", [])
        ],
        "stats": doc["stats"],
    }


def test_every_scenario_folder_is_complete() -> None:
    assert "happy" in SCENARIO_NAMES
    for name in SCENARIO_NAMES:
        folder = SCENARIOS / name
        assert (folder / "events.jsonl").is_file(), f"{name}: no events.jsonl"
        assert (folder / "expected.json").is_file(), f"{name}: no expected.json"


@pytest.mark.parametrize("name", SCENARIO_NAMES)
def test_scenario(name: str) -> None:
    folder = SCENARIOS / name
    expected = json.loads((folder / "expected.json").read_text())
    got = project(simulate(folder))
    # A step expected as null is one DESIGN.md leaves open (e.g. a step still ACTIVE when the
    # instance ends): its presence is checked, not its value.
    for key, inst in expected["instances"].items():
        for step, view in inst["steps"].items():
            if view is None and step in got["instances"].get(key, {}).get("steps", {}):
                got["instances"][key]["steps"][step] = None
    dlq_expected = expected.pop("dlq")
    dlq_got = got.pop("dlq")
    assert got == expected
    # DLQ reasons name the file and line they came from: the expectation is a substring.
    assert len(dlq_got) == len(dlq_expected), dlq_got
    for want, reason in zip(dlq_expected, dlq_got, strict=True):
        assert want in reason


# -- details that a projection cannot show ----------------------------------------------------


def _ms(text: str) -> int:
    at = parse_time(text)
    assert at is not None
    return at


def test_retries_back_off_exponentially_within_the_jitter_band() -> None:
    """orchestrate-retries: attempt n+1 goes out min(5s * 2^(n-1), 15s) +-20% after attempt n's
    30s deadline; the deadline of attempt 4 makes the step TIMED_OUT for good."""
    doc = simulate(SCENARIOS / "orchestrate-retries")
    initial, cap, jitter, deadline = 5_000, 15_000, 0.2, 30_000
    for key in ("o-1", "o-2"):
        sends = [c for c in doc["commands"] if c["key"] == key and c["step"] == "ship"]
        assert [(c["action"], c["attempt"]) for c in sends] == [
            ("invoke", 1),
            ("retry", 2),
            ("retry", 3),
            ("retry", 4),
        ]
        times = [_ms(c["issued_at"]) for c in sends]
        delays = []
        for n in range(1, 4):
            base = min(initial * 2 ** (n - 1), cap)
            delay = times[n] - (times[n - 1] + deadline)
            assert base * (1 - jitter) <= delay <= base * (1 + jitter), (key, n, delay)
            delays.append(delay)
        # the jitter is really applied (derived from the command id, so this is stable)
        assert delays != [5_000, 10_000, 15_000]
        timed_out = [
            r for r in doc["lifecycle"] if r["key"] == key and r["type"] == "step.timed_out"
        ]
        assert len(timed_out) == 1
        assert timed_out[0]["final"] is True
        assert _ms(timed_out[0]["at"]) == times[3] + deadline
        failed = [r for r in doc["lifecycle"] if r["key"] == key and r["type"] == "instance.failed"]
        assert [_ms(r["at"]) for r in failed] == [times[3] + deadline]


def test_retry_jitter_differs_between_instances() -> None:
    """Jitter comes from the command id, which includes the key: two instances whose step times
    out the same way do not retry in lockstep."""
    doc = simulate(SCENARIOS / "orchestrate-retries")
    backoffs = {}
    for key in ("o-1", "o-2"):
        sends = [
            _ms(c["issued_at"]) for c in doc["commands"] if c["key"] == key and c["step"] == "ship"
        ]
        backoffs[key] = [b - (a + 30_000) for a, b in itertools.pairwise(sends)]
    assert len(backoffs["o-1"]) == len(backoffs["o-2"]) == 3
    assert backoffs["o-1"] != backoffs["o-2"]


def test_command_envelopes_follow_the_design() -> None:
    doc = simulate(SCENARIOS / "payment-declined")
    flow_version = {i["key"]: i["version"] for i in doc["instances"]}
    assert doc["commands"]
    for c in doc["commands"]:
        text = (
            f"{c['flow']}|{flow_version[c['key']]}|{c['key']}|{c['step']}|"
            f"{c['action']}|{c['attempt']}"
        )
        assert c["command_id"] == hashlib.sha256(text.encode()).hexdigest()[:32]
        assert set(c) == {
            "command_id",
            "name",
            "flow",
            "key",
            "step",
            "action",
            "attempt",
            "issued_at",
            "payload",
            "to",
        }
    by_name = {c["name"]: c for c in doc["commands"]}
    # payloads are rendered from $key and the kept fields of the events the instance received
    assert by_name["ReserveInventory"]["payload"] == {
        "order_id": "o-1",
        "items": ["sku-1", "sku-2"],
    }
    assert by_name["CapturePayment"]["payload"] == {"order_id": "o-1", "amount": 99}
    assert by_name["ReleaseInventory"]["payload"] == {"order_id": "o-1"}
    assert by_name["ReleaseInventory"]["issued_at"] == "2026-01-01T10:00:20.000Z"


def test_shadow_records_what_it_would_send_with_its_payload() -> None:
    doc = simulate(SCENARIOS / "shadow")
    assert doc["commands"] == []
    would = [r for r in doc["lifecycle"] if r["type"] == "command.would_send"]
    assert [(r["command"], r["action"], r["attempt"], r["at"]) for r in would] == [
        ("ReserveInventory", "invoke", 1, "2026-01-01T10:00:00.000Z"),
        ("ReserveInventory", "retry", 2, "2026-01-01T10:00:30.000Z"),
        ("CapturePayment", "invoke", 1, "2026-01-01T10:01:10.000Z"),
        ("ReleaseInventory", "compensate", 1, "2026-01-01T10:01:30.000Z"),
    ]
    assert would[0]["payload"] == {"order_id": "o-1", "items": ["sku-1"]}
    assert would[0]["to"] == "kafka://inventory.commands"


def test_observe_timeout_then_late_done_keeps_both_times() -> None:
    doc = simulate(SCENARIOS / "observe-lost-event")
    pay = doc["instances"][0]["steps"]["pay"]
    assert pay["activated_at"] == "2026-01-01T10:00:05.000Z"
    assert pay["ended_at"] == "2026-01-01T10:05:00.000Z"
    timed_out = [r for r in doc["lifecycle"] if r["type"] == "step.timed_out"]
    # the 2m deadline counts from activation, and fires when the clock passes it
    assert [(r["step"], r["at"], r["final"]) for r in timed_out] == [
        ("pay", "2026-01-01T10:02:05.000Z", False)
    ]


def test_flow_deadline_counts_from_the_start() -> None:
    doc = simulate(SCENARIOS / "flow-deadline")
    inst = doc["instances"][0]
    assert inst["ended_at"] == "2026-01-04T10:00:00.000Z"  # 72h after OrderPlaced arrived
    ship = inst["steps"]["ship"]
    assert ship["ended_at"] == "2026-01-03T10:00:20.000Z"  # 48h after ship became active


def test_orphans_expire_after_the_orphan_ttl() -> None:
    doc = simulate(SCENARIOS / "orphans")
    orphaned = [r for r in doc["lifecycle"] if r["type"] == "event.orphaned"]
    assert [(r["key"], r["id"], r["at"]) for r in orphaned] == [
        ("o-3", "f1", "2026-01-01T11:00:30.000Z")
    ]
