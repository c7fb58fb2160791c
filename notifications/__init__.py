"""Notifications routed by group through a direct exchange.

App code::

    from notifications import send_notification
    send_notification.delay("hr", "New message in HR")

Workers: ``celery -A notifications worker -Q hr_queue`` (one per group).
"""

from notifications import worker as _worker  # noqa: F401  (connects start-up checks)
from notifications.application import app
from notifications.bulk import send_many
from notifications.errors import (
    BrokerAccessError,
    BrokerError,
    BrokerUnreachableError,
    ConfigurationError,
    DeliveryError,
    ExchangeMismatchError,
    InvalidTextError,
    InvalidTextTypeError,
    NotificationsError,
    PermanentDeliveryError,
    TransientDeliveryError,
    UnknownGroupError,
    UnroutableError,
)
from notifications.message import Notification
from notifications.tasks import send_notification

__all__ = [
    "BrokerAccessError",
    "BrokerError",
    "BrokerUnreachableError",
    "ConfigurationError",
    "DeliveryError",
    "ExchangeMismatchError",
    "InvalidTextError",
    "InvalidTextTypeError",
    "Notification",
    "NotificationsError",
    "PermanentDeliveryError",
    "TransientDeliveryError",
    "UnknownGroupError",
    "UnroutableError",
    "app",
    "send_many",
    "send_notification",
]
