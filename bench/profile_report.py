"""Where the worker's time goes per event, from `bench/runtime.py --profile PREFIX`.

    bench/profile_report.py PREFIX bench/results/runtime-kafka.json [--top 30]

Reads PREFIX-throughput.txt and PREFIX-latency.txt (py-spy collapsed stacks, 250 samples/s) and
prints, for each function of sagabridge, Faust, mode or aiokafka, the wall time its calls took
per event of that phase (inclusive, main thread only), next to each other. py-spy counts a
thread that waits for a CPU as busy, so on a loaded machine every figure grows.
"""

from __future__ import annotations

import argparse
import json
import re
from collections import Counter
from pathlib import Path

RATE = 250  # samples per second, as bench/runtime.py runs py-spy
OURS = re.compile(r"\((bridge|faust|mode|aiokafka)/")
LINE = re.compile(r":\d+\)$")


def load(path: Path) -> Counter[str]:
    """Samples per function (inclusive) on the main thread; '<busy>' and '<idle>' in total."""
    found: Counter[str] = Counter()
    for line in path.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or "Thread._bootstrap" in stack:  # Faust's consumer thread, py-spy's own
            continue
        frames = [LINE.sub(")", f) for f in stack.split(";")]
        if frames[-1].startswith("EpollSelector.select"):
            found["<idle: waiting in select>"] += int(n)
            continue
        found["<busy>"] += int(n)
        for f in set(frames):
            if OURS.search(f):
                found[f] += int(n)
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("prefix", type=Path)
    parser.add_argument("results", type=Path, help="the runtime-<broker>.json of that run")
    parser.add_argument("--top", type=int, default=30)
    args = parser.parse_args()
    doc = json.loads(args.results.read_text())
    lat = doc["latency"]
    events = {
        "throughput": doc["sagabridge"]["events"],
        "latency": int(lat["rate_per_s"] * (lat["warmup_s"] + lat["seconds"])),
    }
    phases = {p: load(args.prefix.with_name(f"{args.prefix.name}-{p}.txt")) for p in events}
    us = {p: {f: n / RATE / events[p] * 1e6 for f, n in c.items()} for p, c in phases.items()}
    busy = phases["throughput"]["<busy>"]
    names = [
        f
        for f in sorted(
            set(us["throughput"]) | set(us["latency"]), key=lambda f: -us["throughput"].get(f, 0)
        )
        # Frames on every busy stack (the CLI, the worker's loop) say nothing.
        if f == "<busy>" or phases["throughput"][f] < 0.98 * busy
    ]
    print(f"{'us per event (inclusive, main thread)':<90} {'backlog':>8} {'steady':>8}")
    for f in names[: args.top]:
        print(f"{f[:90]:<90} {us['throughput'].get(f, 0):8.0f} {us['latency'].get(f, 0):8.0f}")


if __name__ == "__main__":
    main()
