from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest
from celery.exceptions import Reject

from notifications.delivery import LogDelivery, deliver, log_outcome, set_delivery
from notifications.message import Notification
from notifications.tasks import received

HR = Notification("3f2b-id", "hr", "New message in HR")


def request(routing_key: str | None = "hr") -> SimpleNamespace:
    return SimpleNamespace(id="3f2b-id", delivery_info={"routing_key": routing_key})


def test_the_log_line_names_id_group_outcome_and_text(caplog):
    caplog.set_level(logging.INFO, logger="notifications")

    LogDelivery().deliver(HR)

    assert caplog.messages == [
        "Notification 3f2b-id for group 'hr' received: 'New message in HR'"
    ]
    record = caplog.records[0]
    assert (record.notification_id, record.group, record.outcome) == (
        "3f2b-id",
        "hr",
        "received",
    )


def test_every_outcome_uses_the_same_shape(caplog):
    caplog.set_level(logging.INFO, logger="notifications")

    log_outcome("delivered", HR)

    assert caplog.messages == [
        "Notification 3f2b-id for group 'hr' delivered: 'New message in HR'"
    ]


def test_another_delivery_can_be_plugged_in():
    seen: list[Notification] = []

    class Collect:
        def deliver(self, notification: Notification) -> None:
            seen.append(notification)

    set_delivery(Collect())
    try:
        deliver(HR)
    finally:
        set_delivery(LogDelivery())

    assert seen == [HR]


def test_the_worker_accepts_a_valid_notification():
    assert received(request(), "hr", "New message in HR") == HR


@pytest.mark.parametrize(
    ("group", "text", "reason"),
    [
        ("sales", "x", "Unknown group 'sales'"),
        ("hr", "", "empty"),
        ("hr", 42, "must be a str"),
        (None, "x", "Unknown group None"),
    ],
)
def test_the_worker_rejects_what_this_code_would_never_send(caplog, group, text, reason):
    with pytest.raises(Reject) as caught:
        received(request(routing_key=None), group, text)

    assert reason in str(caught.value.reason)
    assert caught.value.requeue is False
    assert any(
        "Notification 3f2b-id rejected" in m and reason in m for m in caplog.messages
    )


def test_the_worker_rejects_a_notification_that_came_in_under_another_groups_key():
    with pytest.raises(Reject, match="arrived with routing key 'support'"):
        received(request(routing_key="support"), "hr", "x")


def test_the_worker_rejects_a_notification_from_a_queue_it_was_not_meant_for():
    with pytest.raises(Reject, match="consumes only support_queue"):
        received(request(), "hr", "x", consumed_queues={"support_queue"})


def test_the_rejection_is_logged_with_id_reason_and_content(caplog):
    with pytest.raises(Reject):
        received(request(routing_key=None), "sales", "Quarterly numbers")

    assert caplog.messages == [
        "Notification 3f2b-id rejected: Unknown group 'sales': allowed groups are "
        "hr, marketing, support. (group='sales', text='Quarterly numbers')"
    ]
