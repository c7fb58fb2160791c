"""Delivery: what a worker does with a notification it received.

The default delivery writes one log line per notification. Other
deliveries implement :class:`Delivery` and are plugged in with
:func:`set_delivery`.
"""

from __future__ import annotations

import logging
from typing import Protocol

from notifications.message import Notification

logger = logging.getLogger(__name__)

#: The one shape of every log line about a notification's fate, so that
#: operators can grep for "Notification <id>" and tools can parse it.
OUTCOME_FORMAT = "Notification %s for group %r %s: %r"


def log_outcome(
    outcome: str, notification: Notification, level: int = logging.INFO
) -> None:
    """Log ``outcome`` (received, delivered, rejected…) for ``notification``."""
    logger.log(
        level,
        OUTCOME_FORMAT,
        notification.notification_id,
        notification.group,
        outcome,
        notification.text,
        extra={
            "notification_id": notification.notification_id,
            "group": notification.group,
            "outcome": outcome,
        },
    )


class Delivery(Protocol):
    def deliver(self, notification: Notification) -> None:
        """Deliver ``notification``; raise to signal failure."""


class LogDelivery:
    """Delivers a notification by logging it, like the tutorial's consumer."""

    def deliver(self, notification: Notification) -> None:
        log_outcome("received", notification)


_delivery: Delivery = LogDelivery()


def set_delivery(delivery: Delivery) -> None:
    """Replace how workers deliver notifications."""
    global _delivery
    _delivery = delivery


def deliver(notification: Notification) -> None:
    _delivery.deliver(notification)
