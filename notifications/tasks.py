"""The ``send_notification`` task: checked and routed when sent, delivered by a worker."""

from __future__ import annotations

import inspect
import logging
from collections.abc import Collection
from typing import Any

from celery import Task
from celery.exceptions import Reject
from celery.result import AsyncResult

from notifications.application import app
from notifications.broker import broker_errors, ensure_connected
from notifications.delivery import deliver, log_outcome
from notifications.errors import NotificationsError
from notifications.message import Notification, check_group, check_text
from notifications.routing import SEND_NOTIFICATION
from notifications.settings import get_settings

logger = logging.getLogger(__name__)

#: How often a publish is retried after the connection dropped mid-way.
#: Each retry reconnects, which ``broker_connection_timeout`` bounds.
PUBLISH_RETRY_POLICY = {
    "max_retries": 2,
    "interval_start": 0.2,
    "interval_step": 0.4,
    "interval_max": 1.0,
}


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
        settings = get_settings()
        group, text = self._bind(args, kwargs)
        check_group(settings, group)
        check_text(settings, text)

        if self.app.conf.task_always_eager:
            return super().apply_async(args, kwargs, task_id=task_id, **options)

        options.setdefault("retry_policy", PUBLISH_RETRY_POLICY)
        with broker_errors(settings), self.app.producer_or_acquire(producer) as prod:
            ensure_connected(prod.connection, settings)
            return super().apply_async(
                args, kwargs, task_id=task_id, producer=prod, **options
            )

    def _bind(self, args: Any, kwargs: Any) -> tuple[object, object]:
        try:
            bound = inspect.signature(self.run).bind(*(args or ()), **(kwargs or {}))
        except TypeError as exc:
            raise TypeError(
                f"send_notification(group, text) called wrongly: {exc}."
            ) from None
        return bound.arguments["group"], bound.arguments["text"]


def received(
    request: Any,
    group: object,
    text: object,
    consumed_queues: Collection[str] | None = None,
) -> Notification:
    """Check a notification as the worker receives it.

    Another producer may not be this code, so the worker trusts nothing:
    the group must be configured, the text valid, the message must have
    come in under its own group's routing key, and from a queue this worker
    consumes (``consumed_queues``; ``None`` when not known).

    Raises
    ------
    Reject
        Without requeue, so a message that can never be delivered is not
        redelivered in a loop.
    """
    settings = get_settings()
    notification_id = str(request.id)
    try:
        checked_group = check_group(settings, group)
        checked_text = check_text(settings, text)
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
    except (NotificationsError, TypeError, ValueError) as exc:
        logger.error(
            "Notification %s rejected: %s (group=%r, text=%r)",
            notification_id,
            exc,
            group,
            text,
        )
        raise Reject(str(exc), requeue=False) from exc
    return Notification(notification_id, checked_group, checked_text)


def consumed_queues(task: Task) -> Collection[str] | None:
    """Names of the queues this worker consumes, if it was told (``-Q``)."""
    selected = task.app.amqp.queues.consume_from
    return set(selected) if selected else None


@app.task(base=NotificationTask, bind=True, name=SEND_NOTIFICATION)
def send_notification(self: NotificationTask, group: str, text: str) -> None:
    """Deliver ``text`` to the subscribers of ``group``."""
    notification = received(self.request, group, text, consumed_queues(self))
    deliver(notification)


__all__ = ["NotificationTask", "log_outcome", "send_notification"]
