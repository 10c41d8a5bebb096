"""The command line as a user meets it: exit codes, messages, no tracebacks."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner
from support import EXAMPLE, ROOT, placed, reserved
from test_flow_validation import TEN_MISTAKES

from bridge.cli import main


@pytest.fixture
def cli():
    runner = CliRunner()

    def invoke(*args: str, input: str | None = None):
        return runner.invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


def test_validate_ok_and_bad_files(cli, tmp_path):
    ok = cli("validate", str(EXAMPLE))
    assert ok.exit_code == 0 and "ok (order-fulfilment v1, 7 events, 3 steps)" in ok.output
    bad = tmp_path / "orders.yaml"
    bad.write_text(TEN_MISTAKES)
    result = cli("validate", str(bad))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert lines[-1] == f"{len(lines) - 1} problem(s) found"
    assert len(lines) - 1 >= 10
    assert all(line.startswith(f"{bad}:") for line in lines[:-1])
    assert "Traceback" not in result.output


def test_validate_missing_and_non_yaml_files(cli, tmp_path):
    missing = cli("validate", str(tmp_path / "nope.yaml"))
    assert missing.exit_code == 1 and "cannot read" in missing.stderr
    binary = tmp_path / "x.yaml"
    binary.write_bytes(b"\xff\xfe\x00")
    assert "not UTF-8" in cli("validate", str(binary)).stderr


def test_graph_draws_every_step_in_both_formats(cli):
    mermaid = cli("graph", str(EXAMPLE))
    assert mermaid.exit_code == 0 and mermaid.output.startswith("flowchart LR")
    dot = cli("graph", str(EXAMPLE), "--format", "dot")
    assert dot.output.startswith('digraph "order-fulfilment"')
    for name in ("reserve", "pay", "ship", "ReleaseInventory"):
        assert name in mermaid.output and name in dot.output
    assert '"step:reserve" -> "step:pay" [label="InventoryReserved"]' in dot.output


def test_graph_svg_is_a_standalone_drawing_laid_out_by_after(cli, tmp_path):
    from xml.etree import ElementTree

    flow = tmp_path / "fan.yaml"
    text = EXAMPLE.read_text().replace("    after: [pay]\n", "    after: [reserve]\n")
    flow.write_text(text)  # ship now runs beside pay: both in the second column
    out = cli("graph", str(flow), "--format", "svg")
    assert out.exit_code == 0, out.output
    root = ElementTree.fromstring(out.output)
    ns = "{http://www.w3.org/2000/svg}"
    boxes = root.findall(f"{ns}rect")
    assert len(boxes) == 3
    texts = [t.text for t in root.iter(f"{ns}text")]
    assert {"reserve", "pay", "ship", "OrderPlaced", "completed"} <= set(texts)
    x = {t.text: float(t.get("x")) for t in root.iter(f"{ns}text") if t.get("font-weight")}
    assert x["reserve"] < x["pay"] == x["ship"]


def test_simulate_prints_one_json_document(cli, tmp_path):
    events = tmp_path / "e.jsonl"
    lines = [placed(0), reserved(5)]
    events.write_text("\n".join(json.dumps(x) for x in lines) + "\n")
    result = cli("simulate", "--flow", str(ROOT / "examples" / "flows"), "--events", str(events))
    doc = json.loads(result.output)
    assert set(doc) >= {"instances", "commands", "lifecycle", "dlq"}
    [inst] = doc["instances"]
    assert inst["steps"]["reserve"] == {**inst["steps"]["reserve"], "status": "DONE", "attempts": 1}
    assert all(set(r) >= {"type", "flow", "key", "at"} for r in doc["lifecycle"])


def test_simulate_reads_stdin_and_moves_the_clock_until(cli):
    stream = json.dumps(placed(0)) + "\n"
    result = cli(
        "simulate",
        "--flow",
        str(EXAMPLE),
        "--events",
        "-",
        "--compact",
        "--until",
        "2026-01-01T10:00:31Z",
        input=stream,
    )
    doc = json.loads(result.output)
    assert doc["instances"][0]["steps"]["reserve"]["status"] == "TIMED_OUT"


def test_simulate_bad_lines_go_to_the_dlq_and_the_rest_goes_on(cli, tmp_path):
    events = tmp_path / "e.jsonl"
    events.write_text(
        "\n".join(
            [
                "{not json",
                json.dumps({"source": "kafka://orders.events", "value": {}}),
                json.dumps({"at": "2026-01-01T10:00:00Z", "source": "http://x", "value": {}}),
                json.dumps(
                    {
                        "at": "2026-01-01T10:00:00Z",
                        "source": "kafka://orders.events",
                        "value": "<xml/>",
                    }
                ),
                json.dumps(
                    {
                        "at": "2026-01-01T10:00:00Z",
                        "source": "kafka://orders.events",
                        "value": {"type": "OrderPlaced", "order": {}},
                    }
                ),
                json.dumps(
                    {
                        "at": "2026-01-01T10:00:00Z",
                        "source": "kafka://orders.events",
                        "value": {"type": "Unrelated"},
                    }
                ),
                json.dumps(placed(1)),
            ]
        )
        + "\n"
    )
    doc = json.loads(cli("simulate", "--flow", str(EXAMPLE), "--events", str(events)).output)
    reasons = [d["reason"] for d in doc["dlq"]]
    assert len(reasons) == 5
    assert "not a JSON line" in reasons[0] and "e.jsonl:1" in reasons[0]
    assert "'at' is missing" in reasons[1]
    assert "unknown source 'http://x'" in reasons[2]
    assert "cannot decode the value as JSON" in reasons[3]
    assert "event OrderPlaced matched but has no key at $.order.id" in reasons[4]
    assert doc["stats"]["unmatched"] == 1
    assert doc["instances"][0]["status"] == "RUNNING"


def test_simulate_with_a_bad_flow_or_missing_events(cli, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(TEN_MISTAKES)
    result = cli("simulate", "--flow", str(bad), "--events", "-", input="")
    assert result.exit_code == 1 and f"{bad}:1: flow:" in result.stderr
    result = cli("simulate", "--flow", str(EXAMPLE), "--events", str(tmp_path / "none.jsonl"))
    assert result.exit_code == 2 and "--events: cannot read" in result.stderr


@pytest.mark.parametrize("command", ["validate", "graph", "simulate"])
def test_every_command_has_help(cli, command):
    result = cli(command, "--help")
    assert result.exit_code == 0 and "Usage:" in result.output
