"""The task messages of this app: Celery's protocol 2, without its defaults.

Celery writes every header of protocol 2 into every message, most of them
holding the value a worker assumes when the header is missing (no ETA, no
group, no time limit, no retries yet…). A worker decodes each of those
AMQP table entries in Python, in its main loop, before it can hand the
notification to a thread. Leaving out the ones that only repeat the
default halves the table without changing what any worker reads: Celery's
worker looks each of them up with a default.
"""

from __future__ import annotations

from typing import Any

from celery.app.amqp import AMQP

#: Headers left out while they hold the value a worker assumes without them.
DEFAULT_HEADERS: dict[str, Any] = {
    "shadow": None,
    "eta": None,
    "expires": None,
    "group": None,
    "group_index": None,
    "retries": 0,
    "timelimit": [None, None],
    "parent_id": None,
    "stamped_headers": None,
    "stamps": {},
    "replaced_task_nesting": 0,
}

#: The body's third item, when it links to no other task.
_NO_LINKS = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


class NotificationAMQP(AMQP):  # type: ignore[misc]
    """Celery's message building, writing protocol 2 without default headers."""

    def as_task_v2(self, *args: Any, **kwargs: Any) -> Any:
        message = super().as_task_v2(*args, **kwargs)
        headers = message.headers
        for name, default in DEFAULT_HEADERS.items():
            if name in headers and headers[name] == default:
                del headers[name]
        task_args, task_kwargs, embed = message.body
        if embed == _NO_LINKS:
            message = message._replace(body=(task_args, task_kwargs, {}))
        return message


__all__ = ["DEFAULT_HEADERS", "NotificationAMQP"]
