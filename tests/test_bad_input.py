"""Every bad input ends as a clear error for the caller or a dead letter with its reason.

Real workers on a vhost of the local RabbitMQ; the messages a foreign
producer might send are published with Kombu or pika, as that producer would.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import pika
import pytest
from kombu import Connection, Exchange, Producer

from notifications import UnroutableError, send_notification
from notifications.dead_letter import DeadLetter
from notifications.settings import load_settings
from tests.helpers import (
    Broker,
    WorkerProcess,
    child_env,
    rabbitmqctl,
    run_python,
    worker_command,
)
from tests.sinks import delivered_ids, read_sink

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

EXCHANGE = "slack_notifications_direct"
SETTINGS = load_settings({})


def dead_letters(broker: Broker, group: str = "hr") -> list[DeadLetter]:
    """Take every dead letter of ``group`` off its queue."""
    letters = []
    with Connection(broker.url) as conn:
        channel = conn.channel()
        while (
            message := channel.basic_get(f"{group}_dead_letter", no_ack=True)
        ) is not None:
            letters.append(DeadLetter.from_json(json.loads(message.body)))
    return letters


def wait_dead_letters(broker: Broker, count: int, timeout_s: float = 60) -> None:
    import time

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if (broker.count("hr_dead_letter") or 0) >= count:
            return
        time.sleep(0.1)
    raise AssertionError(f"fewer than {count} dead letters after {timeout_s} s")


@pytest.fixture
def sink(tmp_path) -> Path:
    return tmp_path / "sink.log"


@pytest.fixture
def worker(rabbitmq: Broker, data_dir, tmp_path, sink) -> Iterator[WorkerProcess]:
    """An hr worker with the recording delivery, prefork with two processes."""
    env = child_env(
        data_dir,
        rabbitmq.url,
        NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
        NOTIFICATIONS_TEST_SINK=str(sink),
        NOTIFICATIONS_MAX_RETRIES="2",
        NOTIFICATIONS_MAX_REDELIVERIES="2",
        NOTIFICATIONS_RETRY_BACKOFF_S="0.2",
    )
    process = WorkerProcess(
        worker_command("hr_queue", name=f"bad-{uuid.uuid4().hex[:6]}", pool="prefork",
                       concurrency=2),
        env,
        tmp_path,
    ).start()  # fmt: skip
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()
        rabbitmq.purge_queues("hr_dead_letter", "unrouted_dead_letter")


def publish_task_message(
    broker: Broker, body: bytes, headers: dict, **properties
) -> None:
    """Publish what a Celery producer in another code base might send."""
    with Connection(broker.url) as conn:
        Producer(conn.channel()).publish(
            body,
            exchange=Exchange(EXCHANGE, type="direct", durable=True),
            routing_key="hr",
            headers=headers,
            serializer=None,
            content_encoding="utf-8",
            **properties,
        )


def task_headers(task: str = "notifications.send_notification") -> dict:
    return {"task": task, "id": str(uuid.uuid4()), "lang": "py", "retries": 0}


@pytest.mark.parametrize(
    ("body", "content_type", "task", "reason", "error"),
    [
        (b"{not json", "application/json", None, "undecodable", "Expecting"),
        (b"\x80\x04K\x01.", "application/x-python-serialize", None, "content_type", ""),
        (b'[["hr", "x"], {}, {}]', "application/json", "billing.charge", "unknown_task",
         "billing.charge"),
        (b'[["hr"], {}, {}]', "application/json", None, "invalid_notification", "text"),
        (b'[["sales", "x"], {}, {}]', "application/json", None, "invalid_notification",
         "Unknown group 'sales'"),
        (b'[["hr", ""], {}, {}]', "application/json", None, "invalid_notification",
         "empty"),
    ],
)  # fmt: skip
def test_a_message_that_can_never_succeed_is_dead_lettered_at_once(
    rabbitmq: Broker, worker, sink, body, content_type, task, reason, error
):
    headers = task_headers(task or "notifications.send_notification")

    publish_task_message(rabbitmq, body, headers, content_type=content_type)
    wait_dead_letters(rabbitmq, 1)

    [letter] = dead_letters(rabbitmq)
    assert letter.reason == reason
    assert error in letter.error
    assert letter.notification_id == headers["id"]
    assert delivered_ids(sink) == []
    assert rabbitmq.count("hr_queue") == 0  # not requeued in a loop


def test_a_pickle_is_dead_lettered_unread_with_its_bytes_kept(rabbitmq: Broker, worker):
    import base64

    pickled = b"\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00\x8c\x01x\x94."

    publish_task_message(
        rabbitmq, pickled, task_headers(), content_type="application/x-python-serialize"
    )
    wait_dead_letters(rabbitmq, 1)

    [letter] = dead_letters(rabbitmq)
    assert letter.reason == "content_type"
    assert letter.body == "base64:" + base64.b64encode(pickled).decode()


def test_a_transient_failure_is_retried_until_delivered_once(
    rabbitmq: Broker, worker, sink
):
    result = send_notification.delay("hr", "fail-transient:2:Payroll is out")

    assert worker.wait_for(lambda: result.id in delivered_ids(sink), timeout_s=60), (
        worker.output[-3000:]
    )
    assert delivered_ids(sink) == [result.id]
    starts = [f for f in read_sink(sink) if f[0] == "start"]
    assert len(starts) == 3  # two failures, then the delivery
    assert f"Notification {result.id} for group 'hr' retried in" in worker.output


def test_retries_are_capped_then_the_notification_is_dead_lettered(
    rabbitmq: Broker, worker, sink
):
    result = send_notification.delay("hr", "fail-transient:99:Never reachable")
    wait_dead_letters(rabbitmq, 1)

    [letter] = dead_letters(rabbitmq)
    assert (letter.reason, letter.notification_id, letter.group) == (
        "retries_exhausted",
        result.id,
        "hr",
    )
    assert letter.text == "fail-transient:99:Never reachable"
    assert letter.attempts == 3  # the first try and two retries
    assert "503" in letter.error
    assert delivered_ids(sink) == []


def test_a_permanent_failure_is_dead_lettered_without_retrying(
    rabbitmq: Broker, worker, sink
):
    result = send_notification.delay("hr", "fail-permanent:Bad address")
    wait_dead_letters(rabbitmq, 1)

    [letter] = dead_letters(rabbitmq)
    assert (letter.reason, letter.notification_id, letter.attempts) == (
        "delivery_refused",
        result.id,
        1,
    )
    assert "400" in letter.error
    assert len([f for f in read_sink(sink) if f[0] == "start"]) == 1


def test_a_notification_that_kills_its_worker_every_time_ends_dead_lettered(
    rabbitmq: Broker, worker, sink
):
    result = send_notification.delay("hr", "kill-worker:Crash me")
    wait_dead_letters(rabbitmq, 1, timeout_s=90)

    [letter] = dead_letters(rabbitmq)
    assert (letter.reason, letter.notification_id) == ("worker_lost", result.id)
    assert rabbitmq.count("hr_queue") == 0
    # The worker lives on and still delivers.
    after = send_notification.delay("hr", "Business as usual")
    assert worker.wait_for(lambda: after.id in delivered_ids(sink), timeout_s=30)


def test_a_notification_without_a_queue_raises_unroutable(rabbitmq: Broker):
    send_notification.delay("hr", "declares the queue")
    with Connection(rabbitmq.url) as conn:
        conn.channel().queue_unbind("hr_queue", EXCHANGE, routing_key="hr")
    try:
        with pytest.raises(UnroutableError, match="no queue for this notification"):
            send_notification.delay("hr", "lost without a binding")
    finally:
        with Connection(rabbitmq.url) as conn:
            conn.channel().queue_bind("hr_queue", EXCHANGE, routing_key="hr")
    assert rabbitmq.count("hr_queue") == 1  # only the first one


@pytest.mark.parametrize(
    ("body", "properties", "text"),
    [
        (b"New message in HR", {}, "New message in HR"),
        (b"Plain text", {"content_type": "text/plain"}, "Plain text"),
        (json.dumps({"text": "From Go"}).encode(), {"content_type": "application/json"},
         "From Go"),
        (json.dumps("A JSON string").encode(), {"content_type": "application/json"},
         "A JSON string"),
    ],
)  # fmt: skip
def test_a_plain_amqp_producer_is_delivered_like_delay(
    rabbitmq: Broker, worker, sink, body, properties, text
):
    message_id = str(uuid.uuid4())

    # The tutorial's own pika producer, with a message id.
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        connection.channel().basic_publish(
            EXCHANGE, "hr", body,
            pika.BasicProperties(delivery_mode=2, message_id=message_id, **properties),
        )  # fmt: skip
    finally:
        connection.close()

    assert worker.wait_for(lambda: message_id in delivered_ids(sink), timeout_s=30), (
        worker.output[-3000:]
    )
    [done] = [f for f in read_sink(sink) if f[0] == "done"]
    assert done[2:] == (message_id, "hr", text)


@pytest.mark.parametrize(
    ("body", "content_type", "reason"),
    [
        (b"{broken", "application/json", "undecodable"),
        (json.dumps({"message": "no text key"}).encode(), "application/json",
         "undecodable"),
        (b"\xff\xfe", "text/plain", "undecodable"),
        (b"<xml/>", "application/xml", "content_type"),
        (b"", "text/plain", "invalid_notification"),
    ],
)  # fmt: skip
def test_a_plain_message_that_is_no_notification_is_dead_lettered(
    rabbitmq: Broker, worker, body, content_type, reason
):
    connection = pika.BlockingConnection(pika.URLParameters(rabbitmq.url))
    try:
        connection.channel().basic_publish(
            EXCHANGE, "hr", body, pika.BasicProperties(content_type=content_type)
        )
    finally:
        connection.close()
    wait_dead_letters(rabbitmq, 1)

    [letter] = dead_letters(rabbitmq)
    assert letter.reason == reason
    assert letter.group == "hr"


def test_a_sender_blocked_by_a_memory_alarm_gets_an_error_in_bounded_time(
    rabbitmq: Broker, data_dir, tmp_path
):
    watermark = rabbitmqctl(
        "eval", "vm_memory_monitor:get_vm_memory_high_watermark()."
    ).strip()
    rabbitmqctl("set_vm_memory_high_watermark", "0.000001")
    try:
        env = child_env(data_dir, rabbitmq.url, NOTIFICATIONS_PUBLISH_TIMEOUT_S="2")
        code = (
            "from notifications import send_notification, BrokerError\n"
            "try:\n"
            "    send_notification.delay('hr', 'blocked')\n"
            "    print('accepted')\n"
            "except BrokerError as exc:\n"
            "    print('raised:', exc)\n"
        )
        # The subprocess timeout is the bound: a hang fails the test.
        result = run_python(code, env, tmp_path, timeout_s=60)
    finally:
        rabbitmqctl("set_vm_memory_high_watermark", watermark or "0.4")

    assert result.stdout.startswith("raised: "), result.stdout + result.stderr
    assert "Traceback" not in result.stdout
