"""Talking to the broker: bounded connection attempts and readable errors.

Kombu and py-amqp errors stop here and come out as this package's errors,
with the broker URL masked.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager

from amqp.exceptions import AccessRefused, AMQPError, NotAllowed, PreconditionFailed
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from notifications.errors import (
    BrokerAccessError,
    BrokerError,
    BrokerUnreachableError,
    NotificationsError,
)
from notifications.settings import Settings
from notifications.topology import exchange_mismatch

logger = logging.getLogger(__name__)


def ensure_connected(connection: Connection, settings: Settings) -> None:
    """Connect ``connection``, retrying for at most ``publish_timeout_s``.

    Raises
    ------
    BrokerUnreachableError
        If the broker did not accept a connection in time.
    """
    if connection.connected:
        return
    try:
        connection.ensure_connection(
            max_retries=None,
            interval_start=0.2,
            interval_step=0.5,
            interval_max=1.0,
            timeout=settings.publish_timeout_s,
        )
    except (AccessRefused, NotAllowed) as exc:
        raise access_refused(settings, exc) from exc
    except (OperationalError, OSError, TimeoutError) as exc:
        raise unreachable(settings, exc) from exc
    logger.debug("Connected to %s.", settings.masked_broker_url)


def _reason(settings: Settings, exc: BaseException) -> str:
    reason = str(exc) or type(exc).__name__
    # A driver error may quote the URL it tried: never let the password out.
    if settings.broker_url:
        reason = reason.replace(settings.broker_url, settings.masked_broker_url)
    return reason


def unreachable(settings: Settings, exc: BaseException) -> BrokerUnreachableError:
    reason = _reason(settings, exc)
    return BrokerUnreachableError(
        f"Cannot reach the broker at {settings.masked_broker_url} within "
        f"{settings.publish_timeout_s:g} s ({reason}). Check that it runs and "
        "that CELERY_BROKER_URL / CLOUDAMQP_URL point at it."
    )


def access_refused(settings: Settings, exc: BaseException) -> BrokerAccessError:
    return BrokerAccessError(
        f"The broker at {settings.masked_broker_url} refused access "
        f"({_reason(settings, exc)}). Check the user, password and vhost in "
        "CELERY_BROKER_URL / CLOUDAMQP_URL."
    )


@contextmanager
def broker_errors(settings: Settings) -> Iterator[None]:
    """Turn Kombu and py-amqp errors raised inside into our own."""
    try:
        yield
    except NotificationsError:
        raise
    except PreconditionFailed as exc:
        raise exchange_mismatch(settings, str(exc)) from exc
    except (AccessRefused, NotAllowed) as exc:
        raise access_refused(settings, exc) from exc
    except (OperationalError, ConnectionError, TimeoutError) as exc:
        raise unreachable(settings, exc) from exc
    except AMQPError as exc:
        raise BrokerError(
            f"The broker at {settings.masked_broker_url} answered with an error: "
            f"{_reason(settings, exc)}"
        ) from exc
