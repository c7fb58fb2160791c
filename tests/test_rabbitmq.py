"""What the broker sees: topology, persistence, and nothing published on bad input."""

from __future__ import annotations

import time

import pytest
from kombu import Connection, Exchange

from notifications import (
    ExchangeMismatchError,
    InvalidTextError,
    UnknownGroupError,
    send_notification,
)
from tests.helpers import Broker, rabbitmqctl

pytestmark = pytest.mark.rabbitmq


def test_the_exchange_is_direct_and_durable_on_the_broker(rabbitmq: Broker):
    send_notification.delay("hr", "New message in HR")

    exchanges = {
        row["name"]: row for row in rabbitmq.table("exchanges", "name", "type", "durable")
    }
    assert exchanges["slack_notifications_direct"]["type"] == "direct"
    assert exchanges["slack_notifications_direct"]["durable"] == "true"


def test_queues_are_durable_and_bound_with_their_group_as_key(rabbitmq: Broker):
    for group in ("hr", "marketing", "support"):
        send_notification.delay(group, f"New message in {group}")

    bindings = rabbitmq.table(
        "bindings", "source_name", "routing_key", "destination_name"
    )
    ours = sorted(
        (b["routing_key"], b["destination_name"])
        for b in bindings
        if b["source_name"] == "slack_notifications_direct"
    )
    assert ours == [
        ("hr", "hr_queue"),
        ("marketing", "marketing_queue"),
        ("support", "support_queue"),
    ]
    queues = rabbitmq.queues()
    for name in ("hr_queue", "marketing_queue", "support_queue"):
        assert queues[name]["durable"] == "true"
        assert queues[name]["messages"] == "1"
    assert "celery" not in queues


def test_a_notification_is_a_persistent_json_message_in_its_groups_queue_only(
    rabbitmq: Broker,
):
    result = send_notification.delay("marketing", "New message in Marketing")

    with Connection(rabbitmq.url) as conn:
        channel = conn.channel()
        for other in ("hr_queue", "support_queue"):
            assert channel.basic_get(other) is None
        message = channel.basic_get("marketing_queue", no_ack=True)

    assert message is not None
    assert message.properties["delivery_mode"] == 2
    assert message.content_type == "application/json"
    assert message.headers["id"] == result.id
    assert message.delivery_info["routing_key"] == "marketing"
    assert message.delivery_info["exchange"] == "slack_notifications_direct"


@pytest.mark.parametrize(
    ("send", "error"),
    [
        (lambda: send_notification.delay("sales", "x"), UnknownGroupError),
        (lambda: send_notification.apply_async(("sales", "x")), UnknownGroupError),
        (lambda: send_notification.s("sales", "x").delay(), UnknownGroupError),
        (lambda: send_notification.delay("hr", ""), InvalidTextError),
        (lambda: send_notification.delay("hr", "x" * 70_000), InvalidTextError),
        (lambda: send_notification.delay("hr", b"bytes"), TypeError),
        (lambda: send_notification.delay("hr"), TypeError),
    ],
)
def test_bad_input_raises_and_nothing_reaches_the_broker(rabbitmq: Broker, send, error):
    with pytest.raises(error):
        send()

    assert rabbitmq.counts() == {
        "hr_queue": 0,
        "marketing_queue": 0,
        "support_queue": 0,
    }
    assert rabbitmq.count("sales_queue") is None
    assert rabbitmq.count("celery") is None


@pytest.mark.parametrize(
    "send",
    [
        lambda: send_notification.delay("support", "one"),
        lambda: send_notification.apply_async(("support", "one")),
        lambda: send_notification.apply_async(kwargs={"group": "support", "text": "one"}),
        lambda: send_notification.s("support", "one").delay(),
        lambda: send_notification.s("support", "one").apply_async(),
    ],
)
def test_every_way_of_sending_lands_in_the_groups_queue_only(rabbitmq: Broker, send):
    result = send()

    assert result.id
    assert rabbitmq.counts() == {"hr_queue": 0, "marketing_queue": 0, "support_queue": 1}


def test_a_fanout_exchange_of_the_same_name_stops_the_sender_with_advice(
    rabbitmq: Broker, monkeypatch
):
    from notifications import settings as settings_module
    from notifications.broker import broker_errors
    from notifications.topology import declare

    clash = "clash_for_sender"
    with Connection(rabbitmq.url) as conn:
        Exchange(clash, type="fanout", durable=True)(conn.channel()).declare()
        settings = settings_module.Settings(exchange_name=clash, broker_url=rabbitmq.url)

        with pytest.raises(ExchangeMismatchError) as caught, broker_errors(settings):
            declare(conn, settings, ("hr",))

    message = str(caught.value)
    assert "with type 'fanout'" in message
    assert "NOTIFICATIONS_EXCHANGE" in message


def test_a_send_after_the_broker_closed_the_connection_goes_through(rabbitmq: Broker):
    # The pooled connection is open and idle, as in an app between requests.
    send_notification.delay("hr", "Before")
    # The broker drops every connection of this vhost (a restart does the
    # same); the pool still holds the dead one.
    rabbitmqctl("close_all_connections", "-p", rabbitmq.vhost, "test")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and rabbitmq.vhost in rabbitmqctl(
        "list_connections", "vhost"
    ):
        time.sleep(0.1)

    send_notification.delay("hr", "After")

    assert rabbitmq.count("hr_queue") == 2
