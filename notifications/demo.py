"""The tutorial's four-terminal test, in one process.

Three workers (one per group) are started as child processes, the three
tutorial messages are sent, and each worker's log is read back to show
what each "terminal" received.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import click

from notifications.delivery import read_outcome_line
from notifications.errors import ConfigurationError
from notifications.settings import Settings

#: The tutorial's messages, in the order its producer sends them.
MESSAGES = {
    "hr": "New message in HR",
    "support": "New message in Support",
    "marketing": "New message in Marketing",
}

_READY_RE = re.compile(r"\bready\.$")


@dataclass
class Received:
    notification_id: str
    group: str
    text: str


@dataclass
class DemoWorker:
    """One worker process and what its log says it received."""

    group: str
    process: subprocess.Popen[str]
    reader: threading.Thread | None = None
    ready: threading.Event = field(default_factory=threading.Event)
    received: list[Received] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    output: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def read_output(self) -> None:
        for line in self.process.stdout or ():
            line = line.rstrip("\n")
            with self.lock:
                self.output.append(line)
            if _READY_RE.search(line):
                self.ready.set()
            logged = read_outcome_line(line)
            if logged is None:
                continue
            with self.lock:
                if logged.outcome == "dead-lettered":
                    self.rejected.append(f"{logged.reason}: {logged.error}")
                else:
                    text = logged.text or ""
                    self.received.append(
                        Received(logged.notification_id, logged.group, text)
                    )
        # The process ended: nobody waits for a ready line any more.
        self.ready.set()

    def snapshot(self) -> list[Received]:
        with self.lock:
            return list(self.received)


def start_worker(group: str, settings: Settings) -> DemoWorker:
    command = [
        sys.executable, "-m", "celery", "-A", "notifications", "worker",
        "-Q", settings.queue_name(group),
        "-n", f"demo-{group}-{os.getpid()}@%h",
        "--pool", "solo", "--loglevel", "INFO",
        "--without-gossip", "--without-mingle",
    ]  # fmt: skip
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        text=True,
        encoding="utf-8",
        errors="replace",
    )
    worker = DemoWorker(group, process)
    worker.reader = threading.Thread(target=worker.read_output, daemon=True)
    worker.reader.start()
    return worker


def stop_workers(workers: list[DemoWorker], timeout_s: float = 15.0) -> None:
    """Warm-shut-down every worker; kill the ones that do not stop in time."""
    for worker in workers:
        if worker.process.poll() is None:
            worker.process.terminate()
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        try:
            worker.process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            worker.process.kill()
            worker.process.wait()
        if worker.reader is not None:
            worker.reader.join(timeout=5)
        if worker.process.stdout is not None:
            worker.process.stdout.close()


def run_demo(settings: Settings, timeout_s: float = 60.0) -> int:
    """Run the demo and return the process exit code (0 when routing held)."""
    from notifications import send_notification

    missing = [g for g in MESSAGES if g not in settings.groups]
    if missing:
        raise ConfigurationError(
            f"The demo needs the groups {', '.join(MESSAGES)}; "
            f"NOTIFICATION_GROUPS lacks {', '.join(missing)}."
        )

    click.echo(f"Broker: {settings.masked_broker_url}")
    click.echo(f"Exchange: {settings.exchange_name} (direct)")
    workers = [start_worker(group, settings) for group in MESSAGES]
    try:
        return _exercise(workers, send_notification, timeout_s)
    finally:
        stop_workers(workers)


def _exercise(workers: list[DemoWorker], send: object, timeout_s: float) -> int:
    deadline = time.monotonic() + timeout_s
    for worker in workers:
        worker.ready.wait(max(0.0, deadline - time.monotonic()))
    broken = [w for w in workers if w.process.poll() is not None or not w.ready.is_set()]
    if broken:
        for worker in broken:
            tail = "\n    ".join(worker.output[-5:]) or "(no output)"
            click.echo(
                f"[❌] The {worker.group} worker did not start:\n    {tail}", err=True
            )
        return 1

    click.echo("\nTerminal 4 - producer")
    sent: dict[str, str] = {}
    for group, text in MESSAGES.items():
        result = send.delay(group, text)  # type: ignore[attr-defined]
        sent[result.id] = group
        click.echo(f"[📥] Message sent to {group}_queue #{text} (id {result.id})")

    # Wait until every worker has logged its own message, then a moment
    # more so that a message routed to the wrong worker would show up too.
    def arrived() -> set[str]:
        return {r.notification_id for w in workers for r in w.snapshot()}

    while not set(sent) <= arrived() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)

    failed = False
    for number, worker in enumerate(workers, start=1):
        queue = f"{worker.group}_queue"
        click.echo(f"\nTerminal {number} - {worker.group} worker (-Q {queue})")
        click.echo("[❎] Waiting for messages.")
        got_own = False
        for item in worker.snapshot():
            if (
                item.group != worker.group
                or sent.get(item.notification_id, worker.group) != worker.group
            ):
                click.echo(f"[❌] Received another group's message #{item.text!r}")
                failed = True
            elif item.notification_id in sent:
                click.echo(f"[✅] Received #{item.text!r}")
                got_own = True
            else:
                click.echo(f"[✅] Received #{item.text!r} (sent before this demo)")
        with worker.lock:
            rejected = list(worker.rejected)
        for reason in rejected:
            click.echo(f"[❌] Refused a message: {reason}")
            failed = True
        if not got_own:
            click.echo(f"[❌] Nothing arrived within {timeout_s:g} s")
            failed = True

    if failed:
        click.echo("\nRouting failed: see the terminals above.", err=True)
        return 1
    click.echo("\nEach group's worker received its own message and nothing else.")
    return 0
