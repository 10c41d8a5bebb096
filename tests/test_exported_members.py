"""The public API is pinned: changing what `bridge` exports must be deliberate."""

import bridge


def test_exported_members():
    assert sorted(bridge.__all__) == [
        "Action",
        "BrokerError",
        "Command",
        "CompiledFlow",
        "ConfigError",
        "DecodeError",
        "EncodeError",
        "Event",
        "FlowError",
        "Instance",
        "Lifecycle",
        "Matcher",
        "Message",
        "SagabridgeError",
        "Simulator",
        "Tick",
        "apply",
        "command_id",
        "compile_flow",
        "load_compiled",
        "load_flows",
    ]
    for name in bridge.__all__:
        assert getattr(bridge, name) is not None
