"""The embedded broker, shared by several processes through its folder."""

from __future__ import annotations

import threading

from kombu import Connection, Consumer, Producer

from notifications import embedded
from notifications.settings import Settings
from notifications.topology import group_queues, notification_exchange

embedded.register()
SETTINGS = Settings(groups=("hr", "support"), broker_url=None)


def connection(folder) -> Connection:
    return Connection("embedded://", transport_options=embedded.transport_options(folder))


def test_a_message_published_in_one_connection_is_routed_in_another(tmp_path):
    with connection(tmp_path) as sender:
        Producer(sender.channel()).publish(
            {"text": "hi"},
            exchange=notification_exchange(SETTINGS),
            routing_key="hr",
            declare=list(group_queues(SETTINGS)),
        )

    with connection(tmp_path) as receiver:
        channel = receiver.channel()
        hr, support = (q(channel) for q in group_queues(SETTINGS))

        assert support.get() is None
        message = hr.get()
        assert message is not None
        assert message.payload == {"text": "hi"}
        message.ack()
        assert hr.get() is None


def test_two_consumers_of_one_queue_never_get_the_same_message(tmp_path):
    total = 200
    with connection(tmp_path) as sender:
        producer = Producer(sender.channel())
        for n in range(total):
            producer.publish(
                {"n": n},
                exchange=notification_exchange(SETTINGS),
                routing_key="hr",
                declare=list(group_queues(SETTINGS)),
            )

    got: list[int] = []
    lock = threading.Lock()

    def consume() -> None:
        with connection(tmp_path) as conn:
            queue = group_queues(SETTINGS)[0](conn.channel())
            while (message := queue.get()) is not None:
                with lock:
                    got.append(message.payload["n"])
                message.ack()

    threads = [threading.Thread(target=consume) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert sorted(got) == list(range(total))


def test_no_temporary_or_claimed_files_are_left_behind(tmp_path):
    with connection(tmp_path) as conn:
        queue = group_queues(SETTINGS)[1]
        Producer(conn.channel()).publish(
            "x", exchange=notification_exchange(SETTINGS), routing_key="support",
            declare=[queue],
        )  # fmt: skip
        consumer_queue = queue(conn.channel())
        message = consumer_queue.get()
        assert message is not None
        message.ack()

    assert list((tmp_path / "queues").iterdir()) == []
    assert list((tmp_path / "claimed").iterdir()) == []


def test_consumer_api_works_over_the_embedded_transport(tmp_path):
    bodies: list[str] = []
    with connection(tmp_path) as conn:
        queue = group_queues(SETTINGS)[0]
        Producer(conn.channel()).publish(
            {"text": "hello"}, exchange=notification_exchange(SETTINGS), routing_key="hr",
            declare=[queue],
        )  # fmt: skip

        def on_message(body, message):
            bodies.append(body)
            message.ack()

        with Consumer(conn, [queue], callbacks=[on_message], accept=["json"]):
            conn.drain_events(timeout=5)

    assert bodies == [{"text": "hello"}]


def test_a_message_held_by_a_killed_consumer_comes_back_marked_redelivered(tmp_path):
    import signal
    import subprocess
    import sys

    with connection(tmp_path) as conn:
        queue = group_queues(SETTINGS)[0]
        Producer(conn.channel()).publish(
            {"text": "survives"}, exchange=notification_exchange(SETTINGS),
            routing_key="hr", declare=[queue],
        )  # fmt: skip

    # Given a consumer that took the message and died before acknowledging...
    code = (
        "import os, signal, sys\n"
        "from tests.test_embedded import connection, group_queues, SETTINGS\n"
        "from pathlib import Path\n"
        "conn = connection(Path(sys.argv[1]))\n"
        "message = group_queues(SETTINGS)[0](conn.channel()).get()\n"
        "assert message is not None\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    killed = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], timeout=60, capture_output=True
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert list((tmp_path / "queues").iterdir()) == []

    # ...the next consumer gets it back, flagged as redelivered.
    with connection(tmp_path) as conn:
        message = group_queues(SETTINGS)[0](conn.channel()).get()
        assert message is not None
        assert message.payload == {"text": "survives"}
        assert message.delivery_info.get("redelivered") is True
        message.ack()
    assert list((tmp_path / "claimed").iterdir()) == []


def test_an_unacknowledged_message_goes_back_when_its_channel_closes(tmp_path):
    with connection(tmp_path) as conn:
        queue = group_queues(SETTINGS)[0]
        Producer(conn.channel()).publish(
            {"text": "again"}, exchange=notification_exchange(SETTINGS),
            routing_key="hr", declare=[queue],
        )  # fmt: skip
        channel = conn.channel()
        assert queue(channel).get() is not None
        channel.close()

    with connection(tmp_path) as conn:
        message = group_queues(SETTINGS)[0](conn.channel()).get()
        assert message is not None
        assert message.payload == {"text": "again"}
        message.ack()
    assert list((tmp_path / "claimed").iterdir()) == []
