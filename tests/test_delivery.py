from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from notifications.delivery import (
    DEAD_LETTER_FORMAT,
    LogDelivery,
    LoggedOutcome,
    deliver,
    log_outcome,
    read_outcome_line,
    set_delivery,
)
from notifications.errors import NotificationsError
from notifications.message import Notification
from notifications.tasks import check_received

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
        set_delivery(None)

    assert seen == [HR]


def test_the_worker_accepts_a_valid_notification():
    assert check_received(request(), "hr", "New message in HR") == HR


@pytest.mark.parametrize(
    ("group", "text", "reason"),
    [
        ("sales", "x", "Unknown group 'sales'"),
        ("hr", "", "empty"),
        ("hr", 42, "must be a str"),
        (None, "x", "Unknown group None"),
    ],
)
def test_the_worker_refuses_what_this_code_would_never_send(group, text, reason):
    with pytest.raises((NotificationsError, TypeError, ValueError), match=reason):
        check_received(request(routing_key=None), group, text)


def test_the_worker_refuses_a_notification_under_another_groups_key():
    with pytest.raises(NotificationsError, match="arrived with routing key 'support'"):
        check_received(request(routing_key="support"), "hr", "x")


def test_the_worker_refuses_a_notification_from_a_queue_it_was_not_meant_for():
    with pytest.raises(NotificationsError, match="consumes only support_queue"):
        check_received(request(), "hr", "x", consumed_queues={"support_queue"})


@pytest.mark.parametrize(
    "text", ["New message in HR", 'It\'s "quoted"', "two\nlines", "Ünïcödé 🚀"]
)
def test_a_received_line_reads_back_as_the_notification(caplog, text):
    caplog.set_level(logging.INFO, logger="notifications")
    LogDelivery().deliver(Notification("3f2b-id", "hr", text))

    logged = read_outcome_line("[2026-12-04 05:00:00: INFO] " + caplog.messages[0])

    assert logged == LoggedOutcome("3f2b-id", "hr", "received", text)


def test_a_dead_letter_line_reads_back_with_its_reason(caplog):
    caplog.set_level(logging.WARNING, logger="notifications")
    logging.getLogger("notifications.dead_letter").warning(
        DEAD_LETTER_FORMAT,
        "3f2b-id",
        "hr",
        "New message in HR",
        "delivery_refused",
        "json://hooks.example.com/: error=400 (bad request)",
    )

    logged = read_outcome_line(caplog.messages[0])

    assert logged is not None
    assert (logged.outcome, logged.text, logged.reason, logged.error) == (
        "dead-lettered",
        "New message in HR",
        "delivery_refused",
        "json://hooks.example.com/: error=400 (bad request)",
    )


def test_other_lines_are_not_outcomes():
    assert read_outcome_line("celery@host ready.") is None
    assert read_outcome_line("Notification x for group 'hr' delivered: 'y'") is None
