"""Notifications routed by group through a direct exchange.

App code::

    from notifications import send_notification
    send_notification.delay("hr", "New message in HR")

Workers: ``celery -A notifications worker -Q hr_queue`` (one per group).
"""

from notifications import worker as _worker  # noqa: F401  (connects start-up checks)
from notifications.application import app
from notifications.errors import (
    BrokerAccessError,
    BrokerError,
    BrokerUnreachableError,
    ConfigurationError,
    ExchangeMismatchError,
    InvalidTextError,
    InvalidTextTypeError,
    NotificationsError,
    UnknownGroupError,
)
from notifications.message import Notification
from notifications.tasks import send_notification

__all__ = [
    "BrokerAccessError",
    "BrokerError",
    "BrokerUnreachableError",
    "ConfigurationError",
    "ExchangeMismatchError",
    "InvalidTextError",
    "InvalidTextTypeError",
    "Notification",
    "NotificationsError",
    "UnknownGroupError",
    "app",
    "send_notification",
]
