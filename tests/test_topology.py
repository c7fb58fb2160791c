from __future__ import annotations

from kombu import Queue

from notifications import app
from notifications.settings import Settings
from notifications.topology import (
    describe,
    exchange_mismatch,
    group_queues,
    notification_exchange,
)

SETTINGS = Settings(groups=("hr", "marketing", "support", "urgent"), broker_url=None)


def test_the_exchange_is_durable_and_direct():
    exchange = notification_exchange(SETTINGS)

    assert exchange.name == "slack_notifications_direct"
    assert exchange.type == "direct"
    assert exchange.durable


def test_each_group_gets_a_durable_queue_bound_with_its_own_name():
    queues = group_queues(SETTINGS)

    assert [(q.name, q.routing_key, q.exchange.name) for q in queues] == [
        ("hr_queue", "hr", "slack_notifications_direct"),
        ("marketing_queue", "marketing", "slack_notifications_direct"),
        ("support_queue", "support", "slack_notifications_direct"),
        ("urgent_queue", "urgent", "slack_notifications_direct"),
    ]
    assert all(q.durable and not q.auto_delete and not q.exclusive for q in queues)


def test_the_celery_app_declares_exactly_the_group_queues():
    queues: dict[str, Queue] = dict(app.amqp.queues)

    assert sorted(queues) == ["hr_queue", "marketing_queue", "support_queue"]
    assert "celery" not in queues
    assert all(q.exchange.type == "direct" for q in queues.values())


def test_the_app_never_creates_a_queue_it_was_not_told_about():
    assert app.conf.task_create_missing_queues is False


def test_messages_are_json_only_persistent_confirmed_and_acked_late():
    conf = app.conf

    assert conf.accept_content == ["json"]
    assert conf.task_serializer == "json"
    assert conf.task_default_delivery_mode == "persistent"
    assert conf.broker_transport_options["confirm_publish"] is True
    assert conf.task_acks_late is True
    assert conf.task_reject_on_worker_lost is True


def test_no_result_is_stored_per_task():
    # What a worker needs is in notifications.store; nobody waits on results.
    assert app.conf.result_backend is None
    assert app.conf.task_ignore_result is True


def test_workers_send_task_events_only_once_flower_turns_them_on():
    # Flower's enable_events reaches workers through remote control.
    assert app.conf.worker_send_task_events is False
    assert app.conf.worker_enable_remote_control is True
    # Senders never: a second confirmed publish per send costs too much.
    assert app.conf.task_send_sent_event is False


def test_workers_run_a_pool_of_threads_with_a_prefetch_per_thread():
    # Deliveries wait on the network, so threads overlap them; see
    # celeryconfig.py for the figures behind these defaults.
    assert app.conf.worker_pool == "threads"
    assert app.conf.worker_concurrency >= 8
    assert app.conf.worker_prefetch_multiplier >= 1


def test_describe_lists_exchange_queues_and_bindings():
    text = describe(SETTINGS)

    assert "exchange: slack_notifications_direct (type direct, durable)" in text
    assert "  urgent_queue (durable)" in text
    assert "slack_notifications_direct --[urgent]--> urgent_queue" in text


def test_an_exchange_type_clash_says_what_exists_and_what_to_do():
    reply = (
        "Exchange.declare: (406) PRECONDITION_FAILED - inequivalent arg 'type' for "
        "exchange 'slack_notifications_direct' in vhost '/': received 'direct' but "
        "current is 'fanout'"
    )

    message = str(exchange_mismatch(SETTINGS, reply))

    assert "already exists on the broker with type 'fanout'" in message
    assert "NOTIFICATIONS_EXCHANGE" in message
    assert "PRECONDITION_FAILED" not in message
