"""The worker's consumer: nothing that arrives is dropped.

Celery acknowledges or rejects a message it cannot run as a task, and
with no dead-letter exchange on the queue that deletes it ("Received and
deleted unknown message"). Here such a message either becomes a
notification — a plain AMQP producer in any language may publish text or
``{"text": ...}`` to the exchange with the group as routing key — or goes
to the group's dead-letter queue with the reason, and only then is it
acknowledged.
"""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

from celery.worker.consumer import Consumer
from kombu.exceptions import ContentDisallowed

from notifications import dead_letter
from notifications.errors import NotificationsError
from notifications.message import check_group, check_text
from notifications.settings import UNROUTED, get_settings

logger = logging.getLogger(__name__)

#: Content types a plain producer may use for a text body. The tutorial's
#: pika producer sets none at all.
TEXT_TYPES = {None, "", "text/plain", "application/octet-stream", "application/data"}
JSON_TYPE = "application/json"


class PlainMessageError(NotificationsError):
    """A message from a plain producer that is not a notification."""


def plain_text(content_type: str | None, body: bytes | str) -> str:
    """The notification text carried by a plain producer's message.

    Raises
    ------
    PlainMessageError
        If the body is neither UTF-8 text nor JSON ``{"text": ...}`` / a
        JSON string.
    """
    if content_type not in TEXT_TYPES and content_type != JSON_TYPE:
        # Checked before anything is decoded: a pickle is never opened.
        raise PlainMessageError(
            f"Content type {content_type!r} is not accepted: send text/plain or "
            "application/json."
        )
    try:
        # Kombu hands an empty body over as "", anything else as bytes.
        decoded = body if isinstance(body, str) else body.decode("utf-8")
    except UnicodeDecodeError:
        raise PlainMessageError("The body is not UTF-8 text.") from None
    if content_type in TEXT_TYPES:
        return decoded
    try:
        data = json.loads(decoded)
    except ValueError:
        raise PlainMessageError("The body is not valid JSON.") from None
    if isinstance(data, str):
        return data
    if isinstance(data, dict) and isinstance(data.get("text"), str):
        return str(data["text"])
    raise PlainMessageError('A JSON body must be a string or {"text": "..."}.')


class NotificationConsumer(Consumer):  # type: ignore[misc]
    def connection_for_write(
        self, url: str | None = None, heartbeat: float | None = None
    ) -> Any:
        # The worker writes only its events (for Flower) on this connection.
        # An event is worth no confirm: losing one loses a line in a monitor,
        # never a notification. Each confirm cost a round trip per event,
        # and with the threads pool a thread waiting for one raced the main
        # loop, which reads this connection for heartbeats, and could hang.
        return self.ensure_connected(
            self.app.connection_for_write(
                url=url,
                heartbeat=heartbeat,
                transport_options={"confirm_publish": False},
            )
        )

    def on_decode_error(self, message: Any, exc: Exception) -> None:
        self._salvage_or_dead_letter(message, exc)

    def on_unknown_message(self, body: Any, message: Any) -> None:
        self._salvage_or_dead_letter(message, None)

    def _salvage_or_dead_letter(self, message: Any, exc: Exception | None) -> None:
        # An exception here would stop the whole consumer ("Unrecoverable
        # error"), so whatever goes wrong, the message becomes a dead letter.
        try:
            self._salvage(message, exc)
        except Exception as error:
            logger.exception("Could not read a message; it is dead-lettered.")
            self._dead_letter(message, "undecodable", repr(error))

    def on_unknown_task(self, body: Any, message: Any, exc: Exception) -> None:
        self._dead_letter(message, "unknown_task", f"Unknown task: {exc}")

    def on_invalid_task(self, body: Any, message: Any, exc: Exception) -> None:
        if isinstance(exc, ContentDisallowed):
            self._dead_letter(message, "content_type", str(exc))
        else:
            self._dead_letter(message, "invalid_notification", str(exc))

    def _salvage(self, message: Any, exc: Exception | None) -> None:
        """Turn a plain producer's message into a notification, else dead-letter it."""
        if "task" in (message.headers or {}):
            # A Celery task message whose body failed to decode.
            self._dead_letter(message, "undecodable", str(exc))
            return

        settings = get_settings()
        group = message.delivery_info.get("routing_key") or ""
        try:
            text = plain_text(message.content_type, message.body)
            check_group(settings, group)
            check_text(settings, text)
        except PlainMessageError as error:
            reason = "content_type" if "Content type" in str(error) else "undecodable"
            self._dead_letter(message, reason, str(error))
            return
        except (NotificationsError, ValueError, TypeError) as error:
            self._dead_letter(message, "invalid_notification", str(error))
            return

        from notifications.tasks import send_notification

        notification_id = message.properties.get("message_id") or str(uuid.uuid4())
        try:
            send_notification.apply_async((group, text), task_id=notification_id)
        except NotificationsError:
            logger.exception(
                "Could not forward plain message %r for group %r; it goes back "
                "to its queue.",
                notification_id,
                group,
            )
            message.reject(requeue=True)
            return
        logger.info(
            "Plain message for group %r forwarded as notification %s.",
            group,
            notification_id,
        )
        message.ack()

    def _dead_letter(self, message: Any, reason: str, error: str) -> None:
        settings = get_settings()
        headers = message.headers or {}
        routing_key = message.delivery_info.get("routing_key") or ""
        group = routing_key if routing_key in settings.groups else UNROUTED
        letter = dead_letter.DeadLetter(
            reason=reason,
            error=error,
            group=group,
            notification_id=headers.get("id") or message.properties.get("message_id"),
            content_type=message.content_type,
            # Kept as bytes, never deserialised: a pickle is not opened.
            body=dead_letter.raw_body(message.body),
        )
        try:
            dead_letter.send(self.app, settings, letter)
        except Exception:
            logger.exception(
                "Could not dead-letter a message (%s); it goes back to its queue.", reason
            )
            message.reject(requeue=True)
            return
        message.ack()
