"""Dead letters: notifications that could not be delivered, kept with the reason.

Each group has a durable queue ``<group>_dead_letter`` on the exchange
``<exchange>.dead_letter``; messages whose group is unknown go to
``unrouted_dead_letter``. Nothing is dropped: a message the pipeline gives
up on is published there (with publisher confirms on AMQP) before the
original is acknowledged.
"""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from typing import Any

from kombu.connection import Connection
from kombu.message import Message

from notifications.delivery import DEAD_LETTER_FORMAT
from notifications.settings import UNROUTED, Settings
from notifications.topology import dead_letter_exchange, dead_letter_queue

logger = logging.getLogger(__name__)

#: Why a message was dead-lettered; ``reason`` is always one of these.
REASONS = {
    "retries_exhausted": "the delivery kept failing",
    "delivery_refused": "the delivery failed permanently",
    "bad_subscriber": "the subscriber's URL cannot be used (fix the subscribers file)",
    "worker_lost": "the notification came back too often after its worker died",
    "invalid_notification": "not a valid notification",
    "undecodable": "the body could not be decoded",
    "content_type": "the content type is not allowed",
    "unknown_task": "not a notification task",
}


#: Failures of delivery, not of the message: a replay after a fix may succeed.
REPLAYABLE_REASONS = {
    "retries_exhausted",
    "delivery_refused",
    "worker_lost",
    "bad_subscriber",
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(frozen=True)
class DeadLetter:
    """One dead-lettered message, with everything needed to understand or replay it."""

    reason: str
    error: str
    group: str
    notification_id: str | None = None
    text: str | None = None
    attempts: int = 1
    failed_at: str = field(default_factory=_now)
    content_type: str | None = None
    #: The original body when it was not a notification: UTF-8 text, or
    #: ``base64:`` and the bytes base64-encoded.
    body: str | None = None
    title: str | None = None
    #: The subscriber that refused it (masked URL), when only one did.
    target: str | None = None
    target_id: str | None = None

    @property
    def replayable(self) -> bool:
        """True if sending it again can succeed once the cause is fixed.

        A message that was never a valid notification cannot be replayed.
        """
        return (
            self.reason in REPLAYABLE_REASONS
            and self.text is not None
            and self.group != UNROUTED
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DeadLetter:
        known = {k: data[k] for k in cls.__dataclass_fields__ if k in data}
        return cls(**known)


def raw_body(body: bytes | str | None) -> str | None:
    """Keep an original body in a JSON-safe form."""
    if body is None:
        return None
    if isinstance(body, str):
        return body
    try:
        return body.decode("utf-8")
    except UnicodeDecodeError:
        return "base64:" + base64.b64encode(body).decode("ascii")


def publish(
    producer: Any, settings: Settings, letter: DeadLetter, queue_group: str | None = None
) -> None:
    """Publish ``letter`` to a dead-letter queue.

    The queue is that of ``queue_group`` (the group whose queue the message
    came from), else of ``letter.group``; ``unrouted_dead_letter`` when
    neither is a configured group. ``producer`` is a Kombu producer; on
    AMQP its channel has publisher confirms on, so this returns only once
    the broker has the message.
    """
    candidates = (queue_group, letter.group)
    group = next((g for g in candidates if g in settings.groups), UNROUTED)
    queue = dead_letter_queue(settings, group)
    producer.publish(
        json.dumps(letter.to_json()),
        exchange=dead_letter_exchange(settings),
        routing_key=group,
        content_type="application/json",
        content_encoding="utf-8",
        delivery_mode=2,
        declare=[queue],
        headers={
            "x-reason": letter.reason,
            "x-error": letter.error[:1000],
            "x-attempts": letter.attempts,
        },
        retry=True,
        retry_policy={"max_retries": 3, "interval_start": 0.2, "interval_step": 0.5},
    )
    logger.warning(
        DEAD_LETTER_FORMAT,
        letter.notification_id or "(no id)",
        letter.group,
        letter.text,
        letter.reason,
        letter.error,
        extra={
            "notification_id": letter.notification_id,
            "group": letter.group,
            "outcome": "dead-lettered",
        },
    )


def send(
    app: Any, settings: Settings, letter: DeadLetter, queue_group: str | None = None
) -> None:
    """Publish ``letter`` with a producer of ``app``'s pool (see :func:`publish`)."""
    with app.producer_or_acquire() as producer:
        publish(producer, settings, letter, queue_group)


@contextmanager
def _browse(
    connection: Connection, settings: Settings, group: str
) -> Iterator[Iterator[tuple[DeadLetter, Message]]]:
    """Fetch every dead letter of ``group`` unacknowledged.

    Whatever the caller does not ack goes back to the queue when the
    channel closes, in its original order.
    """
    channel = connection.channel()
    queue = dead_letter_queue(settings, group)(channel)
    queue.declare()

    def messages() -> Iterator[tuple[DeadLetter, Message]]:
        while (message := queue.get(no_ack=False, accept=["json"])) is not None:
            yield DeadLetter.from_json(message.payload), message

    try:
        yield messages()
    finally:
        channel.close()


def list_dead_letters(
    connection: Connection, settings: Settings, group: str
) -> list[DeadLetter]:
    with _browse(connection, settings, group) as messages:
        return [letter for letter, _ in messages]


def replay(
    connection: Connection,
    settings: Settings,
    group: str,
    send: Callable[[DeadLetter], None],
    notification_id: str | None = None,
) -> tuple[list[DeadLetter], list[DeadLetter]]:
    """Send dead letters of ``group`` again; return (replayed, skipped).

    ``send`` republishes one letter; only after it returned is the dead
    letter acknowledged, so a failing replay loses nothing.
    """
    replayed: list[DeadLetter] = []
    skipped: list[DeadLetter] = []
    with _browse(connection, settings, group) as messages:
        for letter, message in messages:
            if notification_id is not None and letter.notification_id != notification_id:
                continue
            if not letter.replayable:
                skipped.append(letter)
                continue
            send(letter)
            message.ack()
            replayed.append(letter)
    return replayed, skipped
