"""The example flow, rewritten for the demo: short deadlines, one mode, payments on SQS or Kafka.

The rewrite goes to a file in the demo's folder, and `sagabridge run` loads it like any flow.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from bridge.demo.knobs import FLOW_DEADLINE, STEP_TIMINGS, Bus, DemoError, Mode
from bridge.errors import FlowError
from bridge.flow import CompiledFlow, load_compiled

EXAMPLE = Path("examples") / "flows" / "order-fulfilment.yaml"
TOPICS = Path("topics")
# The checkout this package was installed from (an editable install, as `make` does).
_CHECKOUT = Path(__file__).resolve().parents[2]

# Where the payment service listens and speaks, per bus.
PAYMENTS: dict[Bus, dict[str, str]] = {
    "sqs": {"events": "sqs://payments-events", "commands": "sqs://payments-commands"},
    "kafka": {"events": "kafka://payments.events", "commands": "kafka://payments.commands"},
}
SHIPPING_QUEUE = "shipping-payments"  # shipping's own copy of payment events on SQS


def find(relative: Path) -> Path | None:
    """`relative` under the current folder, else under the checkout sagabridge runs from."""
    for base in (Path.cwd(), _CHECKOUT):
        if (base / relative).exists():
            return (base / relative).resolve()
    return None


def example_flow() -> Path:
    found = find(EXAMPLE)
    if found is None:
        raise DemoError(
            f"cannot find {EXAMPLE}: run the demo from a sagabridge checkout "
            "(the example flow and its services go together)"
        )
    return found


def derive(example: Path, mode: Mode, payments_on: Bus, out_dir: Path) -> tuple[Path, CompiledFlow]:
    """Write the demo's copy of `example` into `out_dir`; return its path and compiled flow."""
    doc: dict[str, Any] = yaml.safe_load(example.read_text(encoding="utf-8"))
    doc["mode"] = mode
    doc["deadline"] = FLOW_DEADLINE
    for name, step in doc["steps"].items():
        step["mode"] = mode
        step.update(STEP_TIMINGS.get(name, {}))
    if payments_on == "kafka":
        moved = {PAYMENTS["sqs"][k]: PAYMENTS["kafka"][k] for k in ("events", "commands")}
        for event in doc["events"].values():
            event["source"] = moved.get(event["source"], event["source"])
        for step in doc["steps"].values():
            for part in ("command", "compensate"):
                if step.get(part):
                    step[part]["to"] = moved.get(step[part]["to"], step[part]["to"])
    header = (
        f"# Written by `sagabridge demo` from {example}: deadlines shortened for the demo,\n"
        f"# every step in mode {mode}, payments on {payments_on}.\n"
    )
    path = out_dir / example.name
    path.write_text(header + yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
    try:
        (flow,) = load_compiled([path])
    except (FlowError, ValueError) as exc:
        raise DemoError(f"the demo's copy of {example} is not a valid flow: {exc}") from None
    return path, flow


def original_deadlines(example: Path) -> dict[str, str]:
    """The step deadlines the example flow itself declares, to show beside the demo's."""
    doc = yaml.safe_load(example.read_text(encoding="utf-8"))
    return {name: str(step.get("deadline", "-")) for name, step in doc["steps"].items()}
