"""The broker topology: one direct exchange and one queue per group.

A notification for group ``hr`` is published to the exchange with routing
key ``hr``; the exchange hands it to ``hr_queue`` only, because that queue
is the only one bound with that key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from kombu.connection import Connection
from kombu.entity import Exchange, Queue

from notifications.errors import ExchangeMismatchError
from notifications.settings import UNROUTED, Settings

_CURRENT_TYPE_RE = re.compile(r"current is '([a-z-]+)'")


def notification_exchange(settings: Settings) -> Exchange:
    """The durable direct exchange every notification is published to."""
    return Exchange(settings.exchange_name, type="direct", durable=True)


def group_queue(settings: Settings, group: str) -> Queue:
    """The durable queue of ``group``, bound with routing key ``group``."""
    return Queue(
        settings.queue_name(group),
        exchange=notification_exchange(settings),
        routing_key=group,
        durable=True,
    )


def dead_letter_exchange(settings: Settings) -> Exchange:
    """The durable direct exchange dead letters are published to."""
    return Exchange(settings.dead_letter_exchange_name, type="direct", durable=True)


def dead_letter_queue(settings: Settings, group: str) -> Queue:
    """The durable queue holding ``group``'s dead letters (``<group>_dead_letter``).

    ``group`` may also be :data:`~notifications.settings.UNROUTED`, for
    messages whose group is not known.
    """
    return Queue(
        settings.dead_letter_queue_name(group),
        exchange=dead_letter_exchange(settings),
        routing_key=group,
        durable=True,
    )


def group_queues(settings: Settings) -> tuple[Queue, ...]:
    """One queue per configured group, in the configured order."""
    return tuple(group_queue(settings, group) for group in settings.groups)


@dataclass(frozen=True)
class Binding:
    exchange: str
    routing_key: str
    queue: str


def bindings(settings: Settings) -> tuple[Binding, ...]:
    return tuple(
        Binding(settings.exchange_name, group, settings.queue_name(group))
        for group in settings.groups
    )


def describe(settings: Settings) -> str:
    """A human-readable account of what the configuration declares."""
    lines = [
        f"broker:   {settings.masked_broker_url}",
        f"exchange: {settings.exchange_name} (type direct, durable)",
        "queues:",
    ]
    lines += [f"  {name} (durable)" for name in settings.queue_names]
    lines.append("bindings:")
    lines += [
        f"  {b.exchange} --[{b.routing_key}]--> {b.queue}" for b in bindings(settings)
    ]
    dlx = settings.dead_letter_exchange_name
    lines.append(f"dead letters: {dlx} (type direct, durable)")
    lines += [
        f"  {dlx} --[{key}]--> {settings.dead_letter_queue_name(key)} (durable)"
        for key in (*settings.groups, UNROUTED)
    ]
    return "\n".join(lines)


def exchange_mismatch(settings: Settings, reply_text: str) -> ExchangeMismatchError:
    """Turn the broker's PRECONDITION_FAILED reply into an error that says what to do."""
    found = _CURRENT_TYPE_RE.search(reply_text)
    what = f"type {found.group(1)!r}" if found else "other properties"
    return ExchangeMismatchError(
        f"Exchange {settings.exchange_name!r} already exists on the broker with "
        f"{what}, but this deployment needs a durable 'direct' exchange. Delete "
        "it on the broker (management UI, or rabbitmqadmin delete exchange "
        f"name={settings.exchange_name}) or set NOTIFICATIONS_EXCHANGE to another "
        "name."
    )


def declare(connection: Connection, settings: Settings, groups: tuple[str, ...]) -> None:
    """Declare the exchange, and the queues and bindings of ``groups``.

    Raises
    ------
    ExchangeMismatchError
        If the exchange exists with another type or durability.
    """
    # Imported here: the AMQP driver is only needed with an AMQP broker.
    from amqp.exceptions import PreconditionFailed

    try:
        channel = connection.channel()
        try:
            notification_exchange(settings)(channel).declare()
            for group in groups:
                group_queue(settings, group)(channel).declare()
                dead_letter_queue(settings, group)(channel).declare()
            dead_letter_queue(settings, UNROUTED)(channel).declare()
        finally:
            channel.close()
    except PreconditionFailed as exc:
        raise exchange_mismatch(settings, str(exc)) from exc
