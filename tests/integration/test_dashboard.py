"""The dashboard in a real browser (Debian's headless Chromium, driven by Playwright) against a
real worker: the flow diagram with live counts, the stuck and failed lists, search by key, an
instance's timeline, and an operator's retry (confirmed, with the bearer token the worker asks
for) that reaches the command topic. Screenshots land in test-artifacts/dashboard/."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import urllib.request
import uuid
from collections.abc import Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import pytest
from kafka_io import create_topics, produce_lines, read_topic
from playwright.sync_api import Browser, Page, expect, sync_playwright
from support import ROOT
from workers import Worker

from bridge.engine.timefmt import iso

pytestmark = [pytest.mark.kafka, pytest.mark.timeout(240)]

T = TypeVar("T")
FLOW = "parcel"
ARTIFACTS = ROOT / "test-artifacts" / "dashboard"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
WAIT_MS = 20_000  # for what the page shows after a refresh (every 2 s) or an engine decision

# One orchestrated step with a command and a 1 s deadline, tried once: an instance nobody
# answers fails within a second, and a retry sends the command again. The observed step after it
# only times out (not final), so its instance stays RUNNING and shows as overdue.
FLOW_YAML = """\
flow: parcel
version: 1
key: parcel_id
mode: orchestrate
on_failure: fail
events:
  ParcelBooked:
    source: kafka://{events}
    match: {{type: ParcelBooked}}
    key: $.parcel_id
    id: $.event_id
  LabelPrinted:
    source: kafka://{events}
    match: {{type: LabelPrinted}}
    key: $.parcel_id
    id: $.event_id
  ParcelDelivered:
    source: kafka://{events}
    match: {{type: ParcelDelivered}}
    key: $.parcel_id
    id: $.event_id
start: ParcelBooked
steps:
  label:
    done: LabelPrinted
    deadline: 1s
    retry: {{attempts: 1}}
    command:
      name: PrintLabel
      to: kafka://{commands}
      payload: {{parcel_id: $key}}
  deliver:
    after: [label]
    done: ParcelDelivered
    deadline: 1s
    mode: observe
"""


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as pw:
        found = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield found
        finally:
            found.close()


class Watched:
    """A page whose script errors are collected, with screenshots saved as test artifacts."""

    def __init__(self, browser: Browser, width: int, height: int, worker: Worker) -> None:
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page: Page = self.context.new_page()
        self.page.set_default_timeout(WAIT_MS)
        self.width = width
        self.worker = worker
        self.errors: list[str] = []
        self.page.on("pageerror", lambda exc: self.errors.append(f"script error: {exc}"))
        self.page.on(
            "console",
            lambda msg: (
                self.errors.append(f"console: {msg.text}")
                if msg.type == "error" and "Failed to load resource" not in msg.text
                else None
            ),
        )

    def open(self, route: str) -> Page:
        self.page.goto(f"{self.worker.url}/{route}")
        return self.page

    def shot(self, name: str) -> None:
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        self.page.screenshot(path=str(ARTIFACTS / f"{name}-{self.width}.png"), full_page=True)

    @contextlib.contextmanager
    def step(self, what: str) -> Iterator[None]:
        """On failure: a screenshot, and the worker's log, next to what was being checked."""
        try:
            yield
        except AssertionError as exc:
            with contextlib.suppress(Exception):
                self.shot(f"failed-{re.sub(r'[^a-z0-9]+', '-', what.lower()).strip('-')}")
            raise AssertionError(
                f"dashboard: {what}: {exc}\nbrowser errors: {self.errors}\n"
                f"worker log:\n{self.worker.tail(25)}"
            ) from exc

    def overflow(self) -> int:
        return int(self.page.evaluate("document.documentElement.scrollWidth"))

    def close(self) -> None:
        self.context.close()


def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """The Kafka helpers are async; Playwright's sync API keeps an event loop running in this
    thread, so they run in a thread of their own."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


def fetch(url: str) -> tuple[int, str, bytes]:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.status, resp.headers.get("Content-Type", ""), resp.read()


def event(kind: str, parcel: str, at_ms: int, events: str) -> dict[str, Any]:
    return {
        "at": iso(at_ms),
        "source": f"kafka://{events}",
        "key": parcel,
        "value": {"type": kind, "parcel_id": parcel, "event_id": f"{kind}-{parcel}"},
    }


def test_the_dashboard_shows_flows_finds_an_instance_and_retries_a_step(
    bootstrap: str, tmp_path: Path, browser: Browser
) -> None:
    uid = uuid.uuid4().hex[:8]
    events, commands = f"parcels.events.{uid}", f"parcels.commands.{uid}"
    flow = tmp_path / "parcel.yaml"
    flow.write_text(FLOW_YAML.format(events=events, commands=commands))
    run_async(create_topics(bootstrap, [events, commands]))
    done, late, stuck = f"{uid}-done", f"{uid}-late", f"{uid}-stuck"
    token = f"token-{uid}"
    worker = Worker(flow, bootstrap, f"sb-{uid}", tmp_path, args=("--api-token", token)).start()
    wide = narrow = None
    try:
        worker.wait_ready()
        status, kind, body = fetch(worker.url + "/")
        assert status == 200 and "text/html" in kind, f"GET / gave {status} {kind}"
        assert b"static/app.js" in body, "GET / is not the dashboard page"
        status, kind, _ = fetch(worker.url + "/static/app.js")
        assert status == 200 and "javascript" in kind, (
            f"GET /static/app.js gave {status} {kind!r}: browsers refuse a module script "
            "without a JavaScript content type"
        )

        now = int(time.time() * 1000)
        run_async(
            produce_lines(
                bootstrap,
                [
                    event("ParcelBooked", done, now, events),
                    event("LabelPrinted", done, now + 100, events),
                    event("ParcelDelivered", done, now + 200, events),
                    event("ParcelBooked", late, now, events),  # deliver is never confirmed
                    event("LabelPrinted", late, now + 100, events),
                    event("ParcelBooked", stuck, now, events),  # the label never comes
                ],
            )
        )
        worker.wait_for(FLOW, done, lambda b: b["status"] == "COMPLETED")
        worker.wait_for(FLOW, late, lambda b: b["steps"]["deliver"]["status"] == "TIMED_OUT")
        worker.wait_for(FLOW, stuck, lambda b: b["status"] == "FAILED")

        wide = Watched(browser, 1280, 800, worker)
        page = wide.open(f"#/flows/{FLOW}")
        with wide.step("the header shows the worker's health"):
            expect(page.get_by_test_id("health")).to_contain_text("healthy")
        with wide.step("the diagram shows the steps with their live counts"):
            diagram = page.get_by_test_id("flow-diagram")
            expect(diagram).to_be_visible()
            expect(diagram.get_by_test_id("start-node")).to_contain_text("ParcelBooked")
            expect(diagram.get_by_test_id("start-node")).to_contain_text("3 instances")
            label = diagram.get_by_test_id("step-node-label")
            deliver = diagram.get_by_test_id("step-node-deliver")
            expect(label).to_have_attribute("data-failed", "1")  # stuck: timed out, final
            expect(label).to_have_attribute("class", re.compile(r"\bis-failed\b"))
            expect(deliver).to_have_attribute("data-overdue", "1")  # late: observed, overdue
            expect(deliver).to_have_attribute("data-failed", "0")
            expect(deliver).to_have_attribute("class", re.compile(r"\bis-overdue\b"))
            expect(page.get_by_test_id("status-count-COMPLETED")).to_be_visible()
            assert diagram.bounding_box() is not None
        with wide.step("the stuck list holds the overdue instance, the failed list the failed one"):
            stuck_list = page.get_by_test_id("stuck-list")
            failed_list = page.get_by_test_id("failed-list")
            expect(stuck_list.locator(f'[data-key="{late}"]')).to_be_visible()
            expect(failed_list.locator(f'[data-key="{stuck}"]')).to_contain_text("FAILED")
            expect(failed_list.locator(f'[data-key="{stuck}"]')).to_contain_text(
                "step label timed out"
            )
            expect(page.locator(f'[data-key="{done}"]')).to_have_count(0)
        wide.shot("flow")

        with wide.step("a key prefix lists the instances whose key starts with it"):
            search = page.get_by_label("Search by key")
            search.fill(f"{uid}-")
            search.press("Enter")
            found = page.get_by_test_id("filtered-list").get_by_test_id("instance-row")
            expect(found).to_have_count(3)
        with wide.step("an exact key opens the instance"):
            search.fill(stuck)
            search.press("Enter")
            expect(page).to_have_url(re.compile(rf"#/flows/{FLOW}/instances/{stuck}$"))
            expect(page.get_by_test_id("instance-status")).to_have_text("FAILED")
            timeline = page.get_by_test_id("timeline")
            expect(timeline.locator('[data-type="command.sent"]')).to_contain_text(
                "PrintLabel sent (invoke, attempt 1)"
            )
            expect(timeline.locator('[data-type="step.timed_out"]')).to_contain_text("final")
            expect(page.get_by_test_id("step-row-label")).to_have_attribute(
                "data-status", "TIMED_OUT"
            )
        wide.shot("instance-before-retry")

        with wide.step("Retry asks for confirmation, then the engine sends the command again"):
            page.get_by_test_id("step-row-label").get_by_role("button", name="Retry").click()
            dialog = page.get_by_test_id("confirm-dialog")
            expect(dialog).to_be_visible()
            expect(dialog).to_contain_text("PrintLabel")
            dialog.get_by_label("Reason").fill("carrier was down")
            dialog.get_by_label("Your name").fill("dash-test")
            wide.shot("confirm")
            dialog.get_by_role("button", name="Confirm").click()
            expect(dialog).to_have_count(0)
        with wide.step("a 401 asks for the bearer token, keeps it for the tab and sends it"):
            prompt = page.get_by_test_id("token-dialog")
            expect(prompt).to_be_visible()
            prompt.get_by_label("Bearer token").fill(token)
            prompt.get_by_role("button", name="Use token").click()
            expect(prompt).to_have_count(0)
            kept = page.evaluate("sessionStorage.getItem('sagabridge.token')")
            assert kept == token, f"sessionStorage holds {kept!r}"
        with wide.step("the retry is accepted and its command shows in the timeline"):
            expect(page.get_by_test_id("notice")).to_contain_text("accepted")
            retried = timeline.locator('[data-type="command.sent"]').filter(has_text="retry")
            expect(retried).to_contain_text("PrintLabel sent (retry, attempt 2)", timeout=WAIT_MS)
            asked = timeline.locator('[data-type="action"]')
            expect(asked).to_contain_text("carrier was down")
            expect(asked).to_contain_text("dash-test@")
        shown = retried.inner_text()
        wide.shot("instance-after-retry")

        sent = [json.loads(r.value) for r in run_async(read_topic(bootstrap, commands))]
        mine = [c for c in sent if c["key"] == stuck]
        retries = [c for c in mine if c["action"] == "retry"]
        assert retries, f"no retry command for {stuck} on {commands}; for this key: {mine}"
        # (at-least-once: a command may be sent twice, always with the same id)
        assert {(c["name"], c["attempt"], c["command_id"]) for c in retries} == {
            ("PrintLabel", 2, retries[0]["command_id"])
        }, f"the command topic should hold one retry of PrintLabel for {stuck}; it holds {mine}"
        assert retries[0]["command_id"] in shown, (
            f"the timeline shows {shown!r}, not the id of the command sent: {retries[0]}"
        )

        with wide.step("an API error shows in the banner"):
            page = wide.open(f"#/flows/{FLOW}/instances/{uid}-nobody")
            expect(page.get_by_test_id("error-banner")).to_contain_text(f"{uid}-nobody")
        assert not wide.errors, f"the page reported errors: {wide.errors}"

        narrow = Watched(browser, 400, 800, worker)
        for route, name, ready in [
            ("#/", "flows", "flow-diagram"),
            (f"#/flows/{FLOW}", "flow", "flow-diagram"),
            (f"#/flows/{FLOW}/instances/{stuck}", "instance", "timeline"),
        ]:
            page = narrow.open(route)
            with narrow.step(f"the {name} page fits a 400 px window"):
                expect(page.get_by_test_id(ready)).to_be_visible()
                page.wait_for_timeout(300)  # let the diagram settle on its narrow layout
                assert narrow.overflow() <= 401, (
                    f"{route} is {narrow.overflow()} px wide in a 400 px window"
                )
            narrow.shot(name)
        assert not narrow.errors, f"the page reported errors: {narrow.errors}"
    finally:
        for watched in (wide, narrow):
            if watched is not None:
                watched.close()
        assert worker.stop() == 0
