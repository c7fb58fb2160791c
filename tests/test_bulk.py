"""``send_many``: many notifications over one connection, each delivered once.

Against a vhost of the local RabbitMQ, and once on the embedded broker; the
delivery tests run real workers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from celery.signals import before_task_publish
from kombu import Connection

from notifications import (
    BrokerUnreachableError,
    InvalidTextError,
    InvalidTextTypeError,
    UnknownGroupError,
    UnroutableError,
    send_notification,
)
from notifications.bulk import (
    BulkRefusedError,
    BulkSendError,
    BulkUnroutableError,
    send_many,
)
from tests.helpers import REPO, Broker, WorkerProcess, child_env, worker_command
from tests.sinks import delivered_ids, read_sink

#: A sender in its own process, since this one's settings point at RabbitMQ.
SEND_MANY = (
    "import json, sys\n"
    "from notifications.bulk import send_many\n"
    "print(json.dumps(send_many('hr', json.loads(sys.argv[1]), batch_size=2)))\n"
)

EXCHANGE = "slack_notifications_direct"


@pytest.mark.rabbitmq
def test_a_thousand_texts_become_a_thousand_queued_notifications(rabbitmq: Broker):
    texts = [f"Payslip {n} is ready" for n in range(1000)]

    ids = send_many("hr", texts)

    assert len(ids) == len(set(ids)) == 1000
    assert rabbitmq.count("hr_queue") == 1000
    # The other groups' queues received nothing (they may not even exist).
    assert not rabbitmq.count("marketing_queue")
    assert not rabbitmq.count("support_queue")


@pytest.mark.rabbitmq
def test_notifications_are_queued_in_the_order_of_the_texts_across_batches(
    rabbitmq: Broker,
):
    texts = [f"Step {n}" for n in range(23)]

    ids = send_many("hr", texts, batch_size=5)

    queued = [(m.headers["id"], m.headers["argsrepr"]) for m in rabbitmq.take_all()]
    assert queued == [(i, repr(("hr", t))) for i, t in zip(ids, texts, strict=True)]


def titled(title: str | None) -> dict[str, str]:
    return {"title": title} if title else {}


def as_a_worker_sees_it(message: Any) -> dict[str, Any]:
    """All a worker can read of a message (py-amqp's), but its task id."""
    notification_id = message.headers["id"]
    headers = dict(message.headers)
    del headers["id"]
    # The root of a notification sent outside a task is itself.
    assert headers.pop("root_id") == notification_id
    properties = dict(message.properties)
    del properties["application_headers"]
    assert properties.pop("correlation_id") == notification_id
    return {
        "headers": headers,
        "properties": properties,
        "body": message.body,
        "decoded body": json.loads(message.body),
        "exchange": message.delivery_info["exchange"],
        "routing_key": message.delivery_info["routing_key"],
    }


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Same text", None),
        ("Same text", "Same title"),
        ('It\'s "quoted",\nover two lines \\ with a backslash', "Don't"),
        ("Ünïcödé and emoji 🚀, \u2028 a line separator", None),
        # Longer than Celery's argsrepr limit (1024 characters): cut by it.
        ("A long one, it's " * 80, None),
        # 64 KiB of UTF-8 that JSON escapes to 192 KiB: a body over frame_max.
        ("é" * 32_768, None),
    ],
    ids=["plain", "title", "quotes", "unicode", "long-argsrepr", "over-frame-max"],
)
def test_each_message_is_the_one_delay_sends(
    rabbitmq: Broker, text: str, title: str | None
):
    # Given the same notification sent once by .delay() and once by send_many...
    # (.delay("hr", text) is the call without a title; title=None would
    # send the keyword argument.)
    by_delay = send_notification.delay("hr", text, **titled(title)).id
    [by_bulk] = send_many("hr", [text], title=title)

    # ...the two messages on the queue differ only in their ids.
    delayed, bulk = rabbitmq.take_all()
    assert (delayed.headers["id"], bulk.headers["id"]) == (by_delay, by_bulk)
    assert as_a_worker_sees_it(bulk) == as_a_worker_sees_it(delayed)
    assert bulk.properties["delivery_mode"] == 2  # persistent
    assert bulk.properties["content_type"] == "application/json"
    assert json.loads(bulk.body)[0] == ["hr", text]


@pytest.mark.rabbitmq
@pytest.mark.parametrize(
    ("text", "title"),
    [
        ("Same text", None),
        ('It\'s "quoted",\nwith a title', "Don't"),
        ("é" * 32_768, None),
    ],
    ids=["plain", "title", "over-frame-max"],
)
def test_a_direct_delay_sends_the_message_celery_sends(
    rabbitmq: Broker, text: str, title: str | None
):
    # Given a plain .delay(), written directly, and the same notification
    # with an empty headers option, which only Celery's send_task takes...
    direct = send_notification.delay("hr", text, **titled(title)).id
    through_celery = send_notification.apply_async(
        ("hr", text), titled(title), headers={}
    ).id

    # ...the two messages on the queue differ only in their ids.
    first, second = rabbitmq.take_all()
    assert (first.headers["id"], second.headers["id"]) == (direct, through_celery)
    assert as_a_worker_sees_it(first) == as_a_worker_sees_it(second)


@pytest.mark.rabbitmq
def test_a_before_task_publish_receiver_is_still_called(rabbitmq: Broker):
    # Given someone listening to Celery's before_task_publish signal...
    seen: list[str] = []

    def receiver(headers: dict[str, Any], **_: Any) -> None:
        seen.append(headers["id"])

    before_task_publish.connect(receiver)
    try:
        # ...a plain .delay() goes through Celery and reaches it.
        notification_id = send_notification.delay("hr", "Signalled").id
    finally:
        before_task_publish.disconnect(receiver)

    assert seen == [notification_id]
    assert [m.headers["id"] for m in rabbitmq.take_all()] == [notification_id]


@pytest.mark.rabbitmq
def test_a_direct_delay_the_broker_refuses_raises_as_through_celery(rabbitmq: Broker):
    send_notification.delay("hr", "Fits")

    with rabbitmq.refusing_beyond("hr_queue", 1):
        with pytest.raises(BrokerUnreachableError) as direct:
            send_notification.delay("hr", "Refused")
        with pytest.raises(BrokerUnreachableError) as through_celery:
            send_notification.apply_async(("hr", "Refused"), headers={})

    assert "\n" not in str(direct.value)
    assert str(direct.value).split(" (")[0] == str(through_celery.value).split(" (")[0]
    assert rabbitmq.count("hr_queue") == 1


@pytest.mark.rabbitmq
def test_an_invalid_text_in_the_middle_publishes_nothing(rabbitmq: Broker):
    texts = [f"Fine {n}" for n in range(1000)]
    texts[500] = "   "

    with pytest.raises(InvalidTextError, match="index 500"):
        send_many("hr", texts)

    assert rabbitmq.count("hr_queue") == 0


@pytest.mark.rabbitmq
def test_a_text_that_is_not_a_str_publishes_nothing(rabbitmq: Broker):
    with pytest.raises(InvalidTextTypeError, match="index 1"):
        send_many("hr", ["Fine", b"bytes are not text"])  # type: ignore[list-item]

    assert rabbitmq.count("hr_queue") == 0


@pytest.mark.rabbitmq
def test_a_single_string_is_refused_rather_than_sent_letter_by_letter(
    rabbitmq: Broker,
):
    with pytest.raises(InvalidTextTypeError, match="iterable of texts"):
        send_many("hr", "New message in HR")

    assert rabbitmq.count("hr_queue") == 0


@pytest.mark.rabbitmq
def test_an_unknown_group_raises_and_publishes_nothing(rabbitmq: Broker):
    with pytest.raises(UnknownGroupError, match="allowed groups are hr"):
        send_many("sales", ["Quarterly numbers"])

    assert not any(rabbitmq.counts().values())


@pytest.mark.rabbitmq
def test_a_bad_title_or_batch_size_publishes_nothing(rabbitmq: Broker):
    with pytest.raises(InvalidTextError, match="single line"):
        send_many("hr", ["Fine"], title="two\nlines")
    with pytest.raises(ValueError, match="batch_size"):
        send_many("hr", ["Fine"], batch_size=0)

    assert rabbitmq.count("hr_queue") == 0


@pytest.mark.rabbitmq
def test_no_texts_send_nothing(rabbitmq: Broker):
    assert send_many("hr", []) == []
    assert rabbitmq.count("hr_queue") == 0


@pytest.mark.rabbitmq
def test_notifications_no_queue_receives_raise_unroutable(rabbitmq: Broker):
    # Given the queue was declared once, then its binding removed on the broker...
    send_many("hr", ["declares the queue"])
    with Connection(rabbitmq.url) as conn:
        conn.channel().queue_unbind("hr_queue", EXCHANGE, routing_key="hr")
    try:
        # ...a bulk send raises, and says nothing reached a queue.
        with pytest.raises(
            UnroutableError, match="no queue for this notification"
        ) as err:
            send_many("hr", [f"lost {n}" for n in range(30)], batch_size=10)
    finally:
        with Connection(rabbitmq.url) as conn:
            conn.channel().queue_bind("hr_queue", EXCHANGE, routing_key="hr")

    error = err.value
    assert isinstance(error, BulkUnroutableError)
    # Nothing is written once a notification came back: here, after the
    # ten that were awaiting their confirm.
    assert (
        "0 of the 30 notifications were confirmed; those from index 10 on were "
        "not published." in str(error)
    )
    assert error.confirmed_ids == []
    assert len(error.unconfirmed_ids) == len(error.notification_ids) == 30
    assert rabbitmq.count("hr_queue") == 1  # only the first one

    # The pooled connection is still good for the next send.
    assert len(send_many("hr", ["after the binding is back"])) == 1
    assert rabbitmq.count("hr_queue") == 2


@pytest.fixture
def hr_queue_holding_five(rabbitmq: Broker) -> Iterator[None]:
    send_many("hr", ["declares the queue"])
    rabbitmq.purge_queues("hr_queue")
    with rabbitmq.refusing_beyond("hr_queue", 5):
        yield


@pytest.mark.rabbitmq
def test_notifications_the_broker_refuses_raise_with_the_ones_it_took(
    rabbitmq: Broker, hr_queue_holding_five: None
):
    with pytest.raises(BulkRefusedError, match="refused 7 notifications") as err:
        send_many("hr", [f"Reminder {n}" for n in range(12)])

    error = err.value
    assert "5 of the 12 notifications were confirmed." in str(error)
    assert error.confirmed_ids == error.notification_ids[:5]
    assert error.unconfirmed_ids == error.notification_ids[5:]
    assert [m.headers["id"] for m in rabbitmq.take_all()] == error.confirmed_ids


def test_bulk_errors_are_broker_errors_callers_already_catch():
    assert issubclass(BulkUnroutableError, UnroutableError)
    assert issubclass(BulkUnroutableError, BulkSendError)


@pytest.fixture
def sink(tmp_path: Path) -> Path:
    return tmp_path / "sink.log"


@pytest.fixture
def worker(
    rabbitmq: Broker, data_dir: Path, tmp_path: Path, sink: Path
) -> Iterator[WorkerProcess]:
    env = child_env(
        data_dir,
        rabbitmq.url,
        NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
        NOTIFICATIONS_TEST_SINK=str(sink),
    )
    # Prefork, the worker's default pool: with the solo pool the late ack
    # of a notification was seen to wait for the event loop's next 2 s
    # timer now and then, which makes a thousand deliveries a matter of luck.
    command = worker_command(
        "hr_queue", name=f"bulk-{uuid.uuid4().hex[:6]}", pool="prefork", concurrency=2
    )
    process = WorkerProcess(command, env, tmp_path).start()
    try:
        process.wait_ready()
        yield process
    finally:
        process.stop()


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.rabbitmq
def test_a_worker_delivers_each_bulk_notification_exactly_once(
    rabbitmq: Broker, worker: WorkerProcess, sink: Path
):
    ids = send_many("hr", [f"Bulk {n}" for n in range(1000)])

    assert worker.wait_for(lambda: set(ids) <= set(delivered_ids(sink)), timeout_s=240), (
        f"{len(set(delivered_ids(sink)))} of 1000 delivered\n{worker.output[-2000:]}"
    )
    assert rabbitmq.count("hr_queue") == 0
    assert Counter(delivered_ids(sink)) == Counter(ids)


@pytest.mark.slow
def test_the_embedded_broker_delivers_a_bulk_send_too(tmp_path: Path, data_dir: Path):
    sink = tmp_path / "sink.log"
    env = child_env(
        data_dir,
        None,
        NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
        NOTIFICATIONS_TEST_SINK=str(sink),
    )
    sent = subprocess.run(
        [sys.executable, "-c", SEND_MANY, json.dumps([f"Offline {n}" for n in range(5)])],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert sent.returncode == 0, sent.stderr
    ids = json.loads(sent.stdout)

    worker = WorkerProcess(
        worker_command("hr_queue", name=f"bulk-embedded-{uuid.uuid4().hex[:6]}"),
        env,
        tmp_path,
    ).start()
    try:
        assert worker.wait_for(
            lambda: sorted(delivered_ids(sink)) == sorted(ids), timeout_s=60
        ), worker.output[-2000:]
    finally:
        worker.stop()
    texts = [fields[4] for fields in read_sink(sink) if fields[0] == "done"]
    assert sorted(texts) == [f"Offline {n}" for n in range(5)]
