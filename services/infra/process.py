"""A managed background server process: start detached, record its PID, check health, stop only our own.

The PID file records the PID and the process's start time (from /proc), so ``stop`` never signals an
unrelated process that reused the PID after ours died.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path


class InfraError(RuntimeError):
    """A local server could not be started, checked or stopped. The message says why and where to look."""


def port_is_free(host: str, port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
        return True


def free_port(host: str = "127.0.0.1") -> int:
    """A port that is free right now (for tests and `--ports auto`)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def tcp_accepts(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _proc_start_time(pid: int) -> str | None:
    """The kernel's start time of a process (field 22 of /proc/PID/stat), or None if it is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name (field 2) may contain spaces; it ends at the last ')'.
    fields = stat[stat.rindex(")") + 2 :].split()
    return fields[19]


def _is_zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rindex(")") + 2 :].split()[0] == "Z"


@dataclass
class ManagedProcess:
    """One server process under ``run_dir``: ``<name>.pid`` and ``<name>.log``."""

    name: str
    run_dir: Path

    @property
    def pid_file(self) -> Path:
        return self.run_dir / f"{self.name}.pid"

    @property
    def log_file(self) -> Path:
        return self.run_dir / f"{self.name}.log"

    def recorded_pid(self) -> int | None:
        """The PID we started, if that very process is still alive; a stale PID file is removed."""
        try:
            record = json.loads(self.pid_file.read_text())
            pid, started = int(record["pid"]), str(record["start_time"])
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if _proc_start_time(pid) != started or _is_zombie(pid):
            self.pid_file.unlink(missing_ok=True)
            return None
        return pid

    def start(self, argv: list[str], *, cwd: Path, env: dict[str, str] | None = None) -> int:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_file.open("ab")
        proc = subprocess.Popen(
            argv,
            cwd=cwd,
            env={**os.environ, **(env or {})},
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # outlives `llmops infra up`; not killed by the terminal's Ctrl-C
        )
        log.close()
        start_time = None
        for _ in range(100):
            start_time = _proc_start_time(proc.pid)
            if start_time is not None:
                break
            time.sleep(0.01)
        self.pid_file.write_text(json.dumps({"pid": proc.pid, "start_time": start_time, "argv": argv}))
        return proc.pid

    def wait_healthy(self, check: Callable[[], bool], timeout_s: float) -> float:
        """Wait until ``check()`` is true; seconds waited. Raises with the log's tail if it dies or times out."""
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            if self.recorded_pid() is None:
                raise InfraError(f"{self.name} exited during start-up; see {self.log_file}:\n{self.log_tail()}")
            if check():
                return time.monotonic() - t0
            time.sleep(0.05)
        raise InfraError(f"{self.name} not healthy after {timeout_s:.0f}s; see {self.log_file}:\n{self.log_tail()}")

    def stop(self, graceful: Callable[[], None] | None = None, timeout_s: float = 10.0) -> bool:
        """Stop the process we started (graceful hook, then SIGTERM, then SIGKILL). False if none ran."""
        pid = self.recorded_pid()
        if pid is None:
            return False
        if graceful is not None:
            with contextlib.suppress(Exception):  # any failure: fall through to signals
                graceful()
            if self._wait_gone(pid, timeout_s / 2):
                self.pid_file.unlink(missing_ok=True)
                return True
        for sig, wait in ((signal.SIGTERM, timeout_s / 2), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(pid, sig)
            except ProcessLookupError:
                break
            if self._wait_gone(pid, wait):
                break
        self.pid_file.unlink(missing_ok=True)
        return True

    def _wait_gone(self, pid: int, timeout_s: float) -> bool:
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout_s:
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, os.WNOHANG)  # reap if it is our child
            if _proc_start_time(pid) is None or _is_zombie(pid):
                return True
            time.sleep(0.05)
        return False

    def rss_bytes(self) -> int | None:
        pid = self.recorded_pid()
        if pid is None:
            return None
        total = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                total = int(line.split()[1]) * 1024
        return total

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"
