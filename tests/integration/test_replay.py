"""`sagabridge replay`: a dead-lettered message goes back to its topic once the cause is fixed."""

from __future__ import annotations

import asyncio
import os
import subprocess
import time
import uuid
from pathlib import Path

import pytest
from kafka_io import create_topics, produce_lines
from workers import SAGABRIDGE, Worker

from bridge.engine.timefmt import iso

pytestmark = pytest.mark.kafka

FLOW = """\
flow: parcels
version: 1
key: parcel_id
events:
  Posted:
    source: kafka://{topic}
    match: {{type: Posted}}
    key: {key}
start: Posted
steps:
  deliver: {{done: Posted}}
"""


def replay(bootstrap: str, app_id: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [SAGABRIDGE, "replay", "--bootstrap", bootstrap, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={**os.environ, "SAGABRIDGE_APP_ID": app_id},
    )


def test_replay_sends_dead_letters_back_once_the_flow_is_fixed(
    bootstrap: str, tmp_path: Path
) -> None:
    uid = uuid.uuid4().hex[:8]
    topic = f"parcels.{uid}"
    asyncio.run(create_topics(bootstrap, [topic]))
    flow = tmp_path / "parcels.yaml"
    flow.write_text(FLOW.format(topic=topic, key="$.parcel.id"))  # the wrong path
    app = f"sb-{uid}"
    worker = Worker(flow, bootstrap, app, tmp_path).start()
    posted = [
        {
            "at": iso(int(time.time() * 1000)),
            "source": f"kafka://{topic}",
            "value": {"type": "Posted", "parcel_id": f"p{uid}-{n}"},
            "key": f"p{uid}-{n}",
            "headers": {"origin": "post-office"},
        }
        for n in range(3)
    ]
    try:
        worker.wait_ready()
        asyncio.run(produce_lines(bootstrap, posted))
        time.sleep(3)  # the worker dead-letters them: no key at $.parcel.id
        assert worker.get("parcels", f"p{uid}-0")[0] == 404
    finally:
        assert worker.stop() == 0

    listed = replay(bootstrap, app, "--source", f"kafka://{topic}", "--dry-run")
    assert listed.returncode == 0, listed.stderr
    assert "would replay 3 message(s)" in listed.stdout
    assert "has no key at $.parcel.id" in listed.stdout

    flow.write_text(FLOW.format(topic=topic, key="$.parcel_id"))  # fixed
    worker = Worker(flow, bootstrap, app, tmp_path).start()
    try:
        worker.wait_ready()
        done = replay(bootstrap, app, "--source", f"kafka://{topic}")
        assert done.returncode == 0, done.stderr
        assert f"kafka://{topic}: 3" in done.stdout
        for n in range(3):
            body = worker.wait_for("parcels", f"p{uid}-{n}", lambda b: b["status"] == "COMPLETED")
            assert body["key"] == f"p{uid}-{n}"
        again = replay(bootstrap, app, "--source", f"kafka://{topic}")
        assert again.returncode == 0 and "replayed 0 message(s)" in again.stdout
    finally:
        assert worker.stop() == 0


def test_replay_says_what_is_wrong_with_its_arguments(bootstrap: str) -> None:
    bad = replay(bootstrap, "x", "--source", "topic-without-scheme")
    assert bad.returncode == 2 and "use kafka://TOPIC or sqs://QUEUE" in bad.stderr
    assert "Traceback" not in bad.stderr
    nowhere = subprocess.run(
        [SAGABRIDGE, "replay"], capture_output=True, text=True, timeout=30, check=False
    )
    assert nowhere.returncode == 2 and "bootstrap" in nowhere.stderr
