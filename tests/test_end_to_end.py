"""The tutorial's test, with real workers, on the embedded broker and on RabbitMQ.

Three workers (hr, support, marketing) each consume their own queue; the
tutorial's three messages are sent; each worker must receive exactly its
own message and nothing else.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    Broker,
    WorkerProcess,
    child_env,
    run_cli,
    stop_all,
    worker_command,
)

pytestmark = pytest.mark.slow

TUTORIAL = {
    "hr": "New message in HR",
    "support": "New message in Support",
    "marketing": "New message in Marketing",
}


@dataclass
class Pipeline:
    name: str
    env: dict[str, str]
    cwd: Path
    broker: Broker | None


@pytest.fixture(params=["embedded", "rabbitmq"])
def pipeline(request, tmp_path, data_dir) -> Iterator[Pipeline]:
    if request.param == "embedded":
        yield Pipeline("embedded", child_env(data_dir, None), tmp_path, None)
        return
    broker: Broker = request.getfixturevalue("rabbitmq")
    yield Pipeline("rabbitmq", child_env(data_dir, broker.url), tmp_path, broker)


@pytest.fixture
def workers(pipeline) -> Iterator[dict[str, WorkerProcess]]:
    started = {
        group: WorkerProcess(
            worker_command(f"{group}_queue", name=f"test-{group}-{uuid.uuid4().hex[:6]}"),
            pipeline.env,
            pipeline.cwd,
        ).start()
        for group in TUTORIAL
    }
    try:
        for worker in started.values():
            worker.wait_ready()
        yield started
    finally:
        stop_all(list(started.values()))


def send(pipeline: Pipeline, group: str, text: str) -> str:
    result = run_cli("send", group, text, env=pipeline.env, cwd=pipeline.cwd)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def test_each_worker_receives_exactly_its_own_groups_message(pipeline, workers):
    # Given one worker per group, when the tutorial's producer sends its
    # three messages...
    sent = {send(pipeline, group, text): group for group, text in TUTORIAL.items()}

    # ...then every message arrives, each at its own group's worker.
    def all_arrived() -> bool:
        got = {r.notification_id for w in workers.values() for r in w.received()}
        return set(sent) <= got

    assert workers["hr"].wait_for(all_arrived, timeout_s=30), {
        g: w.output[-2000:] for g, w in workers.items()
    }
    for group, worker in workers.items():
        received = worker.received()
        assert [(r.group, r.text) for r in received] == [(group, TUTORIAL[group])]
        assert sent[received[0].notification_id] == group

    if pipeline.broker is not None:
        assert pipeline.broker.counts() == {
            "hr_queue": 0,
            "marketing_queue": 0,
            "support_queue": 0,
        }
        assert pipeline.broker.count("celery") is None


def test_a_worker_at_info_logs_each_outcome_once(pipeline, workers):
    notification_id = send(pipeline, "hr", "One line, please")
    hr = workers["hr"]
    delivered = f"Notification {notification_id} for group 'hr' delivered: "
    assert hr.wait_for(lambda: delivered in hr.output, timeout_s=30), hr.output[-2000:]

    lines = [line for line in hr.output.splitlines() if notification_id in line]
    # The default delivery's own line, then the outcome; Celery's "Task …
    # received" and "Task … succeeded" lines would only repeat them.
    assert [line.split("] ", 1)[1] for line in lines] == [
        f"Notification {notification_id} for group 'hr' received: 'One line, please'",
        f"Notification {notification_id} for group 'hr' delivered: 'One line, please'",
    ]


def test_messages_sent_before_the_workers_start_wait_in_their_queues(pipeline):
    # Given no worker runs yet, a notification is sent (the sender declares
    # the durable queue, so the message is kept)...
    notification_id = send(pipeline, "support", "Sent while nobody listened")

    # ...when the support worker starts later, it receives it.
    worker = WorkerProcess(
        worker_command("support_queue", name=f"late-{uuid.uuid4().hex[:6]}"),
        pipeline.env,
        pipeline.cwd,
    ).start()
    try:
        assert worker.wait_for(
            lambda: any(r.notification_id == notification_id for r in worker.received()),
            timeout_s=60,
        ), worker.output[-2000:]
    finally:
        worker.stop()


def test_the_demo_shows_each_terminal_receiving_its_own_message(pipeline):
    result = run_cli("demo", "--timeout", "60", env=pipeline.env, cwd=pipeline.cwd,
                     timeout_s=120)  # fmt: skip

    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for number, (group, text) in enumerate(TUTORIAL.items(), start=1):
        block = out.split(f"Terminal {number} - {group} worker")[1].split("Terminal")[0]
        assert f"[✅] Received #'{text}'" in block
        assert "[❌]" not in block
    assert "Each group's worker received its own message and nothing else." in out
