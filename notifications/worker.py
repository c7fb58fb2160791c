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

from notifications import topology
from notifications.broker import broker_errors, ensure_connected
from notifications.errors import BrokerError, BrokerUnreachableError
from notifications.settings import get_settings

logger = logging.getLogger(__name__)


def consumed_groups(worker: Any) -> tuple[str, ...]:
    """The configured groups whose queues ``worker`` consumes."""
    settings = get_settings()
    names = set(worker.app.amqp.queues.consume_from or settings.queue_names)
    return tuple(g for g in settings.groups if settings.queue_name(g) in names)


@celeryd_after_setup.connect
def check_topology(sender: Any = None, instance: Any = None, **kwargs: Any) -> None:
    # Sent once logging is set up and before the worker consumes anything.
    settings = get_settings()
    groups = consumed_groups(instance)
    logger.info(
        "Worker for groups %s uses %s.", ", ".join(groups), settings.masked_broker_url
    )
    if settings.embedded:
        return

    try:
        with broker_errors(settings), instance.app.connection_for_write() as conn:
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
