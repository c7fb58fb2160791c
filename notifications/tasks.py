"""The ``send_notification`` task: checked when sent, delivered once by a worker.

At the sender, a notification is validated before anything is published,
published with publisher confirms and the ``mandatory`` flag on AMQP, and
any broker problem raises within the publish timeout.

At the worker, a notification is

1. checked again (another producer may not be this code), else dead-lettered;
2. skipped if the store of delivered ids already has its id;
3. dead-lettered if it came back too often after its worker died;
4. delivered; a transient failure is retried with exponential backoff and
   jitter up to ``max_retries``, then dead-lettered; a permanent failure is
   dead-lettered at once.

Once delivered, the id is written to the store of delivered ids
(:mod:`notifications.store`). A crash after delivering and before that
record is written delivers the notification again: that window is one
store write.
"""

from __future__ import annotations

import contextlib
import inspect
import logging
import random
from collections.abc import Collection
from typing import Any

from amqp import spec
from amqp.exceptions import ConnectionError as AMQPConnectionError
from amqp.exceptions import MessageNacked
from celery import Task, signals
from celery.result import AsyncResult
from celery.utils import uuid
from kombu.common import maybe_declare

from notifications import dead_letter
from notifications import store as records
from notifications.application import app
from notifications.broker import (
    broker_errors,
    ensure_connected,
    pooled_connection,
    unreachable,
    watch_channel_returns,
    watch_returns,
)
from notifications.delivery import deliver, log_outcome
from notifications.errors import (
    BrokerUnreachableError,
    NotificationsError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from notifications.frames import TaskFrames
from notifications.message import Notification, check_group, check_text, check_title
from notifications.routing import SEND_NOTIFICATION
from notifications.settings import UNROUTED, Settings, get_settings
from notifications.store import Store, StoreError, get_store, redelivery_key, target_key
from notifications.subscribers import Subscribers, Target, classify

logger = logging.getLogger(__name__)

#: How often a publish is retried after the connection dropped mid-way.
#: Each retry reconnects, which ``broker_connection_timeout`` bounds.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0.2,
    "interval_step": 0.4,
    "interval_max": 1.0,
}

#: The options apply_async sets itself on AMQP. A call with any other
#: option (countdown, priority, headers, link…) goes through Celery.
OWN_OPTIONS = frozenset({"retry_policy", "mandatory", "timeout", "confirm_timeout"})

#: Templates kept per process: one per (channel, group, title, thread).
#: Titles are the caller's, so the cache is emptied rather than let grow.
MAX_CACHED_FRAMES = 256

#: What the task returns, as Flower shows it. A short string: the tracer
#: formats every return value with saferepr, which takes three times as
#: long for a one-key dict (about 5 µs more per notification).
DELIVERED = records.DELIVERED
DEAD_LETTERED = records.DEAD_LETTERED


class NotificationTask(Task):  # type: ignore[misc]
    """Checks a notification before anything is published.

    A bad group or text raises in the caller; a broker problem raises a
    :class:`~notifications.errors.BrokerError` within the publish timeout.
    """

    def apply_async(
        self,
        args: Any = None,
        kwargs: Any = None,
        task_id: str | None = None,
        producer: Any = None,
        **options: Any,
    ) -> AsyncResult:
        """Check the notification, then publish it; see :class:`celery.Task`.

        On AMQP a plain call (``.delay(group, text)``, a ``title``
        keyword, a ``task_id``, no ``producer`` and no other option),
        made outside a running task, is written to the broker directly
        from a template of the message (:class:`~notifications.frames.TaskFrames`)
        and its publisher confirm awaited: the message is the one Celery
        would send, without most of the Python work of building it.
        That path is taken only while no receiver is connected to
        Celery's ``before_task_publish`` or ``after_task_publish``
        signals, which it does not send, and while ``task-sent`` events
        are off. Every other call goes through Celery's ``send_task``.

        Raises
        ------
        UnknownGroupError, InvalidTextError, TypeError
            Before anything is published.
        UnroutableError
            On AMQP, if no queue receives the notification.
        BrokerError
            If the broker could not be reached, refused the notification
            or did not confirm it within ``NOTIFICATIONS_PUBLISH_TIMEOUT_S``.
        """
        settings = get_settings()
        group, text, title = self._bind(args, kwargs)
        checked_group = check_group(settings, group)
        checked_text = check_text(settings, text)
        checked_title = check_title(title)

        if self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id=task_id, **options)

        if (
            settings.amqp
            and producer is None
            and options.keys() <= OWN_OPTIONS
            and _plain_arguments(args, kwargs)
            and self._nobody_else_involved()
        ):
            notification_id = task_id or uuid()
            self._publish_directly(
                settings, checked_group, checked_text, checked_title, notification_id
            )
            result = self.AsyncResult(notification_id)
            result.ignored = True
            return result

        options.setdefault("retry_policy", PUBLISH_RETRY_POLICY)
        if settings.amqp:
            # A notification no queue receives comes back (basic.return)
            # instead of vanishing; the confirm then fails after a timeout
            # rather than hanging while the broker blocks publishers.
            options.setdefault("mandatory", True)
            options.setdefault("timeout", settings.publish_timeout_s)
            options.setdefault("confirm_timeout", settings.publish_timeout_s)
        with broker_errors(settings), self.app.producer_or_acquire(producer) as prod:
            try:
                ensure_connected(prod.connection, settings)
                with watch_returns(prod, settings):
                    return super().apply_async(
                        args, kwargs, task_id=task_id, producer=prod, **options
                    )
            except BaseException:
                # A blocked broker never answers a polite channel close, so
                # returning this connection to the pool would hang: drop it.
                with contextlib.suppress(Exception):
                    prod.connection.collect()
                raise

    def _nobody_else_involved(self) -> bool:
        """Whether skipping Celery's send_task changes nothing anyone sees."""
        app = self.app
        return (
            self.ignore_result
            # From inside a task, Celery links the message to its parent.
            and app.current_worker_task is None
            and not signals.before_task_publish.receivers
            and not signals.after_task_publish.receivers
            and not app.conf.task_send_sent_event
        )

    def _publish_directly(
        self,
        settings: Settings,
        group: str,
        text: str,
        title: str | None,
        notification_id: str,
    ) -> None:
        """Write the message of one notification and wait for its confirm.

        A pooled connection that the broker closed (a restart, say) looks
        alive until it is written to: then the notification is written
        once more on a new connection. Had the first write reached the
        broker after all, workers still deliver that id once.
        """
        for attempt in (1, 2):
            try:
                self._write_and_confirm(settings, group, text, title, notification_id)
                return
            except BrokerUnreachableError as exc:
                lost = exc.__cause__
                if (
                    attempt == 2
                    or isinstance(lost, TimeoutError)
                    or not isinstance(lost, (AMQPConnectionError, ConnectionError))
                ):
                    raise
                logger.debug("Connection lost while sending (%s); sending again.", lost)

    def _write_and_confirm(
        self,
        settings: Settings,
        group: str,
        text: str,
        title: str | None,
        notification_id: str,
    ) -> None:
        timeout_s = settings.publish_timeout_s
        with (
            pooled_connection(self.app.pool, settings) as connection,
            broker_errors(settings),
        ):
            channel = connection.default_channel
            frames = self._frames(channel, group, title)
            # Declared once per connection, which remembers it in Kombu's
            # own cache: the same one .delay() through Celery consults.
            if hash(frames.queue) not in connection.declared_entities:
                maybe_declare(frames.queue, channel)
            try:
                with watch_channel_returns(channel, settings):
                    _publish_confirmed(
                        channel, frames.render(notification_id, text), timeout_s
                    )
            except NotificationsError:
                raise
            except (AMQPConnectionError, OSError, MessageNacked) as exc:
                # py-amqp's connection errors are not the builtin one; a
                # socket timeout is an OSError. A nack comes out as the
                # same error as through Celery.
                raise unreachable(settings, exc) from exc

    def _frames(self, channel: Any, group: str, title: str | None) -> TaskFrames:
        """The template for ``group`` and ``title`` on ``channel``, made once."""
        cache: dict[tuple[object, ...], TaskFrames] = self.__dict__.setdefault(
            "_frames_cache", {}
        )
        frame_max = channel.connection.frame_max
        # reply_to is the sending thread's id: one template per thread.
        key = (channel.channel_id, frame_max, group, title, self.app.thread_oid)
        frames = cache.get(key)
        if frames is None:
            if len(cache) >= MAX_CACHED_FRAMES:
                cache.clear()
            frames = cache[key] = TaskFrames(
                self.app,
                self,
                group,
                title,
                channel_id=channel.channel_id,
                frame_max=frame_max,
                mandatory=True,
            )
        return frames

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        # A producer elsewhere may send too few or too many arguments; that
        # would fail the task and the message would be acknowledged and
        # lost, so it becomes a dead letter instead.
        try:
            self._bind(args, kwargs)
        except TypeError as exc:
            return send_dead_letter(
                self,
                dead_letter.DeadLetter(
                    reason="invalid_notification",
                    error=str(exc),
                    group=UNROUTED,
                    notification_id=self.request.id,
                    body=repr({"args": args, "kwargs": kwargs})[:10_000],
                ),
                queue_group=arrived_for(self),
            )
        return super().__call__(*args, **kwargs)

    def _bind(self, args: Any, kwargs: Any) -> tuple[object, object, object]:
        if not kwargs and isinstance(args, (tuple, list)) and len(args) == 2:
            # .delay(group, text): nothing to bind.
            return args[0], args[1], None
        signature = self.__dict__.get("_signature")
        if signature is None:
            # Computed once: inspect.signature costs more than the checks.
            signature = self.__dict__["_signature"] = inspect.signature(self.run)
        try:
            bound = signature.bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(
                f"send_notification(group, text, title=None) called wrongly: {exc}."
            ) from None
        arguments = bound.arguments
        return arguments["group"], arguments["text"], arguments.get("title")


def _plain_arguments(args: Any, kwargs: Any) -> bool:
    """Whether the call is ``(group, text)`` plus at most a non-empty ``title``.

    Those are the arguments a template renders; ``title=None`` or
    arguments passed by keyword make another message body.
    """
    if not isinstance(args, (tuple, list)) or len(args) != 2:
        return False
    if not kwargs:
        return True
    return len(kwargs) == 1 and bool(kwargs.get("title"))


def _raise_on_nack(method: Any, *args: Any) -> None:
    if method == spec.Basic.Nack:
        raise MessageNacked()


def _publish_confirmed(channel: Any, frames: bytes, timeout_s: float) -> None:
    """Write ``frames`` on ``channel`` and wait for the broker's confirm.

    Raises
    ------
    MessageNacked
        If the broker refused the message.
    TimeoutError
        If the broker did not take the bytes, or confirm, within ``timeout_s``.
    """
    if not channel._confirm_selected:
        channel._confirm_selected = True
        channel.confirm_select()
    transport = channel.connection.transport
    # A broker that blocks publishers (memory or disk alarm) stops
    # reading: without a timeout the write would wait for ever. One
    # timeout on the socket for the write and the wait, not one each.
    with transport.having_timeout(timeout_s):
        transport.write(frames)
        channel.wait(
            [spec.Basic.Ack, spec.Basic.Nack], callback=_raise_on_nack, timeout=timeout_s
        )


def check_received(
    request: Any,
    group: object,
    text: object,
    consumed_queues: Collection[str] | None = None,
    title: object = None,
) -> Notification:
    """Check a notification as the worker receives it.

    Another producer may not be this code, so the worker trusts nothing:
    the group must be configured, the text valid, the message must have
    come in under its own group's routing key, and from a queue this worker
    consumes (``consumed_queues``; ``None`` when not known).

    Raises
    ------
    NotificationsError, TypeError, ValueError
        Saying what is wrong with the notification.
    """
    settings = get_settings()
    checked_group = check_group(settings, group)
    checked_text = check_text(settings, text)
    checked_title = check_title(title)
    routing_key = (request.delivery_info or {}).get("routing_key")
    if routing_key and routing_key != checked_group:
        raise NotificationsError(
            f"It is for group {checked_group!r} but arrived with routing key "
            f"{routing_key!r}."
        )
    queue = settings.queue_name(checked_group)
    if consumed_queues is not None and queue not in consumed_queues:
        # A stray binding on the broker routed it here: delivering it
        # would notify the wrong people.
        raise NotificationsError(
            f"It is for group {checked_group!r} but reached a worker that "
            f"consumes only {', '.join(sorted(consumed_queues))}."
        )
    return Notification(str(request.id), checked_group, checked_text, checked_title)


def consumed_queues(task: Task) -> Collection[str] | None:
    """Names of the queues this worker consumes, if it was told (``-Q``)."""
    selected = task.app.amqp.queues.consume_from
    # Called for every notification: the names, without copying them.
    return selected.keys() if selected else None


def backoff_s(settings: Settings, retries: int) -> float:
    """Wait before retry number ``retries + 1``: doubling, capped, half jittered.

    The jitter spreads retries of many notifications that failed together
    (a target that was down) so they do not all hit it again at once.
    """
    cap = min(settings.retry_backoff_max_s, settings.retry_backoff_s * 2**retries)
    return cap / 2 + random.uniform(0, cap / 2)  # noqa: S311 (not cryptographic)


def record(store: Store, key: str, value: str, notification: Notification) -> None:
    """Write down what became of ``notification`` (or of one of its targets).

    It has happened: a store that fails now is logged, not retried, since a
    retry would deliver it again. Only a redelivery of it could then be a
    duplicate.
    """
    try:
        store.put(key, value)
    except StoreError as exc:
        logger.error(
            "%s Notification %s was %s but not recorded; a redelivery of it "
            "would repeat that.",
            exc,
            notification.notification_id,
            value,
        )


def send_dead_letter(
    task: Task, letter: dead_letter.DeadLetter, queue_group: str | None = None
) -> str:
    dead_letter.send(task.app, get_settings(), letter, queue_group)
    return DEAD_LETTERED


def arrived_for(task: Task) -> str | None:
    """The group whose queue this message came from, by its routing key."""
    return (task.request.delivery_info or {}).get("routing_key")


@app.task(
    base=NotificationTask,
    bind=True,
    name=SEND_NOTIFICATION,
    acks_late=True,
    # A pool child that dies mid-delivery puts the notification back.
    reject_on_worker_lost=True,
    # Nobody waits on a notification's result; the store of delivered ids
    # keeps what a worker needs to know.
    ignore_result=True,
)
def send_notification(
    self: NotificationTask, group: str, text: str, title: str | None = None
) -> str:
    """Deliver ``text`` (and ``title``, if any) to the subscribers of ``group``."""
    settings = get_settings()
    try:
        notification = check_received(
            self.request, group, text, consumed_queues(self), title
        )
    except (NotificationsError, TypeError, ValueError) as exc:
        return send_dead_letter(
            self,
            dead_letter.DeadLetter(
                reason="invalid_notification",
                error=str(exc),
                group=group if isinstance(group, str) else UNROUTED,
                notification_id=self.request.id,
                text=text if isinstance(text, str) else None,
                body=None if isinstance(text, str) else repr(text),
            ),
            queue_group=arrived_for(self),
        )

    attempts = self.request.retries + 1
    store = get_store(settings)
    try:
        if store.get(notification.notification_id) == records.DELIVERED:
            log_outcome("skipped, already delivered", notification)
            return DELIVERED

        if (self.request.delivery_info or {}).get("redelivered"):
            count = store.increment(redelivery_key(notification.notification_id))
            if count > settings.max_redeliveries:
                return send_dead_letter(
                    self,
                    _letter(
                        notification, "worker_lost", f"redelivered {count} times", count
                    ),
                )

        targets = subscribers_of(settings, notification.group)
        if targets:
            delivered = deliver_to_targets(self, store, notification, targets, attempts)
            if not delivered:
                # Every subscriber refused it; each has its dead letter.
                return DEAD_LETTERED
        else:
            deliver(notification)
    except PermanentDeliveryError as exc:
        return send_dead_letter(
            self, _letter(notification, "delivery_refused", exc, attempts)
        )
    except Exception as exc:
        # A transient delivery failure, or a store that could not say
        # whether it was delivered already: try again later.
        if self.request.retries >= settings.max_retries:
            return send_dead_letter(
                self, _letter(notification, "retries_exhausted", exc, attempts)
            )
        countdown = backoff_s(settings, self.request.retries)
        log_outcome(
            f"retried in {countdown:.1f} s after attempt {attempts} ({exc})",
            notification,
            logging.WARNING,
        )
        raise self.retry(exc=exc, countdown=countdown, max_retries=None) from exc

    record(store, notification.notification_id, records.DELIVERED, notification)
    log_outcome("delivered", notification)
    return DELIVERED


def _letter(
    notification: Notification,
    reason: str,
    error: object,
    attempts: int,
    target: Target | None = None,
) -> dead_letter.DeadLetter:
    return dead_letter.DeadLetter(
        reason=reason,
        error=str(error) or type(error).__name__,
        group=notification.group,
        notification_id=notification.notification_id,
        text=notification.text,
        title=notification.title,
        attempts=attempts,
        target=target.masked_url if target else None,
        target_id=target.target_id if target else None,
    )


_subscribers: Subscribers | None = None


def subscribers_of(settings: Settings, group: str) -> list[Target]:
    """The Apprise targets of ``group``; none without a subscribers file.

    A delivery named by ``NOTIFICATIONS_DELIVERY`` takes precedence.
    """
    subscribers = loaded_subscribers(settings)
    return subscribers.for_group(group) if subscribers else []


def loaded_subscribers(settings: Settings) -> Subscribers | None:
    """The subscribers of this process, loaded once; ``None`` when not used."""
    global _subscribers
    if settings.delivery is not None or settings.subscribers_file is None:
        return None
    if _subscribers is None:
        _subscribers = Subscribers.load(settings.subscribers_file, settings.groups)
    return _subscribers


def deliver_to_targets(
    task: Task,
    store: Store,
    notification: Notification,
    targets: list[Target],
    attempts: int,
) -> int:
    """Send to every target that does not have the notification yet.

    Returns the number of targets that have it, now or from an earlier
    attempt.

    Raises
    ------
    TransientDeliveryError
        If a target failed transiently; the retry skips the targets that
        already got the notification.
    """
    transient: list[str] = []
    have_it = 0
    for target in targets:
        key = target_key(notification.notification_id, target.target_id)
        recorded = store.get(key)
        if recorded is not None:
            # Delivered, or dead-lettered, on an earlier attempt.
            have_it += recorded == records.DELIVERED
            continue

        delivered, report = target.send(notification)
        if delivered:
            record(store, key, records.DELIVERED, notification)
            log_outcome(f"delivered to {target.masked_url}", notification)
            have_it += 1
            continue

        error = f"{target.masked_url}: {report or 'failed'}"
        if target.broken is not None or classify(report) is PermanentDeliveryError:
            reason = "bad_subscriber" if target.broken else "delivery_refused"
            send_dead_letter(task, _letter(notification, reason, error, attempts, target))
            record(store, key, records.DEAD_LETTERED, notification)
        else:
            log_outcome(
                f"failed for {target.masked_url} ({report or 'failed'})",
                notification,
                logging.WARNING,
            )
            transient.append(error)
    if transient:
        raise TransientDeliveryError("; ".join(transient))
    return have_it


__all__ = ["NotificationTask", "log_outcome", "send_notification"]
