"""The proctor console in headless Chromium against the real stack and the running pipeline.

Debian's chromium, driven by Playwright (its own browser downloads are never used).  The
console and the feedback consumer run as their own processes, started through the CLI.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from facegate.errors import FacegateError
from facegate.kafka_clients import make_consumer
from facegate.settings import KafkaSettings, ObjectStoreSettings
from facegate.stack.ports import free_port_block
from inference_worker.sealed_objects import get_opened
from producers.publisher import FramePublisher
from producers.settings import ProducerSettings
from schemas.codec import decode
from schemas.messages import Feedback, Frame, new_id, now
from schemas.topics import FEEDBACK
from tests.conftest import REPO_ROOT
from tests.e2e.conftest import RunningPipeline

pytestmark = pytest.mark.browser

CHROMIUM = Path("/usr/bin/chromium")
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
PASSWORDS = {"proctor1": "proctor-pass-1", "admin1": "admin-pass-123"}
EXAM, GATE = "browser-exam", "gate-b"
# The README's screenshot is refreshed only when asked (FACEGATE_UPDATE_DOCS=1), so that a test
# run leaves the checkout clean; otherwise it goes to the test's temporary folder.
DOCS_SCREENSHOT = REPO_ROOT / "docs" / "images" / "console.png"


@dataclass
class ConsoleUnderTest:
    url: str
    metrics_url: str


def _free_port() -> int:
    return free_port_block(1, start=30000 + random.randint(0, 2000))


def _wait_http(url: str, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.2)
    raise FacegateError(f"{url} did not answer 200 in {timeout_s} s")


@pytest.fixture(scope="module")
def console(
    pipeline: RunningPipeline, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ConsoleUnderTest]:
    """`facegate console` and `facegate feedback-consumer` as processes beside the pipeline."""
    work = tmp_path_factory.mktemp("console")
    port, metrics_port = _free_port(), _free_port()
    env = {
        **pipeline.env,
        "FACEGATE_CONSOLE_USERS_FILE": str(work / "users.json"),
        "FACEGATE_CONSOLE_QUIET_AFTER_S": "3",
    }
    for name, role in (("proctor1", "proctor"), ("admin1", "admin")):
        subprocess.run(
            [
                sys.executable,
                "-m",
                "facegate",
                "console",
                "add-user",
                name,
                "--role",
                role,
                "--password",
                PASSWORDS[name],
            ],
            env={**os.environ, **env},
            check=True,
            capture_output=True,
            timeout=60,
        )
    table = pipeline.stack.table
    table.start(
        "console", [sys.executable, "-m", "facegate", "console", "--port", str(port)], env, work
    )
    table.start(
        "feedback-consumer",
        [
            sys.executable,
            "-m",
            "facegate",
            "feedback-consumer",
            "--metrics-port",
            str(metrics_port),
        ],
        env,
        work,
    )
    try:
        # 200 once the console's verdict consumer has its partitions.
        _wait_http(f"http://127.0.0.1:{port}/healthz", 60)
        _wait_http(f"http://127.0.0.1:{metrics_port}/metrics", 60)
        yield ConsoleUnderTest(f"http://127.0.0.1:{port}", f"http://127.0.0.1:{metrics_port}")
    finally:
        table.stop("console")
        table.stop("feedback-consumer")


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not CHROMIUM.is_file():
        pytest.skip("Debian's chromium is not installed (as root: apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


def _login(browser: Any, console: ConsoleUnderTest, name: str, password: str) -> Any:
    page = browser.new_page(viewport={"width": 1100, "height": 640})
    page.goto(f"{console.url}/login")
    page.fill("input[name=username]", name)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")
    return page


def _frame(image: bytes, claimed: str) -> Frame:
    return Frame(
        frame_id=new_id(),
        gate_id=GATE,
        exam_id=EXAM,
        claimed_student_id=claimed,
        captured_at=now(),
        published_at=now(),
        source="test",
        image=image,
    )


def _feedback_on_topic(frame_ids: set[str], timeout_s: float) -> dict[str, Feedback]:
    consumer = make_consumer(KafkaSettings(), f"browser-test-{new_id()[:8]}", [FEEDBACK.name])
    found: dict[str, Feedback] = {}
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline and set(found) != frame_ids:
            for records in consumer.poll(timeout_ms=200).values():
                for record in records:
                    message = decode(record.value, Feedback)
                    if message.frame_id in frame_ids:
                        found[message.frame_id] = message
    finally:
        consumer.close()
    return found


def _samples(feedback_ids: set[str], timeout_s: float) -> dict[str, dict[str, Any]]:
    from minio import Minio

    s3 = ObjectStoreSettings()
    store = Minio(
        s3.endpoint,
        access_key=s3.access_key,
        secret_key=s3.secret_key.get_secret_value(),
        secure=False,
    )
    deadline = time.monotonic() + timeout_s
    manifests: dict[str, dict[str, Any]] = {}
    while time.monotonic() < deadline and set(manifests) != feedback_ids:
        for item in store.list_objects(s3.bucket_feedback, prefix="feedback/", recursive=True):
            name = str(item.object_name)
            stem = name.rsplit("/", 1)[-1].rsplit(".", 1)[0]
            if stem in feedback_ids and name.endswith(".json") and stem not in manifests:
                manifest = json.loads(store.get_object(s3.bucket_feedback, name).read())
                # Stored sealed with the gallery key (sealed_objects.py): a JPEG once opened.
                sealed = store.get_object(s3.bucket_feedback, manifest["image"]).read()
                image = get_opened(store, s3.bucket_feedback, manifest["image"], "face") or b""
                manifests[stem] = {
                    **manifest,
                    "key": name,
                    "jpeg": image[:2] == b"\xff\xd8" and sealed[:2] != b"\xff\xd8",
                }
        time.sleep(0.3)
    return manifests


def test_live_verdict_override_feedback_and_sample(
    pipeline: RunningPipeline, console: ConsoleUnderTest, browser: Any, tmp_path: Path
) -> None:
    students = [s for s in pipeline.roster.students if s.student_id in pipeline.enrolled]
    page = _login(browser, console, "proctor1", PASSWORDS["proctor1"])
    assert page.url.rstrip("/") == console.url
    page.goto(f"{console.url}/live?exam={EXAM}&gate={GATE}")
    # The status arrives first on the event stream: from then on the page is subscribed.
    page.wait_for_selector("#status .gate, #status span", timeout=10_000)

    genuine = _frame(students[0].probe_photos[0].read_bytes(), students[0].student_id)
    impostor = _frame(students[1].probe_photos[0].read_bytes(), students[2].student_id)
    with FramePublisher(ProducerSettings()) as publisher:
        started = time.monotonic()
        publisher.publish(genuine)
        page.wait_for_selector(f"#checkin-{genuine.frame_id}", timeout=2_000)
        seen_after = time.monotonic() - started
        publisher.publish(impostor)
        page.wait_for_selector(f"#checkin-{impostor.frame_id}", timeout=2_000)
    assert seen_after < 2.0
    print(f"verdict on the page {seen_after:.2f} s after its frame was published")

    # A corrupt frame goes to the dead letters: its gate shows it as not processed, with the
    # reason, so the proctor asks for a new picture instead of waiting.
    photo = students[3].probe_photos[0].read_bytes()
    corrupt = _frame(photo[: len(photo) // 2], students[3].student_id)
    with FramePublisher(ProducerSettings()) as publisher:
        publisher.publish(corrupt)
    page.wait_for_selector(f"#checkin-{corrupt.frame_id}", timeout=5_000)
    unprocessed = page.locator(f"#checkin-{corrupt.frame_id}")
    assert unprocessed.get_attribute("data-decision") == "unprocessed"
    text = unprocessed.text_content() or ""
    assert "truncated_image" in text and "take a new picture" in text, text
    assert unprocessed.locator("button").count() == 0  # nothing to decide

    card = page.locator(f"#checkin-{genuine.frame_id}")
    assert card.get_attribute("data-decision") == "accept"
    rejected = page.locator(f"#checkin-{impostor.frame_id}")
    assert rejected.get_attribute("data-decision") == "reject"
    assert "reject" in (rejected.get_attribute("class") or "")  # shown in red
    # Both faces are there: the enrolled photo and the captured crop, loaded.
    page.wait_for_function(
        "id => [...document.querySelectorAll('#checkin-' + id + ' img')]"
        ".every(i => i.complete && i.naturalWidth > 0)",
        arg=genuine.frame_id,
        timeout=5_000,
    )

    # The proctor confirms the accept and overrides the reject after checking the ID card.
    card.locator("button.action-confirm").click()
    rejected.locator("button.action-accept_manual").click()
    page.wait_for_selector(f"#checkin-{genuine.frame_id} .done", timeout=5_000)
    page.wait_for_selector(f"#checkin-{impostor.frame_id} .done", timeout=5_000)

    found = _feedback_on_topic({genuine.frame_id, impostor.frame_id}, timeout_s=30)
    assert set(found) == {genuine.frame_id, impostor.frame_id}
    override = found[impostor.frame_id]
    assert (override.action, override.verdict_decision, override.proctor) == (
        "accept_manual",
        "reject",
        "proctor1",
    )
    assert override.model_version == pipeline.model_version
    assert override.student_id == students[2].student_id

    samples = _samples({f.feedback_id for f in found.values()}, timeout_s=30)
    assert len(samples) == 2
    for sample in samples.values():
        assert sample["jpeg"] and sample["label"] == "genuine"
        assert sample["key"].startswith(
            f"feedback/date={time.strftime('%Y-%m-%d', time.gmtime())}/"
            f"part-{pipeline.model_version}/"
        )
    metrics = urllib.request.urlopen(f"{console.metrics_url}/metrics", timeout=5).read().decode()
    assert (
        f'facegate_proctor_false_rejects_total{{model_version="{pipeline.model_version}"}} 1.0'
        in metrics
    )
    # Both students' check-in times were observed (first capture to the proctor's decision).
    assert "facegate_proctor_checkin_seconds_count 2.0" in metrics

    # Attendance, on the page and as CSV (the stream processor records it asynchronously).
    deadline = time.monotonic() + 15
    csv_text = ""
    while time.monotonic() < deadline and students[0].student_id not in csv_text:
        csv_text = page.request.get(f"{console.url}/exams/{EXAM}/attendance.csv").text()
        time.sleep(0.3)
    assert csv_text.startswith("student_id,decision")
    assert students[0].student_id in csv_text

    # A gate without verdicts for a while shows as quiet (the warm-up gate here).
    page.wait_for_selector("#status .gate.quiet", timeout=15_000)

    # The screenshot in the README: the LFW faces (and names) blurred, because LFW is not
    # committed to the repository.
    page.add_style_tag(content="img.face{filter:blur(12px)} .student{filter:blur(5px)}")
    page.wait_for_timeout(200)
    screenshot = (
        DOCS_SCREENSHOT
        if os.environ.get("FACEGATE_UPDATE_DOCS") == "1"
        else tmp_path / "console.png"
    )
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(screenshot))
    assert 10_000 < screenshot.stat().st_size < 400_000
    page.close()


def test_wrong_password_csrf_and_roles_are_refused(console: ConsoleUnderTest, browser: Any) -> None:
    page = _login(browser, console, "proctor1", "not-the-password")
    assert page.url.endswith("/login")
    assert "Wrong user name or password" in page.inner_text("#login-error")
    page.goto(f"{console.url}/")
    assert page.url.endswith("/login")  # still not logged in
    page.close()

    page = _login(browser, console, "proctor1", PASSWORDS["proctor1"])
    response = page.goto(f"{console.url}/admin/audit")
    assert response is not None and response.status == 403
    # A state-changing request without the session's CSRF token is refused.
    refused = page.request.post(
        f"{console.url}/checkins/{new_id()}/feedback", form={"action": "confirm"}
    )
    assert refused.status == 403
    page.close()

    admin = _login(browser, console, "admin1", PASSWORDS["admin1"])
    response = admin.goto(f"{console.url}/admin/audit")
    assert response is not None and response.status == 200
    assert "Audit log" in admin.inner_text("h2")
    admin.close()

    # Session fixation: a session id planted before login is never adopted; login issues a new
    # one, and the planted value opens nothing.
    context = browser.new_context()
    host = console.url.split("//", 1)[1].split(":", 1)[0]
    planted = {"name": "facegate_session", "value": "attacker-chosen", "domain": host, "path": "/"}
    context.add_cookies([planted])
    page = context.new_page()
    page.goto(f"{console.url}/login")
    page.fill("input[name=username]", "proctor1")
    page.fill("input[name=password]", PASSWORDS["proctor1"])
    page.click("button[type=submit]")
    assert not page.url.endswith("/login")
    issued = {c["name"]: c["value"] for c in context.cookies()}["facegate_session"]
    assert issued != "attacker-chosen" and len(issued) >= 32
    context.close()
    attacker = browser.new_context()
    attacker.add_cookies([planted])
    probe = attacker.new_page()
    probe.goto(f"{console.url}/")
    assert probe.url.endswith("/login")
    attacker.close()

    # Brute force: after 5 wrong passwords for a name, its logins are refused for a while.
    for _ in range(5):
        page = _login(browser, console, "guessed-name", "wrong-password")
        assert "Wrong user name or password" in page.inner_text("#login-error")
        page.close()
    page = _login(browser, console, "guessed-name", "wrong-password")
    assert "Too many failed logins" in page.inner_text("#login-error")
    page.close()
