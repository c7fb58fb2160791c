"""Routing: a notification goes to the exchange with routing key = its group."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from kombu.entity import Queue

from notifications.message import check_group
from notifications.settings import Settings
from notifications.topology import group_queue

SEND_NOTIFICATION = "notifications.send_notification"


def group_argument(args: Sequence[Any] | None, kwargs: Mapping[str, Any] | None) -> Any:
    """Pick the ``group`` argument of ``send_notification(group, text)``."""
    if args:
        return args[0]
    return (kwargs or {}).get("group")


class NotificationRouter:
    """Celery router that sends ``send_notification`` to its group's queue.

    Any other task is left to Celery's default routing.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        # One Queue object per group, built once: Kombu remembers what it
        # declared on a connection by entity, and building entities on every
        # send costs more than the routing itself.
        self._queues = {group: group_queue(settings, group) for group in settings.groups}

    def route_for(self, group: object) -> Queue:
        """The queue a notification for ``group`` goes to.

        Raises
        ------
        UnknownGroupError
            If ``group`` is not configured; no queue is ever made up for it.
        """
        return self._queues[check_group(self.settings, group)]

    def __call__(
        self,
        name: str,
        args: Sequence[Any] | None,
        kwargs: Mapping[str, Any] | None,
        options: Mapping[str, Any],
        task: Any = None,
        **kw: Any,
    ) -> dict[str, Any] | None:
        if name != SEND_NOTIFICATION:
            return None
        queue = self.route_for(group_argument(args, kwargs))
        return {
            "queue": queue,
            "exchange": queue.exchange,
            "routing_key": queue.routing_key,
        }
