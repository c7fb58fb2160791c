"""Talking to the broker: bounded connection attempts and readable errors.

Kombu and py-amqp errors stop here and come out as this package's errors,
with the broker URL masked.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import (
    AccessRefused,
    AMQPError,
    ChannelError,
    NotAllowed,
    PreconditionFailed,
)
from kombu.connection import Connection
from kombu.exceptions import OperationalError

from notifications.errors import (
    BrokerAccessError,
    BrokerError,
    BrokerUnreachableError,
    NotificationsError,
    UnroutableError,
)
from notifications.settings import Settings
from notifications.topology import exchange_mismatch

logger = logging.getLogger(__name__)

#: AMQP reply code of a mandatory message that no queue is bound for.
NO_ROUTE = 312


def unroutable(settings: Settings, detail: str) -> UnroutableError:
    return UnroutableError(
        f"The broker at {settings.masked_broker_url} has no queue for this "
        f"notification ({detail}): the group's queue or its binding to "
        f"{settings.exchange_name!r} is missing. Start the group's worker (it "
        "declares both) and send again."
    )


@contextmanager
def watch_returns(producer: Any, settings: Settings) -> Iterator[None]:
    """Raise :class:`UnroutableError` if the broker returns what was published.

    With ``mandatory`` set, RabbitMQ sends ``basic.return`` before the
    publisher confirm; py-amqp hands it to the channel's ``basic_return``
    handlers, so the confirm is still read and the channel stays in step.
    """
    with watch_channel_returns(getattr(producer, "channel", None), settings):
        yield


@contextmanager
def watch_channel_returns(channel: Any, settings: Settings) -> Iterator[None]:
    """:func:`watch_returns` for what is published on ``channel``."""
    events = getattr(channel, "events", None)
    if not settings.amqp or events is None:
        yield
        return

    returned: list[str] = []

    def on_return(exc: Exception, exchange: str, routing_key: str, message: Any) -> None:
        returned.append(f"routing key {routing_key!r}: {exc}")

    events["basic_return"].add(on_return)
    try:
        yield
    finally:
        events["basic_return"].discard(on_return)
    if returned:
        raise unroutable(settings, returned[0])


@contextmanager
def pooled_connection(pool: Any, settings: Settings) -> Iterator[Any]:
    """A connection of ``pool``, connected, and dropped rather than returned on error.

    The pool's connections remember which queues they declared, as for
    ``.delay()``: a group's queue is declared on the first send only.
    """
    with broker_errors(settings):
        connection = pool.acquire(block=True, timeout=settings.publish_timeout_s)
    try:
        with broker_errors(settings):
            ensure_connected(connection, settings)
        yield connection
    except BaseException:
        # A blocked broker never answers a polite close, so a connection
        # in an unknown state is dropped, not handed to the next sender.
        try:
            connection.collect()
        finally:
            connection.release()
        raise
    connection.release()


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


def _certificate_refused(exc: BaseException | None) -> bool:
    # Kombu wraps the ssl error in its OperationalError: look down the chain,
    # a few links at most, since a chain can loop back on itself.
    for _ in range(10):
        if exc is None:
            return False
        if isinstance(exc, ssl.SSLCertVerificationError):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def unreachable(settings: Settings, exc: BaseException) -> BrokerUnreachableError:
    reason = _reason(settings, exc)
    advice = (
        "Check that the broker's certificate names the host in the URL and "
        "that NOTIFICATIONS_CA_FILE holds its CA if that is a private one."
        if _certificate_refused(exc)
        else "Check that it runs, that CELERY_BROKER_URL / CLOUDAMQP_URL point at it, "
        "and that it is not blocking publishers (memory or disk alarm)."
    )
    return BrokerUnreachableError(
        f"Cannot reach the broker at {settings.masked_broker_url} within "
        f"{settings.publish_timeout_s:g} s ({reason}). {advice}"
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
    except ChannelError as exc:
        if getattr(exc, "reply_code", None) == NO_ROUTE:
            raise unroutable(settings, str(exc)) from exc
        raise BrokerError(
            f"The broker at {settings.masked_broker_url} answered with an error: "
            f"{_reason(settings, exc)}"
        ) from exc
    except (OperationalError, ConnectionError, TimeoutError) as exc:
        raise unreachable(settings, exc) from exc
    except AMQPError as exc:
        raise BrokerError(
            f"The broker at {settings.masked_broker_url} answered with an error: "
            f"{_reason(settings, exc)}"
        ) from exc
