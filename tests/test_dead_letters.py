"""``notifications dead-letters``: list and replay what workers gave up on.

Real workers dead-letter real notifications, on the embedded broker and on
RabbitMQ; the command, run as a user runs it, shows them and puts them
back on their group's queue.
"""

from __future__ import annotations

import contextlib
import pickle
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.helpers import (
    Broker,
    WorkerProcess,
    assert_one_line_error,
    child_env,
    run_cli,
    worker_command,
)

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"
DEAD_LETTER_QUEUES = ("hr_dead_letter", "unrouted_dead_letter")
RECORDING = "tests.sinks:RecordingDelivery"


@dataclass
class Pipeline:
    name: str
    env: dict[str, str]
    cwd: Path
    data_dir: Path
    broker: Broker | None

    def worker(self, **extra: str) -> WorkerProcess:
        """Start an hr worker with ``extra`` on top of this pipeline's environment."""
        worker = WorkerProcess(
            worker_command("hr_queue", name=f"dead-letters-{uuid.uuid4().hex[:6]}"),
            {**self.env, **extra},
            self.cwd,
        ).start()
        try:
            worker.wait_ready()
        except BaseException:
            worker.stop()
            raise
        return worker

    def cli(self, *args: str):
        return run_cli(*args, env=self.env, cwd=self.cwd)

    def send(self, group: str, text: str) -> str:
        result = self.cli("send", group, text)
        assert result.returncode == 0, result.stderr
        return result.stdout.strip()


def purge_dead_letters(broker: Broker) -> None:
    # The rabbitmq fixture purges only the group queues.
    broker.purge_queues(*DEAD_LETTER_QUEUES)


@pytest.fixture
def rabbitmq_pipeline(rabbitmq: Broker, tmp_path, data_dir) -> Iterator[Pipeline]:
    purge_dead_letters(rabbitmq)
    env = child_env(data_dir, rabbitmq.url)
    yield Pipeline("rabbitmq", env, tmp_path, data_dir, rabbitmq)
    purge_dead_letters(rabbitmq)


@pytest.fixture
def embedded_pipeline(tmp_path, data_dir) -> Pipeline:
    return Pipeline("embedded", child_env(data_dir, None), tmp_path, data_dir, None)


@pytest.fixture(
    params=[
        "embedded",
        pytest.param("rabbitmq", marks=pytest.mark.rabbitmq),
    ]
)
def pipeline(request) -> Pipeline:
    fixture: Pipeline = request.getfixturevalue(f"{request.param}_pipeline")
    return fixture


def wait_until_dead_lettered(worker: WorkerProcess, notification_id: str) -> None:
    line = f"Notification {notification_id} for group 'hr' dead-lettered"
    arrived = worker.wait_for(lambda: line in worker.output, timeout_s=30)
    assert arrived, worker.output[-3000:]


def letter_block(listing: str, notification_id: str) -> str:
    """The lines ``dead-letters list`` printed about one notification."""
    blocks = listing.split("\n\n")
    found = [b for b in blocks if b.startswith(f"Notification {notification_id} ")]
    assert len(found) == 1, listing
    return found[0]


def stored_ids(data_dir: Path) -> set[str]:
    """Ids in the store of delivered ids (SQLite in the data folder)."""
    with contextlib.closing(sqlite3.connect(data_dir / "delivered.sqlite3")) as db:
        return {row[0] for row in db.execute("SELECT key FROM records")}


# -- Without a worker ---------------------------------------------------------------


def test_an_empty_dead_letter_queue_is_listed_as_empty(embedded_pipeline):
    result = embedded_pipeline.cli("dead-letters", "list", "hr")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No dead letters in hr_dead_letter."


def test_letters_of_unknown_groups_are_listed_as_unrouted(embedded_pipeline):
    result = embedded_pipeline.cli("dead-letters", "list", "unrouted")

    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "No dead letters in unrouted_dead_letter."


@pytest.mark.parametrize("command", ["list", "replay"])
def test_an_unknown_group_is_refused_naming_the_allowed_ones(embedded_pipeline, command):
    result = embedded_pipeline.cli("dead-letters", command, "sales")

    assert_one_line_error(
        result, "Unknown group 'sales'", "hr, marketing, support, or unrouted"
    )


def test_replaying_an_id_that_is_not_there_fails_in_one_line(embedded_pipeline):
    result = embedded_pipeline.cli("dead-letters", "replay", "hr", "--id", "nope")

    assert_one_line_error(result, "No dead letter with id 'nope' in hr_dead_letter.")


def test_a_letter_the_sender_would_now_refuse_stops_the_replay(embedded_pipeline):
    # Given a refused notification of 100 characters...
    pipeline = embedded_pipeline
    publish = (
        "from notifications import app, dead_letter\n"
        "from notifications.settings import get_settings\n"
        "letter = dead_letter.DeadLetter(reason='delivery_refused', error='400',\n"
        "    group='hr', notification_id='too-long', text='x' * 100)\n"
        "with app.producer_or_acquire() as producer:\n"
        "    dead_letter.publish(producer, get_settings(), letter)\n"
    )
    published = subprocess.run(
        [sys.executable, "-c", publish], env=pipeline.env, cwd=pipeline.cwd,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert published.returncode == 0, published.stderr

    # ...when it is replayed after the limit was lowered to 50 bytes...
    result = run_cli(
        "dead-letters", "replay", "hr", cwd=pipeline.cwd,
        env={**pipeline.env, "NOTIFICATIONS_MAX_TEXT_BYTES": "50"},
    )  # fmt: skip

    # ...then the replay stops with one line and the letter stays.
    assert_one_line_error(
        result,
        "Notification too-long cannot be replayed: Notification text is 100 bytes",
        "stay in hr_dead_letter.",
    )
    listing = pipeline.cli("dead-letters", "list", "hr").stdout
    assert "reason:       delivery_refused" in letter_block(listing, "too-long")


def test_an_unreachable_broker_is_reported_in_one_line_without_the_password(
    data_dir, tmp_path
):
    url = "amqp://guest:s3cret@127.0.0.1:1//"
    env = child_env(data_dir, url, NOTIFICATIONS_PUBLISH_TIMEOUT_S="1")

    result = run_cli("dead-letters", "list", "hr", env=env, cwd=tmp_path, timeout_s=30)

    assert_one_line_error(
        result, "Cannot reach the broker at amqp://guest:**@127.0.0.1:1//"
    )
    assert "s3cret" not in result.stdout + result.stderr


# -- With real workers ----------------------------------------------------------------


@pytest.mark.slow
def test_a_refused_notification_is_listed_with_its_reason_and_stays_queued(
    pipeline, tmp_path
):
    # Given a worker whose delivery refuses this text for good...
    worker = pipeline.worker(
        NOTIFICATIONS_DELIVERY=RECORDING, NOTIFICATIONS_TEST_SINK=str(tmp_path / "sink")
    )
    try:
        notification_id = pipeline.send("hr", "fail-permanent:Quarterly numbers")
        wait_until_dead_lettered(worker, notification_id)
    finally:
        worker.stop()

    # ...when the dead letters of hr are listed twice...
    first = pipeline.cli("dead-letters", "list", "hr")
    second = pipeline.cli("dead-letters", "list", "hr")

    # ...then both listings show the letter, with why it failed.
    assert first.returncode == 0, first.stderr
    assert first.stdout == second.stdout
    block = letter_block(first.stdout, notification_id)
    assert "reason:       delivery_refused (the delivery failed permanently)" in block
    assert "error:        the target answered 400 Bad Request" in block
    assert "attempts:     1" in block
    assert "text:         'fail-permanent:Quarterly numbers'" in block
    assert first.stdout.rstrip().endswith("1 dead letter in hr_dead_letter.")
    if pipeline.broker is not None:
        assert pipeline.broker.count("hr_dead_letter") == 1


@pytest.mark.slow
def test_a_replayed_letter_is_delivered_under_its_own_id_and_leaves_the_queue(
    pipeline, tmp_path
):
    # Given a notification dead-lettered after its only attempt failed...
    failing = pipeline.worker(
        NOTIFICATIONS_DELIVERY=RECORDING,
        NOTIFICATIONS_TEST_SINK=str(tmp_path / "sink"),
        NOTIFICATIONS_MAX_RETRIES="0",
    )
    try:
        notification_id = pipeline.send("hr", "fail-transient:99:x")
        wait_until_dead_lettered(failing, notification_id)
    finally:
        failing.stop()
    listing = pipeline.cli("dead-letters", "list", "hr").stdout
    assert "reason:       retries_exhausted" in letter_block(listing, notification_id)

    # ...when it is replayed to a worker whose delivery now works...
    worker = pipeline.worker()
    try:
        result = pipeline.cli("dead-letters", "replay", "hr")

        # ...then that worker delivers it under the same id...
        assert result.returncode == 0, result.stderr
        assert result.stdout.splitlines() == [
            f"Replayed notification {notification_id} to hr_queue: 'fail-transient:99:x'",
            "1 dead letter replayed.",
        ]
        delivered = f"Notification {notification_id} for group 'hr' delivered"
        assert worker.wait_for(lambda: delivered in worker.output, timeout_s=30), (
            worker.output[-3000:]
        )
    finally:
        worker.stop()
    assert [(r.notification_id, r.text) for r in worker.received()] == [
        (notification_id, "fail-transient:99:x")
    ]

    # ...and the dead-letter queue is empty.
    after = pipeline.cli("dead-letters", "list", "hr")
    assert after.stdout.strip() == "No dead letters in hr_dead_letter."
    if pipeline.broker is not None:
        assert pipeline.broker.count("hr_dead_letter") == 0


@pytest.mark.slow
def test_only_the_letter_named_by_id_is_replayed(pipeline, tmp_path):
    worker = pipeline.worker(
        NOTIFICATIONS_DELIVERY=RECORDING, NOTIFICATIONS_TEST_SINK=str(tmp_path / "sink")
    )
    try:
        first = pipeline.send("hr", "fail-permanent:first")
        second = pipeline.send("hr", "fail-permanent:second")
        wait_until_dead_lettered(worker, first)
        wait_until_dead_lettered(worker, second)
    finally:
        worker.stop()

    # No worker consumes hr_queue now, so the replayed one waits there.
    result = pipeline.cli("dead-letters", "replay", "hr", "--id", second)

    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == (
        f"Replayed notification {second} to hr_queue: 'fail-permanent:second'"
    )
    listing = pipeline.cli("dead-letters", "list", "hr").stdout
    assert letter_block(listing, first)
    assert second not in listing
    assert listing.rstrip().endswith("1 dead letter in hr_dead_letter.")


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_a_pickle_is_listed_with_its_content_type_and_never_replayed(
    rabbitmq_pipeline,
):
    import pika

    pipeline = rabbitmq_pipeline
    assert pipeline.broker is not None
    worker = pipeline.worker()
    try:
        # Given a foreign producer publishes a pickle to hr's route...
        connection = pika.BlockingConnection(pika.URLParameters(pipeline.broker.url))
        try:
            connection.channel().basic_publish(
                exchange="slack_notifications_direct",
                routing_key="hr",
                body=pickle.dumps({"text": "Quarterly numbers"}),
                properties=pika.BasicProperties(
                    content_type="application/x-python-serialize"
                ),
            )
        finally:
            connection.close()
        wait_until_dead_lettered(worker, "(no id)")
    finally:
        worker.stop()

    # ...then it is listed as a dead letter for its content type...
    listing = pipeline.cli("dead-letters", "list", "hr")
    assert listing.returncode == 0, listing.stderr
    block = letter_block(listing.stdout, "(no id)")
    assert "reason:       content_type (the content type is not allowed)" in block
    assert "content type: application/x-python-serialize" in block
    assert "body:         'base64:" in block

    # ...and a replay leaves it where it is, saying why.
    replay = pipeline.cli("dead-letters", "replay", "hr")
    assert replay.returncode == 0, replay.stderr
    assert replay.stdout.splitlines() == [
        "Left notification (no id) in hr_dead_letter: it carries no notification "
        "text (content_type).",
        "0 dead letters replayed, 1 not replayable left in hr_dead_letter.",
    ]
    assert pipeline.broker.count("hr_dead_letter") == 1


@pytest.mark.slow
@pytest.mark.rabbitmq
def test_a_replayed_notification_starts_with_no_redeliveries_counted(
    rabbitmq_pipeline, tmp_path
):
    pipeline = rabbitmq_pipeline
    sink = str(tmp_path / "sink")

    # Given a notification whose worker died while delivering it...
    doomed = pipeline.worker(
        NOTIFICATIONS_DELIVERY=RECORDING, NOTIFICATIONS_TEST_SINK=sink
    )
    try:
        notification_id = pipeline.send("hr", "kill-worker:Quarterly numbers")
        assert doomed.stop_when_exited(timeout_s=30) != 0
    finally:
        doomed.stop()

    # ...and that a worker allowing no redelivery dead-lettered when it came back...
    worker = pipeline.worker(NOTIFICATIONS_MAX_REDELIVERIES="0")
    try:
        wait_until_dead_lettered(worker, notification_id)
        counter = f"{notification_id}.redeliveries"
        assert counter in stored_ids(pipeline.data_dir)

        # ...when it is replayed...
        result = pipeline.cli("dead-letters", "replay", "hr", "--id", notification_id)

        # ...then its count is gone from the store, and the worker delivers it.
        assert result.returncode == 0, result.stderr
        assert counter not in stored_ids(pipeline.data_dir)
        delivered = f"Notification {notification_id} for group 'hr' delivered"
        assert worker.wait_for(lambda: delivered in worker.output, timeout_s=30), (
            worker.output[-3000:]
        )
    finally:
        worker.stop()
