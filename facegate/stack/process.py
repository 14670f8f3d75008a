"""Start, find and stop the local stack's server processes.

Every process the stack starts gets its own process group and the environment variable
``FACEGATE_STACK_ID`` set to the stack's state directory.  A pid file records the pid and the
process's start time, so a recycled pid is never mistaken for ours (the environment is no proof:
Redis-family servers overwrite it to set their process title).  ``stop`` ends the group, then
looks for any process still carrying the marker (a server's children that left the group), so
that exactly what ``up`` started is stopped and nothing else.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from facegate.errors import StackError

MARKER = "FACEGATE_STACK_ID"


@dataclass(frozen=True)
class RunningProcess:
    """What the pid file of a started service records."""

    name: str
    pid: int
    start_time: int
    argv0: str
    log_file: str


def port_is_free(host: str, port: int) -> bool:
    """Whether ``port`` can be bound on ``host`` right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def wait_for_free_port(host: str, port: int, timeout_s: float) -> bool:
    """Whether ``port`` is free on ``host`` within ``timeout_s``.

    A server that was just killed can hold its listening socket a moment longer than its pid
    looks alive: a multi-threaded process's main thread is a zombie (what ``pid_alive`` sees)
    while its other threads are still exiting, and the socket closes with the last of them.
    """
    deadline = time.monotonic() + timeout_s
    while not port_is_free(host, port):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def _stat_fields(pid: int) -> list[str] | None:
    # Fields after the command name, which may itself contain spaces and parentheses.
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as stat:
            return stat.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def pid_alive(pid: int) -> bool:
    """Whether a process with this pid exists and is not a zombie."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def start_time(pid: int) -> int:
    """The process's start time in clock ticks since boot (0 if it is gone)."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else 0


def _has_marker(pid: int, stack_id: str) -> bool:
    try:
        environ = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return False
    return f"{MARKER}={stack_id}".encode() in environ.split(b"\0")


def marked_pids(stack_id: str) -> list[int]:
    """Every live process that carries this stack's marker."""
    own = os.getpid()
    pids = [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]
    return [p for p in pids if p != own and _has_marker(p, stack_id) and pid_alive(p)]


class ProcessTable:
    """Pid files of the services started under one state directory."""

    def __init__(self, state_dir: Path) -> None:
        self.state_dir = state_dir
        self.pid_dir = state_dir / "pids"
        self.log_dir = state_dir / "logs"
        self.stack_id = str(state_dir.resolve())

    def log_file(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def running(self, name: str) -> RunningProcess | None:
        """The service's process if its pid file names a live process of this stack."""
        pid_file = self.pid_dir / f"{name}.pid"
        if not pid_file.is_file():
            return None
        try:
            record = RunningProcess(**json.loads(pid_file.read_text()))
        except (ValueError, TypeError):
            return None
        if pid_alive(record.pid) and start_time(record.pid) == record.start_time:
            return record
        return None

    def start(self, name: str, argv: list[str], env: dict[str, str], cwd: Path) -> RunningProcess:
        """Start ``argv`` in its own process group, its output appended to the service log."""
        self.pid_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        cwd.mkdir(parents=True, exist_ok=True)
        log_path = self.log_file(name)
        full_env = {**os.environ, **env, MARKER: self.stack_id}
        with open(log_path, "ab") as log:
            log.write(f"\n=== {time.strftime('%F %T')} starting: {' '.join(argv)}\n".encode())
            log.flush()
            try:
                proc = subprocess.Popen(
                    argv,
                    cwd=cwd,
                    env=full_env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            except OSError as exc:
                raise StackError(f"{name}: cannot run {argv[0]}: {exc.strerror}") from exc
        record = RunningProcess(
            name=name,
            pid=proc.pid,
            start_time=start_time(proc.pid),
            argv0=argv[0],
            log_file=str(log_path),
        )
        (self.pid_dir / f"{name}.pid").write_text(json.dumps(record.__dict__))
        return record

    def exit_code(self, record: RunningProcess) -> int | None:
        """The exit code of a process this object started and that has ended, else None."""
        try:
            pid, status = os.waitpid(record.pid, os.WNOHANG)
        except ChildProcessError:
            return None if pid_alive(record.pid) else -1
        if pid == 0:
            return None
        return os.waitstatus_to_exitcode(status)

    def stop(self, name: str, timeout_s: float = 15.0) -> bool:
        """Stop the service's process group; return whether anything was running."""
        record = self.running(name)
        pid_file = self.pid_dir / f"{name}.pid"
        if record is None:
            pid_file.unlink(missing_ok=True)
            return False
        _signal_group(record.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while pid_alive(record.pid) and time.monotonic() < deadline:
            self.exit_code(record)
            time.sleep(0.1)
        if pid_alive(record.pid):
            _signal_group(record.pid, signal.SIGKILL)
        self.exit_code(record)
        pid_file.unlink(missing_ok=True)
        return True

    def live_pids(self) -> set[int]:
        """Every live process of this stack: those in pid files and those carrying the marker."""
        recorded = set()
        if self.pid_dir.is_dir():
            for pid_file in self.pid_dir.glob("*.pid"):
                record = self.running(pid_file.stem)
                if record is not None:
                    recorded.add(record.pid)
        return recorded | set(marked_pids(self.stack_id))

    def kill_stragglers(self, timeout_s: float = 5.0) -> list[int]:
        """End any process still carrying this stack's marker (children that left the group)."""
        pids = marked_pids(self.stack_id)
        for pid in pids:
            _signal(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(pid_alive(p) for p in pids):
            time.sleep(0.1)
        for pid in pids:
            if pid_alive(pid):
                _signal(pid, signal.SIGKILL)
        return pids


def _signal_group(pid: int, sig: signal.Signals) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        _signal(pid, sig)


def _signal(pid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.kill(pid, sig)
