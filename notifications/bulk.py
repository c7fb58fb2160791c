"""Sending many notifications to one group over one connection.

``send_many("hr", texts)`` checks every text before anything is
published, then publishes them as the same Celery task messages
``send_notification.delay()`` writes, so workers cannot tell the two apart.

On AMQP each ``.delay()`` waits for its own publisher confirm before the
next can be written. ``send_many`` keeps writing while up to ``batch_size``
notifications await theirs (:mod:`notifications.confirms`), and renders
each message from one template instead of having Celery, Kombu and py-amqp
build it from scratch (:mod:`notifications.frames`).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from typing import Any

from amqp.exceptions import ConnectionError as AMQPConnectionError
from celery.utils import uuid

from notifications.application import app
from notifications.broker import (
    broker_errors,
    pooled_connection,
    unreachable,
    unroutable,
)
from notifications.confirms import ConfirmWindow
from notifications.errors import (
    BrokerError,
    BrokerUnreachableError,
    InvalidTextTypeError,
    UnroutableError,
)
from notifications.frames import TaskFrames
from notifications.message import check_group, check_text, check_title
from notifications.routing import SEND_NOTIFICATION
from notifications.settings import Settings, get_settings

logger = logging.getLogger(__name__)

#: Enough in flight to keep the broker busy while its confirms, which
#: follow its disk writes, come back; larger windows measured no faster.
DEFAULT_BATCH_SIZE = 2000


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
    published ``mandatory`` and persistent, and each one is confirmed by
    the broker: ``send_many`` returns once every confirm arrived. It does
    not wait for each confirm before writing the next message, but keeps
    up to ``batch_size`` notifications awaiting theirs. If the broker
    refuses or returns one, nothing more is written; the answers for what
    was written are awaited, then the error raised. A wait for a confirm,
    or a write the broker does not take, lasts at most
    ``NOTIFICATIONS_PUBLISH_TIMEOUT_S``.

    The messages are those ``.delay()`` sends, byte for byte but for the
    ids, except that on AMQP Celery's ``before_task_publish`` and
    ``after_task_publish`` signals are not sent for them, nor ``task-sent``
    events (``task_send_sent_event``, off in this project's settings).
    On the embedded broker they are sent through Celery, signals included.

    Parameters
    ----------
    group:
        A configured group.
    texts:
        The notification texts, each checked like ``.delay()``'s.
    title:
        One title for every notification, or ``None``.
    batch_size:
        The most notifications awaiting their confirm at any time.

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
        If the broker returned, refused or did not confirm notifications;
        the error holds the confirmed and unconfirmed ids.
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

    with pooled_connection(app.pool, settings) as connection:
        if settings.amqp:
            _send_confirmed(connection, settings, group, title, ids, checked, batch_size)
        else:
            # No confirms here: a publish that returned is on disk.
            with broker_errors(settings):
                producer = app.amqp.Producer(connection, auto_declare=False)
                publisher = _Publisher(group, title, producer)
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


class _Publisher:
    """Builds and publishes ``send_notification`` messages as Celery does."""

    def __init__(self, group: str, title: str | None, producer: Any) -> None:
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
        # retry=False: a retried write could duplicate a message the
        # broker already has.
        app.amqp.send_task_message(
            self.producer,
            SEND_NOTIFICATION,
            message,
            retry=False,
            declare=[],
            **self.route,
        )


def _send_confirmed(
    connection: Any,
    settings: Settings,
    group: str,
    title: str | None,
    ids: list[str],
    texts: list[str],
    window_size: int,
) -> None:
    """Publish on a channel of our own in confirm mode, confirms pipelined."""
    from notifications.tasks import send_notification

    with broker_errors(settings):
        # A new channel: its delivery tags start at 1, which a pooled
        # channel that already published could not promise.
        channel = connection.channel()
        channel.confirm_select()
        frames = TaskFrames(
            app,
            send_notification,
            group,
            title,
            channel_id=channel.channel_id,
            frame_max=channel.connection.frame_max,
            mandatory=True,
        )
        # Declared once per connection, which remembers it, as for .delay().
        app.amqp.Producer(channel, auto_declare=False).maybe_declare(frames.queue)
    window = ConfirmWindow(channel, ids, window_size, settings.publish_timeout_s)

    try:
        with broker_errors(settings):
            try:
                for notification_id, text in zip(ids, texts, strict=True):
                    if window.failed:
                        break
                    window.publish(frames.render(notification_id, text))
                window.finish()
            except (AMQPConnectionError, OSError) as exc:
                # py-amqp's connection errors are not the builtin one; a
                # socket timeout is an OSError.
                raise unreachable(settings, exc) from exc
    except BrokerError as exc:
        raise _stopped(exc, settings, ids, window) from exc

    if window.failed:
        raise _stopped(None, settings, ids, window)
    with broker_errors(settings):
        channel.close()


def _stopped(
    exc: BrokerError | None,
    settings: Settings,
    ids: list[str],
    window: ConfirmWindow,
) -> BulkSendError:
    """The error that ends a bulk send, saying how far it got."""
    confirmed = window.confirmed_ids()
    progress = f"{len(confirmed)} of the {len(ids)} notifications were confirmed"
    if window.published < len(ids):
        progress += f"; those from index {window.published} on were not published."
    else:
        progress += "."
    if window.returned:
        detail = f"{len(window.returned)} came back, {window.return_reason}"
        reason = str(unroutable(settings, detail))
        return BulkUnroutableError(f"{reason} {progress}", ids, confirmed)
    if window.refused:
        return BulkRefusedError(
            f"The broker at {settings.masked_broker_url} refused "
            f"{window.refused} notifications (basic.nack). {progress}",
            ids,
            confirmed,
        )
    kind = (
        BulkUnreachableError if isinstance(exc, BrokerUnreachableError) else BulkSendError
    )
    return kind(f"{exc} {progress}", ids, confirmed)


__all__ = [
    "BulkRefusedError",
    "BulkSendError",
    "BulkUnreachableError",
    "BulkUnroutableError",
    "send_many",
]
