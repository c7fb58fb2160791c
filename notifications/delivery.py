"""Delivery: what a worker does with a notification it received.

The default delivery writes one log line per notification. Other
deliveries implement :class:`Delivery` and are plugged in with
:func:`set_delivery`.
"""

from __future__ import annotations

import ast
import logging
import re
from dataclasses import dataclass
from typing import Protocol

from notifications.errors import ConfigurationError
from notifications.message import Notification

logger = logging.getLogger(__name__)

#: The one shape of every log line about a notification's fate, so that
#: operators can grep for "Notification <id>" and tools can parse it.
OUTCOME_FORMAT = "Notification %s for group %r %s: %r"
#: A dead letter's line: the same shape, with the reason after the text.
DEAD_LETTER_FORMAT = "Notification %s for group %r dead-lettered: %r (%s: %s)"

_LINE_HEAD = r"Notification (?P<id>\S+) for group '(?P<group>[^']*)' "
_RECEIVED_LINE = re.compile(_LINE_HEAD + r"received: (?P<text>.*)$")
_DEAD_LETTERED_LINE = re.compile(
    _LINE_HEAD + r"dead-lettered: (?P<text>.*) \((?P<reason>[a-z_]+): (?P<error>.*)\)$"
)


@dataclass(frozen=True)
class LoggedOutcome:
    """What a worker's log line says became of a notification."""

    notification_id: str
    group: str
    #: "received" or "dead-lettered".
    outcome: str
    text: str | None
    reason: str | None = None
    error: str | None = None


def read_outcome_line(line: str) -> LoggedOutcome | None:
    """The received or dead-lettered notification ``line`` is about, if any.

    ``line`` may carry a log prefix (time, level, logger) before the message.
    """
    found = _RECEIVED_LINE.search(line)
    if found:
        return LoggedOutcome(
            found["id"], found["group"], "received", _text(found["text"])
        )
    found = _DEAD_LETTERED_LINE.search(line)
    if found:
        return LoggedOutcome(
            found["id"],
            found["group"],
            "dead-lettered",
            _text(found["text"]),
            found["reason"],
            found["error"],
        )
    return None


def _text(logged: str) -> str | None:
    # Logged with %r: a Python literal of the text (None when it had none).
    try:
        value = ast.literal_eval(logged)
    except (ValueError, SyntaxError):
        return logged
    return value if isinstance(value, str) else None


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


_delivery: Delivery | None = None


def set_delivery(delivery: Delivery | None) -> None:
    """Replace how workers deliver notifications (``None``: as configured)."""
    global _delivery
    _delivery = delivery


def configured_delivery(path: str | None) -> Delivery:
    """The delivery named by ``NOTIFICATIONS_DELIVERY`` (``module:name``).

    ``name`` may be a class (instantiated without arguments) or an object
    with a ``deliver`` method.
    """
    if path is None:
        return LogDelivery()
    from kombu.utils.imports import symbol_by_name

    try:
        target = symbol_by_name(path, sep=":")
    except (ImportError, AttributeError) as exc:
        raise ConfigurationError(
            f"NOTIFICATIONS_DELIVERY={path!r} cannot be imported: {exc}"
        ) from exc
    delivery = target() if isinstance(target, type) else target
    if not callable(getattr(delivery, "deliver", None)):
        raise ConfigurationError(
            f"NOTIFICATIONS_DELIVERY={path!r} has no deliver(notification) method."
        )
    return delivery


def deliver(notification: Notification) -> None:
    global _delivery
    if _delivery is None:
        from notifications.settings import get_settings

        _delivery = configured_delivery(get_settings().delivery)
    _delivery.deliver(notification)
