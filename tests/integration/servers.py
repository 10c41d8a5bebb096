"""ElasticMQ (SQS-compatible, from Maven Central) started and stopped by brokers/elasticmq.sh."""

from __future__ import annotations

import subprocess
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "brokers" / "elasticmq.sh"


def start_elasticmq(port: int) -> str:
    started = subprocess.run(
        [SCRIPT, "start", str(port)], check=True, capture_output=True, text=True, timeout=90
    )
    return started.stdout.strip().rpartition("endpoint=")[2]


def stop_elasticmq(port: int) -> None:
    subprocess.run([SCRIPT, "stop", str(port)], check=False, capture_output=True, timeout=60)
