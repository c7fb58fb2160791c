"""Worker start-up: say which broker serves, and check the topology first.

``celery -A notifications worker -Q hr_queue`` and ``notifications worker
hr`` both run this before consuming, so a worker facing an exchange of the
wrong type stops with one clear line instead of retrying forever.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from celery.signals import celeryd_after_setup

from notifications import keepalive, topology
from notifications.broker import broker_errors, ensure_connected
from notifications.errors import BrokerError, BrokerUnreachableError
from notifications.settings import get_settings

logger = logging.getLogger(__name__)


def decode_json_with_one_decoder() -> None:
    """Decode task messages with one JSON decoder instead of one per message.

    Kombu's ``loads`` passes its ``object_hook`` to :func:`json.loads`,
    which then builds a new decoder for every message: measured as a
    twentieth of a worker's main loop. This decoder reads the same way.
    """
    import json

    from kombu.serialization import registry
    from kombu.utils import json as kombu_json

    decode = json.JSONDecoder(object_hook=kombu_json.object_hook).decode

    def loads(data: bytes | bytearray | memoryview | str) -> Any:
        return decode(data if isinstance(data, str) else bytes(data).decode("utf-8"))

    registry.register(
        "json",
        kombu_json.dumps,
        loads,
        content_type="application/json",
        content_encoding="utf-8",
    )


def consumed_groups(worker: Any) -> tuple[str, ...]:
    """The configured groups whose queues ``worker`` consumes."""
    settings = get_settings()
    names = set(worker.app.amqp.queues.consume_from or settings.queue_names)
    return tuple(g for g in settings.groups if settings.queue_name(g) in names)


#: Celery's loggers of "Task … received" and "Task … succeeded in …".
CELERY_TASK_LOGGERS = ("celery.worker.strategy", "celery.app.trace")


def one_line_per_outcome() -> None:
    """At INFO, leave each notification's outcome to this project's line.

    Celery logs "Task … received" and "Task … succeeded in …" for every
    task, around the worker's own "Notification … delivered" line, which
    says the same with the group and text. Three lines per notification
    cost a worker about 180 µs of CPU, more than a quarter of its time
    (``benchmarks/run.py``, draining at INFO and at WARNING). Celery's
    failure and rejection lines are warnings or errors and stay; at DEBUG
    everything stays.
    """
    if logging.getLogger().getEffectiveLevel() != logging.INFO:
        return
    for name in CELERY_TASK_LOGGERS:
        logging.getLogger(name).setLevel(logging.WARNING)


@celeryd_after_setup.connect
def prepare_worker(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    # Sent once logging is set up and before the worker consumes anything
    # (Celery reads its loggers' levels when it starts consuming).
    settings = get_settings()
    one_line_per_outcome()
    decode_json_with_one_decoder()
    keepalive.reuse_connections()
    groups = consumed_groups(instance)
    logger.info(
        "Worker for groups %s uses %s.", ", ".join(groups), settings.masked_broker_url
    )
    check_subscribers(groups)
    if not settings.embedded:
        check_topology(instance, groups)


def check_topology(worker: Any, groups: tuple[str, ...]) -> None:
    """Declare the topology ``groups`` need; stop on a broker that refuses it."""
    settings = get_settings()
    try:
        with broker_errors(settings), worker.app.connection_for_write() as conn:
            ensure_connected(conn, settings)
            topology.declare(conn, settings, groups)
    except BrokerError as exc:
        # An unreachable broker is worth waiting for (Celery retries on its
        # own); refused credentials or a clashing exchange will not fix
        # themselves.
        if isinstance(exc, BrokerUnreachableError):
            logger.warning("%s Celery keeps retrying.", exc)
            return
        logger.critical("%s", exc)
        sys.exit(1)


def check_subscribers(groups: tuple[str, ...]) -> None:
    """Load the subscribers file now: a broken one stops the worker at once."""
    from notifications.errors import ConfigurationError
    from notifications.tasks import subscribers_of

    settings = get_settings()
    try:
        for group in groups:
            targets = subscribers_of(settings, group)
            if settings.subscribers_file is not None and settings.delivery is None:
                logger.info(
                    "Group %r has %d subscriber(s)%s",
                    group,
                    len(targets),
                    "." if targets else "; its notifications are only logged.",
                )
    except ConfigurationError as exc:
        logger.critical("%s", exc)
        sys.exit(1)
    from notifications.tasks import loaded_subscribers

    subscribers = loaded_subscribers(settings)
    if subscribers is not None:
        for target in subscribers.broken:
            logger.error(
                "Subscriber %s cannot be used and its notifications will be "
                "dead-lettered: %s",
                target.masked_url,
                target.broken,
            )
