"""A service asked for a niceness lowers the CPU priority of all its threads, present and future.

Each case runs in a child process: a raised nice value cannot be lowered again without privilege.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from pydantic import ValidationError

from stream_processors.settings import StreamProcessorSettings

CHILD = """
import json, os, sys, threading
from facegate.service_process import lower_priority
from stream_processors.settings import StreamProcessorSettings

def nice_of(tid):
    # Field 19 of /proc/PID/task/TID/stat, counted after the command name's closing parenthesis.
    stat = open(f"/proc/self/task/{tid}/stat").read()
    return int(stat.rsplit(")", 1)[1].split()[16])

release = threading.Event()
before = threading.Thread(target=release.wait)
before.start()
base = os.getpriority(os.PRIO_PROCESS, 0)
returned = lower_priority(StreamProcessorSettings(niceness=int(sys.argv[1])))
after = threading.Thread(target=release.wait)
after.start()
nices = {tid: nice_of(tid) for tid in os.listdir("/proc/self/task")}
release.set()
print(json.dumps({"base": base, "returned": returned, "threads": list(nices.values())}))
"""


def run_child(niceness: int) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(niceness)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_niceness_reaches_threads_started_before_and_after() -> None:
    result = run_child(4)
    base = result["base"]
    assert isinstance(base, int)
    expected = min(base + 4, 19)
    assert result["returned"] == expected
    threads = result["threads"]
    assert isinstance(threads, list)
    assert len(threads) >= 3  # main, the thread started before, the one started after
    assert threads == [expected] * len(threads)


def test_zero_niceness_leaves_priority_alone() -> None:
    result = run_child(0)
    threads = result["threads"]
    assert isinstance(threads, list)
    assert result["returned"] == result["base"]
    assert set(threads) == {result["base"]}


@pytest.mark.parametrize("niceness", [-1, 20])
def test_niceness_outside_the_unprivileged_range_is_refused(niceness: int) -> None:
    with pytest.raises(ValidationError):
        StreamProcessorSettings(niceness=niceness)


def test_stream_processors_yield_to_the_worker_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    from inference_worker.settings import InferenceWorkerSettings

    monkeypatch.delenv("FACEGATE_STREAM_NICENESS", raising=False)
    monkeypatch.delenv("FACEGATE_WORKER_NICENESS", raising=False)
    assert StreamProcessorSettings().niceness == 5
    assert InferenceWorkerSettings().niceness == 0
