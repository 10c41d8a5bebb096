"""Inputs survive the trip through the input topic exactly."""

from __future__ import annotations

import json

from bridge.engine.inputs import Action, Associate, Event, Tick
from bridge.engine.wire import entity_key, input_from_wire, input_to_wire, parse_entity_key


def test_every_input_kind_round_trips_through_json():
    inputs = [
        Event(
            "f",
            "E",
            "k",
            "id-1",
            5,
            4,
            {"$events.E.a": [1, {"b": None}]},
            (("p", "v"),),
            "p",
            "kafka://t",
            2,
        ),
        Event("f", "E", "k", "id-2", 5),
        Tick("f", "k", 9, "alias"),
        Associate("f", "alias", "v", "k", 3),
        Action("f", "k", 7, "retry", "step", "alice", "stuck", "req-1"),
    ]
    for inp in inputs:
        assert input_from_wire(json.loads(json.dumps(input_to_wire(inp)))) == inp


def test_entity_keys_keep_instances_and_associations_apart():
    assert entity_key("f", "k", None) == "f/k"
    assert entity_key("f", "v", "payment_id") == "f/@payment_id/v"
    for parts in [("f", "k/with/slash", None), ("f", "v/1", "payment_id")]:
        assert parse_entity_key(entity_key(*parts)) == parts
