"""Sending many notifications to one group over one connection.

``send_many("hr", texts)`` checks every text before anything is
published, then publishes them as the same Celery task messages
``send_notification.delay()`` would, so workers cannot tell the two apart.

On AMQP the confirms are pipelined: a batch is written without waiting,
then the broker's ``basic.ack`` / ``basic.nack`` (and ``basic.return`` for
what no queue receives) are read for the whole batch at once. Each
``.delay()`` waits for its own confirm before the next can be written; a
batch of ``send_many`` waits once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from amqp.exceptions import ConnectionError as AMQPConnectionError
from celery.utils import uuid

from notifications.application import app
from notifications.broker import broker_errors, ensure_connected, unreachable, unroutable
from notifications.errors import (
    BrokerError,
    BrokerUnreachableError,
    InvalidTextTypeError,
    UnroutableError,
)
from notifications.message import check_group, check_text, check_title
from notifications.routing import SEND_NOTIFICATION
from notifications.settings import Settings, get_settings

logger = logging.getLogger(__name__)

DEFAULT_BATCH_SIZE = 500


class BulkSendError(BrokerError):
    """A bulk send stopped part-way: some notifications may not be on the broker.

    Attributes
    ----------
    notification_ids:
        The id of every notification, in the order of the texts.
    confirmed_ids:
        The ids the broker confirmed into the group's queue.

    The others (:attr:`unconfirmed_ids`) may or may not have reached it.
    Sending one again with its id is safe, since workers deliver an id only
    once: ``send_notification.apply_async((group, text), task_id=id)``.
    """

    def __init__(
        self, message: str, notification_ids: Sequence[str], confirmed_ids: Iterable[str]
    ) -> None:
        super().__init__(message)
        self.notification_ids = list(notification_ids)
        confirmed = set(confirmed_ids)
        self.confirmed_ids = [i for i in self.notification_ids if i in confirmed]

    @property
    def unconfirmed_ids(self) -> list[str]:
        confirmed = set(self.confirmed_ids)
        return [i for i in self.notification_ids if i not in confirmed]


class BulkUnroutableError(BulkSendError, UnroutableError):
    """The broker returned notifications of a bulk send that no queue receives."""


class BulkUnreachableError(BulkSendError, BrokerUnreachableError):
    """The broker went away, or did not confirm a batch in time."""


class BulkRefusedError(BulkSendError):
    """The broker refused (``basic.nack``) notifications of a bulk send."""


def send_many(
    group: str,
    texts: Iterable[str],
    *,
    title: str | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> list[str]:
    """Send one notification per text to ``group``; return their ids in order.

    Every text is checked as ``.delay()`` checks it before anything is
    published, so bad input publishes nothing. On AMQP the messages are
    published ``mandatory`` and persistent, and each batch of
    ``batch_size`` waits for its publisher confirms, at most
    ``NOTIFICATIONS_PUBLISH_TIMEOUT_S`` after its last message was written.
    A batch that fails stops the send: later batches are not published.

    Parameters
    ----------
    group:
        A configured group.
    texts:
        The notification texts, each checked like ``.delay()``'s.
    title:
        One title for every notification, or ``None``.
    batch_size:
        Notifications written before waiting for their confirms.

    Returns
    -------
    list[str]
        The notification ids, one per text, in the order of the texts.

    Raises
    ------
    UnknownGroupError, InvalidTextError, InvalidTextTypeError
        Before anything is published; a text's error names its index.
    ValueError
        If ``batch_size`` is not a positive integer.
    BulkUnroutableError, BulkUnreachableError, BulkRefusedError
        If the broker returned, refused or did not confirm notifications of
        a batch; the error holds the confirmed and unconfirmed ids.
    BrokerError
        If the broker could not be reached or refused access before
        anything was published.
    """
    settings = get_settings()
    check_group(settings, group)
    check_title(title)
    if isinstance(texts, (str, bytes)):
        # A lone str is an iterable of characters: one notification per letter.
        raise InvalidTextTypeError(
            "send_many() takes an iterable of texts, not a single "
            f"{type(texts).__name__}."
        )
    checked = [_check_text_at(settings, index, text) for index, text in enumerate(texts)]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, not {batch_size!r}.")

    ids = [uuid() for _ in checked]
    if not checked:
        return ids
    if app.conf.task_always_eager:
        from notifications.tasks import send_notification

        for notification_id, text in zip(ids, checked, strict=True):
            send_notification.apply_async(
                (group, text), _title_kwargs(title), task_id=notification_id
            )
        return ids

    with _pooled_connection(settings) as connection:
        if settings.amqp:
            _send_confirmed(connection, settings, group, title, ids, checked, batch_size)
        else:
            # No confirms here: a publish that returned is on disk (the
            # embedded broker) or with the broker.
            with broker_errors(settings):
                producer = app.amqp.Producer(connection, auto_declare=False)
                publisher = _Publisher(settings, group, title, producer)
                for notification_id, text in zip(ids, checked, strict=True):
                    publisher.publish(notification_id, text)
    logger.debug("Sent %d notifications for group %r.", len(ids), group)
    return ids


def _check_text_at(settings: Settings, index: int, text: object) -> str:
    try:
        return check_text(settings, text)
    except (TypeError, ValueError) as exc:
        # Same type as .delay() raises, with the position the caller needs.
        raise type(exc)(f"Text at index {index}: {exc}") from None


def _title_kwargs(title: str | None) -> dict[str, str]:
    # .delay("hr", text) sends no kwargs at all; keep the bodies identical.
    return {"title": title} if title else {}


@contextmanager
def _pooled_connection(settings: Settings) -> Iterator[Any]:
    """A connection of the app's pool, dropped rather than returned on error.

    The pool's connections remember which queues they declared, as for
    ``.delay()``: a group's queue is declared on the first send only.
    """
    with broker_errors(settings):
        connection = app.pool.acquire(block=True, timeout=settings.publish_timeout_s)
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


class _Publisher:
    """Builds and publishes ``send_notification`` messages as Celery does."""

    def __init__(
        self, settings: Settings, group: str, title: str | None, producer: Any
    ) -> None:
        from notifications.tasks import send_notification

        self.producer = producer
        self.group = group
        self.kwargs = _title_kwargs(title)
        self.ignore_result = send_notification.ignore_result
        # The router the app uses for .delay(): the group's queue and the
        # direct exchange with routing key = group.
        self.route = app.amqp.router.route(
            {}, SEND_NOTIFICATION, (group,), self.kwargs, send_notification
        )
        self.options: dict[str, Any] = {}
        if settings.amqp:
            self.options = {"mandatory": True, "timeout": settings.publish_timeout_s}
        # Sent from inside a task, the notifications belong to its tree, as
        # with .delay().
        parent = app.current_worker_task
        self.parent_id = parent.request.id if parent else None
        self.root_id = (parent.request.root_id or parent.request.id) if parent else None
        # Declared once here rather than checked before every message; the
        # connection remembers it, so this costs a round trip on its first
        # send only, as with .delay().
        producer.maybe_declare(self.route["queue"])

    def publish(self, notification_id: str, text: str) -> None:
        message = app.amqp.create_task_message(
            notification_id,
            SEND_NOTIFICATION,
            (self.group, text),
            self.kwargs,
            reply_to=app.thread_oid,
            create_sent_event=app.conf.task_send_sent_event,
            root_id=self.root_id,
            parent_id=self.parent_id,
            ignore_result=self.ignore_result,
        )
        # retry=False: a retried write could duplicate a message the broker
        # already has; a failure ends the send with the ids it confirmed.
        app.amqp.send_task_message(
            self.producer,
            SEND_NOTIFICATION,
            message,
            retry=False,
            declare=[],
            **self.options,
            **self.route,
        )


class _Confirms:
    """What the broker said about each publish on one confirm-mode channel.

    In confirm mode the broker numbers the channel's publishes 1, 2, 3…
    (the delivery tags) and acknowledges each, or several at once
    (``multiple``). A ``mandatory`` message no queue takes comes back as
    ``basic.return`` before its ack.
    """

    def __init__(self, channel: Any) -> None:
        self.channel = channel
        self.last_tag = 0
        #: Delivery tag -> notification id; None for a task-sent event.
        self.unsettled: dict[int, str | None] = {}
        self.confirmed: set[str] = set()
        self.nacked: list[str] = []
        self.returned: set[str] = set()
        self.return_reason = ""

        channel.confirm_select()
        channel._confirm_selected = True
        # Publish without waiting: py-amqp's confirm-mode publish reads the
        # ack of each message before the next, one round trip apiece.
        channel.basic_publish = self._publish
        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    def _publish(self, message: Any, *args: Any, **kwargs: Any) -> Any:
        kwargs.pop("confirm_timeout", None)
        result = self.channel._basic_publish(message, *args, **kwargs)
        self.last_tag += 1
        self.unsettled[self.last_tag] = message.properties.get("correlation_id")
        return result

    def _settle(self, delivery_tag: int, multiple: bool) -> list[str | None]:
        if not multiple:
            return [self.unsettled.pop(delivery_tag, None)]
        # Tags were added in increasing order, so the settled ones lead.
        settled = []
        for tag in list(self.unsettled):
            if delivery_tag and tag > delivery_tag:
                break
            settled.append(self.unsettled.pop(tag))
        return settled

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self.confirmed.update(
            i
            for i in self._settle(delivery_tag, multiple)
            if i and i not in self.returned
        )

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self.nacked.extend(i for i in self._settle(delivery_tag, multiple) if i)

    def _on_return(
        self, exc: Exception, exchange: str, routing_key: str, message: Any
    ) -> None:
        notification_id = message.properties.get("correlation_id")
        if notification_id:
            self.returned.add(notification_id)
        self.return_reason = f"routing key {routing_key!r}: {exc}"

    def wait(self, connection: Any, timeout_s: float) -> None:
        """Read the broker's answers until every publish is settled.

        Raises
        ------
        TimeoutError
            If some are still unsettled after ``timeout_s``.
        """
        deadline = time.monotonic() + timeout_s
        while self.unsettled:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(
                    f"{len(self.unsettled)} publishes unconfirmed after {timeout_s:g} s"
                )
            connection.drain_events(timeout=remaining)


def _send_confirmed(
    connection: Any,
    settings: Settings,
    group: str,
    title: str | None,
    ids: list[str],
    texts: list[str],
    batch_size: int,
) -> None:
    """Publish on a fresh channel in confirm mode, one batch at a time."""
    with broker_errors(settings):
        # A channel of our own: its delivery tags start at 1 here, which a
        # pooled channel that already published could not promise.
        channel = connection.channel()
        confirms = _Confirms(channel)
        producer = app.amqp.Producer(channel, auto_declare=False)
        publisher = _Publisher(settings, group, title, producer)

    for start in range(0, len(ids), batch_size):
        batch = range(start, min(start + batch_size, len(ids)))
        try:
            with broker_errors(settings):
                try:
                    for index in batch:
                        publisher.publish(ids[index], texts[index])
                    confirms.wait(connection, settings.publish_timeout_s)
                except (AMQPConnectionError, TimeoutError) as exc:
                    # py-amqp's connection errors are not the builtin one.
                    raise unreachable(settings, exc) from exc
        except BrokerError as exc:
            raise _stopped(exc, settings, ids, confirms, batch) from exc

        if confirms.returned or confirms.nacked:
            raise _stopped(None, settings, ids, confirms, batch)

    with broker_errors(settings):
        channel.close()


def _stopped(
    exc: BrokerError | None,
    settings: Settings,
    ids: list[str],
    confirms: _Confirms,
    batch: range,
) -> BulkSendError:
    """The error that ends a bulk send, saying how far it got."""
    in_batch = sum(1 for i in batch if ids[i] in confirms.confirmed)
    progress = (
        f"{in_batch} of the {len(batch)} notifications of the batch starting at "
        f"index {batch.start} were confirmed, {len(confirms.confirmed)} of "
        f"{len(ids)} in all; nothing after that batch was published."
    )
    if confirms.returned:
        detail = f"{len(confirms.returned)} came back, {confirms.return_reason}"
        reason = str(unroutable(settings, detail))
        return BulkUnroutableError(f"{reason} {progress}", ids, confirms.confirmed)
    if confirms.nacked:
        return BulkRefusedError(
            f"The broker at {settings.masked_broker_url} refused "
            f"{len(confirms.nacked)} notifications (basic.nack). {progress}",
            ids,
            confirms.confirmed,
        )
    kind = (
        BulkUnreachableError if isinstance(exc, BrokerUnreachableError) else BulkSendError
    )
    return kind(f"{exc} {progress}", ids, confirms.confirmed)


__all__ = [
    "BulkRefusedError",
    "BulkSendError",
    "BulkUnreachableError",
    "BulkUnroutableError",
    "send_many",
]
