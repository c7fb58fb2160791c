"""The exceptions this package raises.

Every error derives from :class:`NotificationsError`. Errors about bad
input also derive from the matching builtin, so callers that only know
``ValueError`` or ``TypeError`` still catch them.
"""

from __future__ import annotations


class NotificationsError(Exception):
    """Base class for every error raised by this package."""


class ConfigurationError(NotificationsError, ValueError):
    """A setting (environment variable or ``.env`` entry) is invalid."""


class UnknownGroupError(NotificationsError, ValueError):
    """A notification names a group this deployment does not have."""

    def __init__(self, group: object, allowed: tuple[str, ...]) -> None:
        self.group = group
        self.allowed = allowed
        super().__init__(
            f"Unknown group {group!r}: allowed groups are {', '.join(allowed)}."
        )


class InvalidTextError(NotificationsError, ValueError):
    """A notification text is empty, too long or not valid Unicode."""


class InvalidTextTypeError(NotificationsError, TypeError):
    """A notification text is not a ``str``."""


class BrokerError(NotificationsError):
    """Base class for problems talking to the message broker."""


class BrokerUnreachableError(BrokerError, ConnectionError):
    """The broker did not answer within the configured time."""


class UnroutableError(BrokerError):
    """The broker accepted a notification that no queue receives."""


class BrokerAccessError(BrokerError):
    """The broker refused the credentials or the vhost."""


class ExchangeMismatchError(BrokerError):
    """The exchange exists on the broker with other properties than ours."""


class DeliveryError(NotificationsError):
    """Base class for a failed delivery; raise a subclass from a delivery."""


class TransientDeliveryError(DeliveryError):
    """A delivery failed but may succeed later: it is retried with backoff."""


class PermanentDeliveryError(DeliveryError):
    """A delivery can never succeed: it is dead-lettered without retrying."""
