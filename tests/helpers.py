"""Helpers to run the project's processes and look at the broker as a user would."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from notifications.delivery import read_outcome_line

REPO = Path(__file__).resolve().parent.parent


def rabbitmqctl(*args: str, timeout_s: float = 60) -> str:
    result = subprocess.run(
        ["rabbitmqctl", "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return result.stdout


def child_env(data_dir: Path, broker_url: str | None, **extra: str) -> dict[str, str]:
    """Environment for a child process: the given broker, its own data folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "NOTIFICATION")) and k != "CLOUDAMQP_URL"
    }
    env["NOTIFICATIONS_DATA_DIR"] = str(data_dir)
    env["PYTHONUNBUFFERED"] = "1"
    # Workers may load test deliveries (tests/sinks.py) by name.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    if broker_url:
        env["CELERY_BROKER_URL"] = broker_url
    env.update(extra)
    return env


def run_cli(
    *args: str,
    env: Mapping[str, str],
    cwd: Path,
    timeout_s: float = 60,
    input_text: str | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run ``notifications ARGS`` the way a user's shell would.

    ``input_text`` is what the command reads on stdin; without it, stdin
    is empty.
    """
    return subprocess.run(
        [sys.executable, "-m", "notifications", *args],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        input=input_text,
        stdin=subprocess.DEVNULL if input_text is None else None,
    )


def assert_one_line_error(
    result: subprocess.CompletedProcess[str], *needles: str
) -> None:
    """The command failed with one ``Error: ...`` line naming every needle."""
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("Error: ")
    for needle in needles:
        assert needle in lines[0], lines[0]


def run_python(
    code: str, env: Mapping[str, str], cwd: Path, timeout_s: float = 60
) -> subprocess.CompletedProcess[str]:
    """Run ``code`` in a fresh interpreter; the timeout bounds any hang."""
    return subprocess.run(
        [sys.executable, "-c", code],
        env=dict(env),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


@dataclass(frozen=True)
class Received:
    notification_id: str
    group: str
    text: str


@dataclass
class WorkerProcess:
    """A real ``celery -A notifications worker`` process and its log."""

    command: list[str]
    env: Mapping[str, str]
    cwd: Path
    lines: list[str] = field(default_factory=list)
    process: subprocess.Popen[str] | None = None
    _reader: threading.Thread | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def start(self) -> WorkerProcess:
        self.process = subprocess.Popen(
            self.command,
            env=dict(self.env),
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            # Its own process group, so that stop() also reaches pool
            # processes orphaned when a test kills the main process.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        return self

    def _read(self) -> None:
        assert self.process is not None
        assert self.process.stdout is not None
        for line in self.process.stdout:
            with self._lock:
                self.lines.append(line.rstrip("\n"))

    @property
    def output(self) -> str:
        with self._lock:
            return "\n".join(self.lines)

    def received(self) -> list[Received]:
        with self._lock:
            lines = list(self.lines)
        logged = (read_outcome_line(line) for line in lines)
        return [
            Received(m.notification_id, m.group, m.text or "")
            for m in logged
            if m is not None and m.outcome == "received"
        ]

    def wait_for(self, predicate: Callable[[], bool], timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if predicate():
                return True
            if self.process is not None and self.process.poll() is not None:
                return predicate()
            time.sleep(0.05)
        return predicate()

    def wait_ready(self, timeout_s: float = 60) -> None:
        if not self.wait_for(lambda: " ready." in self.output, timeout_s):
            raise AssertionError(f"worker did not start:\n{self.output[-3000:]}")

    def stop_when_exited(self, timeout_s: float) -> int:
        """Wait for the process to exit on its own; stop it if it does not."""
        assert self.process is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=timeout_s)
        return self.stop()

    def terminate(self) -> None:
        """Ask for a warm shutdown (SIGTERM) without waiting."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.terminate()

    def stop(self, timeout_s: float = 20) -> int:
        """Warm shutdown (SIGTERM); kill if it does not stop in time."""
        assert self.process is not None
        self.terminate()
        if self.process.poll() is None:
            try:
                self.process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=timeout_s)
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.process.pid, signal.SIGKILL)
        if self._reader is not None:
            self._reader.join(timeout=timeout_s)
        if self.process.stdout is not None:
            self.process.stdout.close()
        return self.process.returncode


def worker_command(
    *queues: str, name: str, pool: str = "solo", concurrency: int = 1
) -> list[str]:
    # Celery's CLI cannot tell "-P prefork" from its own default, which the
    # configured pool of threads overrides; "processes" names the same pool.
    pool = "processes" if pool == "prefork" else pool
    return [
        sys.executable, "-m", "celery", "-A", "notifications", "worker",
        "-Q", ",".join(queues), "-n", f"{name}@%h", "--pool", pool,
        "--concurrency", str(concurrency),
        "--loglevel", "INFO", "--without-gossip", "--without-mingle",
    ]  # fmt: skip


GROUP_QUEUES = ("hr_queue", "marketing_queue", "support_queue")


@dataclass
class Broker:
    """A vhost of the local RabbitMQ: counted over AMQP, listed with ``rabbitmqctl``."""

    url: str
    vhost: str

    def table(self, what: str, *columns: str) -> list[dict[str, str]]:
        out = rabbitmqctl(f"list_{what}", "-p", self.vhost, *columns)
        rows = [line.split("\t") for line in out.splitlines() if line.strip()]
        # rabbitmqctl -q still prints the column names first.
        if rows and rows[0] == list(columns):
            rows = rows[1:]
        return [dict(zip(columns, row, strict=False)) for row in rows]

    def queues(self) -> dict[str, dict[str, str]]:
        rows = self.table("queues", "name", "durable", "messages")
        return {row["name"]: row for row in rows}

    def count(self, queue: str) -> int | None:
        """Messages ready in ``queue``, or ``None`` if it does not exist."""
        from amqp.exceptions import NotFound
        from kombu import Connection

        with Connection(self.url) as conn:
            try:
                return int(
                    conn.channel().queue_declare(queue, passive=True).message_count
                )
            except NotFound:
                return None

    def counts(self, *queues: str) -> dict[str, int | None]:
        return {name: self.count(name) for name in queues or GROUP_QUEUES}

    def take_all(self, queue: str = "hr_queue") -> list[Any]:
        """Take every message off ``queue``, in queue order (py-amqp messages)."""
        from kombu import Connection

        messages = []
        with Connection(self.url) as conn:
            channel = conn.channel()
            while (message := channel.basic_get(queue, no_ack=True)) is not None:
                messages.append(message)
        return messages

    @contextlib.contextmanager
    def refusing_beyond(self, queue: str, max_length: int) -> Iterator[None]:
        """Make ``queue`` (which must exist) refuse messages beyond ``max_length``.

        RabbitMQ answers a publish it refuses with ``basic.nack``.
        """
        limit = {"max-length": max_length, "overflow": "reject-publish"}
        rabbitmqctl(
            "set_policy", "-p", self.vhost, "--apply-to", "queues",
            "refuse-beyond", f"^{queue}$", json.dumps(limit),
        )  # fmt: skip
        try:
            # The broker applies a policy to its queues a moment after it is set.
            deadline = time.monotonic() + 30
            applied = {"name": queue, "policy": "refuse-beyond"}
            while applied not in self.table("queues", "name", "policy"):
                if time.monotonic() > deadline:
                    raise AssertionError(f"the policy never applied to {queue}")
                time.sleep(0.1)
            yield
        finally:
            rabbitmqctl("clear_policy", "-p", self.vhost, "refuse-beyond")

    def purge_queues(self, *queues: str) -> None:
        from amqp.exceptions import NotFound
        from kombu import Connection

        with Connection(self.url) as conn:
            for name in queues or GROUP_QUEUES:
                with contextlib.suppress(NotFound):
                    conn.channel().queue_purge(name)


def stop_all(workers: list[WorkerProcess]) -> None:
    """Stop workers in parallel: each warm shutdown takes a couple of seconds."""
    for worker in workers:
        worker.terminate()
    for worker in workers:
        worker.stop()
