"""At least once, never twice: 1,000 notifications through real faults on RabbitMQ.

Each test publishes 1,000 notifications with ``.delay()``, lets a worker
deliver them through the recording delivery (tests/sinks.py) — with the
default pool of threads, or a prefork pool where a pool process is
killed — injects one fault while a delivery is in progress, and then
checks, by notification id, that every notification ``.delay()``
accepted was delivered exactly once and that the queue is empty. A few
notifications are slow ("slow:" texts take two seconds) so that the fault
reliably lands in the middle of a delivery.

Set NOTIFICATIONS_FAULT_REPORT to a file to get one table row per test.
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Collection
from pathlib import Path

import pytest

from notifications import BrokerError, send_notification
from tests.helpers import Broker, WorkerProcess, child_env, rabbitmqctl, worker_command
from tests.sinks import delivered_ids, in_progress

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

TOTAL = 1000
SLOW_EVERY = 250


def is_slow(n: int) -> bool:
    return n % SLOW_EVERY == SLOW_EVERY // 2


def text_for(n: int) -> str:
    return f"slow:{n}" if is_slow(n) else f"Notification {n}"


def publish(numbers: range) -> list[str]:
    return [send_notification.delay("hr", text_for(n)).id for n in numbers]


def slow_ids(accepted: list[str]) -> set[str]:
    return {i for n, i in enumerate(accepted) if is_slow(n)}


def wait_until(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


def report(scenario: str, accepted: int, refused: int, delivered: list[str]) -> None:
    counts = Counter(delivered)
    row = (
        f"| {scenario} | {accepted} | {refused} | {len(counts)} | "
        f"{sum(1 for c in counts.values() if c > 1)} |\n"
    )
    path = os.environ.get("NOTIFICATIONS_FAULT_REPORT")
    if path:
        with open(path, "a") as f:
            f.write(row)


def assert_exactly_once(
    accepted: list[str], sink: Path, broker: Broker, refused: Collection[str] = ()
) -> None:
    """Every accepted id delivered once; nothing twice; nothing unknown.

    A notification whose ``.delay()`` raised may still have reached the
    broker (its confirm was lost with the connection): it may be delivered,
    but at most once.
    """
    delivered = delivered_ids(sink)
    counts = Counter(delivered)
    lost = set(accepted) - set(counts)
    twice = sorted(i for i, c in counts.items() if c > 1)
    assert not lost, f"{len(lost)} accepted notifications were never delivered"
    assert not twice, f"{len(twice)} notifications were delivered twice: {twice[:5]}"
    assert set(counts) <= set(accepted) | set(refused)
    assert broker.count("hr_queue") == 0
    assert not broker.count("hr_dead_letter")


class Fixture:
    def __init__(self, broker: Broker, data_dir: Path, cwd: Path) -> None:
        self.broker = broker
        self.sink = cwd / "sink.log"
        self.cwd = cwd
        self.env = child_env(
            data_dir,
            broker.url,
            NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
            NOTIFICATIONS_TEST_SINK=str(self.sink),
            NOTIFICATIONS_TEST_DELAY_S="0.002",
        )
        self.workers: list[WorkerProcess] = []

    def start_worker(self, pool: str = "threads", concurrency: int = 8) -> WorkerProcess:
        worker = WorkerProcess(
            worker_command(
                "hr_queue", name=f"fault-{uuid.uuid4().hex[:6]}", pool=pool,
                concurrency=concurrency,
            ),
            self.env,
            self.cwd,
        ).start()  # fmt: skip
        self.workers.append(worker)
        worker.wait_ready()
        return worker

    def slow_delivery_in_progress(self, slow_ids: set[str]) -> tuple[int, str]:
        """Wait for a slow delivery to be under way; return (pid, id)."""
        found: list[tuple[int, str]] = []

        def slow_one() -> bool:
            found[:] = [(p, i) for p, i in in_progress(self.sink) if i in slow_ids]
            return bool(found)

        wait_until(slow_one, 120, "a delivery in progress")
        return found[0]

    def wait_all_delivered(self, accepted: list[str], timeout_s: float = 240) -> None:
        wanted = set(accepted)
        wait_until(
            lambda: wanted <= set(delivered_ids(self.sink)),
            timeout_s,
            "every accepted notification to be delivered",
        )
        # A duplicate would show up right after: give it the chance.
        time.sleep(1.0)


@pytest.fixture
def faults(rabbitmq: Broker, data_dir, tmp_path):
    fixture = Fixture(rabbitmq, data_dir, tmp_path)
    try:
        yield fixture
    finally:
        for worker in fixture.workers:
            worker.stop()
        rabbitmq.purge_queues("hr_queue", "hr_dead_letter")


def test_sigkill_of_a_pool_process_mid_delivery_loses_and_repeats_nothing(faults):
    accepted = publish(range(TOTAL))
    worker = faults.start_worker(pool="prefork", concurrency=2)
    assert worker.process is not None

    pid, _ = faults.slow_delivery_in_progress(slow_ids(accepted))
    assert pid != worker.process.pid
    os.kill(pid, signal.SIGKILL)

    faults.wait_all_delivered(accepted)
    assert_exactly_once(accepted, faults.sink, faults.broker)
    assert "WorkerLostError" in worker.output or "exited with 'signal 9" in worker.output
    report("SIGKILL of a pool process mid-delivery", len(accepted), 0,
           delivered_ids(faults.sink))  # fmt: skip


def test_sigkill_of_the_worker_main_process_then_a_new_worker_delivers_the_rest(faults):
    accepted = publish(range(TOTAL))
    # One thread, so the kill lands in the middle of a delivery: threads die
    # with their process, and one that had delivered but not yet recorded it
    # would deliver again (the window the README names).
    first = faults.start_worker(concurrency=1)
    assert first.process is not None

    faults.slow_delivery_in_progress(slow_ids(accepted))
    os.kill(first.process.pid, signal.SIGKILL)
    first.process.wait(timeout=30)
    faults.start_worker()

    faults.wait_all_delivered(accepted)
    assert_exactly_once(accepted, faults.sink, faults.broker)
    report("SIGKILL of the worker's main process, new worker started",
           len(accepted), 0, delivered_ids(faults.sink))  # fmt: skip


def test_a_broker_restart_with_a_backlog_loses_nothing_and_workers_resume(faults):
    accepted = publish(range(TOTAL // 2))
    refused = 0
    worker = faults.start_worker()
    faults.slow_delivery_in_progress(slow_ids(accepted))

    # A sender keeps sending while the broker goes down and comes back.
    stop_sending = threading.Event()

    refused_ids: list[str] = []

    def keep_sending() -> None:
        nonlocal refused
        for n in range(TOTAL // 2, TOTAL):
            if stop_sending.is_set():
                return
            notification_id = str(uuid.uuid4())
            try:
                send_notification.apply_async(
                    ("hr", text_for(n)), task_id=notification_id
                )
                accepted.append(notification_id)
            except BrokerError:
                refused += 1
                refused_ids.append(notification_id)
            time.sleep(0.005)

    sender = threading.Thread(target=keep_sending)
    sender.start()
    try:
        rabbitmqctl("stop_app", timeout_s=120)
        time.sleep(2)
    finally:
        rabbitmqctl("start_app", timeout_s=120)
        rabbitmqctl("await_startup", timeout_s=120)
    sender.join(timeout=300)
    stop_sending.set()

    faults.wait_all_delivered(accepted, timeout_s=300)
    assert_exactly_once(accepted, faults.sink, faults.broker, refused_ids)
    assert len(accepted) + refused == TOTAL
    assert worker.process is not None
    assert worker.process.poll() is None  # it reconnected by itself
    report("RabbitMQ restarted with a backlog, sender sending throughout",
           len(accepted), refused, delivered_ids(faults.sink))  # fmt: skip
