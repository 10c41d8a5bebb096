"""The demo services on their own, as docker-compose.yml runs them: against a Kafka and an SQS
server someone else started, beside a plain `sagabridge run` on the example flow."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiobotocore.session import get_session
from workers import SAGABRIDGE, Worker

from bridge.runtime.embedded import start_tansu

pytestmark = pytest.mark.kafka
ROOT = Path(__file__).resolve().parents[2]
FLOWS = ROOT / "examples" / "flows"
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
_CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing"}


async def create_queues(endpoint: str) -> None:
    session = get_session()
    async with session.create_client(
        "sqs", endpoint_url=endpoint, region_name="us-east-1", **_CREDENTIALS
    ) as sqs:
        for name in ("payments-events", "payments-commands", "shipping-payments"):
            await sqs.create_queue(QueueName=name)


def test_demo_services_run_the_choreography_that_sagabridge_tracks(
    endpoint: str, tmp_path: Path
) -> None:
    with start_tansu() as broker:
        env = {**os.environ, **AWS, "AWS_DEFAULT_REGION": "us-east-1"}
        applied = subprocess.run(
            [SAGABRIDGE, "topics", "apply", "--flows", str(FLOWS), "--bootstrap", broker.bootstrap],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
            cwd=ROOT,
            env=env,
        )
        assert applied.returncode == 0, applied.stdout + applied.stderr
        asyncio.run(create_queues(endpoint))  # as docker-compose.yml's ElasticMQ config does
        worker = Worker(
            FLOWS,
            broker.bootstrap,
            "sb-demo-services",
            tmp_path,
            args=("--sqs-endpoint", endpoint),
            SAGABRIDGE_PRODUCER_BATCH_BYTES="1",
            **AWS,
        )
        services = None
        try:
            worker.start().wait_ready()
            services = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "bridge.demo.services",
                    "--bootstrap",
                    broker.bootstrap,
                    "--sqs-endpoint",
                    endpoint,
                    "--orders-per-second",
                    "5",
                    "--lose-rate",
                    "0",
                    "--decline-rate",
                    "0",
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                env=env,
            )
            deadline = time.monotonic() + 60
            completed = 0
            while time.monotonic() < deadline:  # observe mode: the services alone finish orders
                url = worker.url + "/api/flows/order-fulfilment/instances?status=COMPLETED"
                with urllib.request.urlopen(url, timeout=5) as resp:
                    completed = len(json.loads(resp.read())["items"])
                if completed >= 5:
                    break
                time.sleep(0.5)
            assert completed >= 5, worker.tail()
            services.send_signal(signal.SIGTERM)
            out, _ = services.communicate(timeout=20)
            assert services.returncode == 0, out
            assert b"demo services: orders, inventory, payment (on sqs), shipping" in out
        finally:
            if services is not None and services.poll() is None:
                services.kill()
            assert worker.stop() == 0
