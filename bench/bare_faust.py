"""The baseline for bench/runtime.py: a Faust worker whose one agent only decodes JSON.

Run by bench/runtime.py as a subprocess (Faust wants its own process and event loop):

    bare_faust.py --bootstrap HOST:PORT --topics a,b,c --expect N --result FILE --app-id ID

When the agent has seen N events it writes {"events", "first", "last", "cpu_s"} to FILE (wall-clock
seconds of the first and last event, process CPU seconds between them) and idles; the parent reads
the file and stops the process.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import faust


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topics", required=True, help="comma-separated")
    parser.add_argument("--expect", type=int, required=True)
    parser.add_argument("--result", type=Path, required=True)
    parser.add_argument("--app-id", required=True)
    args = parser.parse_args()

    datadir = tempfile.mkdtemp(prefix="bench-bare-")
    app = faust.App(
        args.app_id,
        broker=f"kafka://{args.bootstrap}",
        store="memory://",
        datadir=datadir,
        consumer_auto_offset_reset="earliest",
        # The tests' small group timeouts: a first join on Tansu waits the rebalance timeout.
        broker_session_timeout=6,
        broker_rebalance_timeout=3,
        broker_heartbeat_interval=1,
        web_enabled=False,
        autodiscover=False,
        stream_wait_empty=False,
    )
    topic = app.topic(*args.topics.split(","), value_serializer="raw", key_serializer="raw")

    @app.agent(topic, name="bare")
    async def bare(stream: faust.StreamT[bytes]) -> None:
        seen = 0
        first = cpu = 0.0
        async for value in stream:
            json.loads(value)
            seen += 1
            if seen == 1:
                first, cpu = time.time(), time.process_time()
            if seen == args.expect:
                found = {
                    "events": seen,
                    "first": first,
                    "last": time.time(),
                    "cpu_s": time.process_time() - cpu,
                }
                tmp = args.result.with_suffix(".tmp")
                tmp.write_text(json.dumps(found))
                tmp.rename(args.result)  # the parent never reads a half-written file

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
