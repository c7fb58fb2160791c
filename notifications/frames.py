"""The AMQP frames of ``send_notification`` messages, rendered from a template.

For each ``.delay()`` Celery builds the protocol 2 headers, Kombu
serializes the body and py-amqp encodes some twenty headers into an AMQP
table, one by one, in Python: most of a publish's time. In a bulk send to
one group the messages differ only in the task id (the ``id`` and
``root_id`` headers and ``correlation_id``), the ``argsrepr`` header and
the text in the body. So :class:`TaskFrames` has Celery, Kombu and py-amqp
build and encode one message, keeps the encoded bytes, and per notification
splices in its id, ``argsrepr`` and text: the bytes on the wire are those
``.delay()`` writes for the same notification.
"""

from __future__ import annotations

import struct
from json.encoder import encode_basestring_ascii
from typing import Any

from amqp import spec
from amqp.basic_message import Message
from amqp.serialization import dumps
from celery.utils import uuid
from celery.utils.saferepr import saferepr
from kombu.entity import maybe_delivery_mode
from kombu.serialization import dumps as serialize

from notifications.errors import ConfigurationError

_METHOD_FRAME = 1
_HEADER_FRAME = 2
_BODY_FRAME = 3
_FRAME_END = b"\xce"
#: Type octet, channel short and size long before a payload, end octet after.
_FRAME_OVERHEAD = 8
#: Stands for the text while the template is built. Made of a fresh UUID,
#: it cannot be confused with the group, the title or the JSON around it.
_TEXT_MARK = f"text-{uuid()}"


def _unsupported() -> ConfigurationError:
    return ConfigurationError(
        "send_many() writes Celery task messages of protocol 2, in JSON, without "
        "compression: set task_protocol = 2, task_serializer = 'json' and leave "
        "task_compression unset."
    )


def _frame(frame_type: int, channel_id: int, payload: bytes) -> bytes:
    size = struct.pack(">BHI", frame_type, channel_id, len(payload))
    return b"".join((size, payload, _FRAME_END))


def _table_entry(key: str, value: object) -> bytes:
    """One ``key: value`` entry of an AMQP table, as py-amqp encodes it."""
    # dumps() puts the table's length in front: the entry is the rest.
    return dumps("F", [{key: value}])[4:]


class TaskFrames:
    """Renders ``send_notification(group, text, title)`` as AMQP frames.

    Parameters
    ----------
    app:
        The Celery app: its own code builds the template message.
    task:
        The ``send_notification`` task.
    group, title:
        The same for every notification rendered.
    channel_id:
        The channel the frames will be written on.
    frame_max:
        The largest frame the broker accepts (negotiated on connecting);
        a longer body is split over several body frames, as py-amqp does.
    mandatory:
        Whether the broker returns what no queue receives.

    Raises
    ------
    ConfigurationError
        If the app does not write JSON task messages of protocol 2.
    """

    def __init__(
        self,
        app: Any,
        task: Any,
        group: str,
        title: str | None,
        *,
        channel_id: int,
        frame_max: int,
        mandatory: bool,
    ) -> None:
        kwargs = {"title": title} if title else {}
        # The route .delay() takes: the group's queue, through the direct
        # exchange with routing key = group.
        route = app.amqp.router.route({}, task.name, (group,), kwargs, task)
        self.queue = route["queue"]
        exchange = self.queue.exchange
        # Sent from inside a task, the notifications belong to its tree.
        parent = app.current_worker_task
        parent_id = parent.request.id if parent else None
        root_id = (parent.request.root_id or parent.request.id) if parent else None

        template_id = uuid()
        headers, properties, body, _ = app.amqp.create_task_message(
            template_id,
            task.name,
            (group, _TEXT_MARK),
            kwargs,
            reply_to=app.thread_oid,
            root_id=root_id,
            parent_id=parent_id,
            ignore_result=task.ignore_result,
        )
        if app.conf.task_compression or "argsrepr" not in headers:
            raise _unsupported()
        content_type, encoding, data = serialize(body, app.conf.task_serializer)
        if content_type != "application/json":
            raise _unsupported()
        mark = encode_basestring_ascii(_TEXT_MARK).encode("ascii")
        self._body_head, self._body_tail = data.encode(encoding).split(mark)

        # Celery's argsrepr puts each string between single quotes and
        # escapes only those (saferepr, not repr), and cuts the whole at
        # argsrepr_maxsize characters. A text too short to be cut is
        # rendered here; a longer one by Celery's saferepr() itself.
        self._group = group
        self._repr_head = "('{}', '".format(group.replace("'", "\\'"))
        self._repr_limit = app.amqp.argsrepr_maxsize - len(self._repr_head)
        self._repr_maxsize = app.amqp.argsrepr_maxsize
        self._repr_maxlevels = app.conf.task_repr_maxlevels

        self._channel_id = channel_id
        self._body_frame_max = frame_max - _FRAME_OVERHEAD
        self._id_length = len(template_id)
        publish = dumps(
            "Bssbb", (0, exchange.name, route["routing_key"], mandatory, False)
        )
        self._method_frame = _frame(
            _METHOD_FRAME, channel_id, struct.pack(">HH", *spec.Basic.Publish) + publish
        )
        self._encode_properties(
            template_id,
            {
                "content_type": content_type,
                "content_encoding": encoding,
                "application_headers": headers,
                # What Kombu writes for Celery: the exchange's delivery mode
                # (else Celery's default) and priority 0.
                "delivery_mode": maybe_delivery_mode(
                    exchange.delivery_mode or app.conf.task_default_delivery_mode
                ),
                "priority": 0,
                **properties,
            },
        )

    def _encode_properties(self, template_id: str, properties: dict[str, Any]) -> None:
        """Encode what every message's content header shares.

        The property list is kept as the bytes before the headers table,
        between the table and ``correlation_id``, and after it; the table
        as the entries between the headers that change.
        """
        headers = properties["application_headers"]
        if properties.get("correlation_id") != template_id:
            raise _unsupported()
        flags = 0
        parts: list[list[bytes]] = [[], [], []]
        part = parts[0]
        for position, (name, kind) in enumerate(Message.PROPERTIES):
            value = properties.get(name)
            if value is None:
                continue
            # The basic class has 14 properties: one word of flags.
            flags |= 1 << (15 - position)
            if name == "application_headers":
                part = parts[1]
            elif name == "correlation_id":
                part = parts[2]
            else:
                part.append(dumps(kind, [value]))
        head, middle, tail = (b"".join(p) for p in parts)
        self._properties_head = struct.pack(">H", flags) + head
        self._properties_middle = middle
        self._properties_tail = tail

        #: Table entries that stay the same, around (key prefix, value) slots.
        self._entries: list[bytes] = []
        self._slots: list[tuple[bytes, str]] = []
        same: list[bytes] = []
        for key, value in headers.items():
            if key == "argsrepr" or value == template_id:
                self._entries.append(b"".join(same))
                # A str value is a long string: 'S', a 4-byte length, UTF-8;
                # the prefix is the key and the 'S'.
                self._slots.append((_table_entry(key, "")[:-4], key))
                same = []
            else:
                same.append(_table_entry(key, value))
        self._entries.append(b"".join(same))

    def argsrepr(self, text: str) -> str:
        """The ``argsrepr`` header Celery writes for ``(group, text)``."""
        if len(text) < self._repr_limit:
            return self._repr_head + text.replace("'", "\\'") + "')"
        return str(
            saferepr(
                (self._group, text), self._repr_maxsize, maxlevels=self._repr_maxlevels
            )
        )

    def render(self, notification_id: str, text: str) -> bytes:
        """The frames that publish notification ``notification_id``.

        ``text`` must be a checked text (valid Unicode), and
        ``notification_id`` a UUID string as Celery makes them.
        """
        if len(notification_id) != self._id_length:
            raise ValueError(f"Not a notification id: {notification_id!r}.")
        pack = struct.pack
        task_id = notification_id.encode("ascii")
        argsrepr = self.argsrepr(text).encode("utf-8")

        entries = self._entries
        table = [entries[0]]
        for index, (prefix, key) in enumerate(self._slots, 1):
            value = argsrepr if key == "argsrepr" else task_id
            table += (prefix, pack(">I", len(value)), value, entries[index])
        table_bytes = b"".join(table)

        body = b"".join(
            (
                self._body_head,
                encode_basestring_ascii(text).encode("ascii"),
                self._body_tail,
            )
        )
        header = b"".join(
            (
                pack(">HHQ", spec.Basic.CLASS_ID, 0, len(body)),
                self._properties_head,
                pack(">I", len(table_bytes)),
                table_bytes,
                self._properties_middle,
                pack("B", len(task_id)),
                task_id,
                self._properties_tail,
            )
        )
        frames = [self._method_frame, _frame(_HEADER_FRAME, self._channel_id, header)]
        step = self._body_frame_max
        for start in range(0, len(body), step):
            chunk = body[start : start + step]
            frames.append(_frame(_BODY_FRAME, self._channel_id, chunk))
        return b"".join(frames)


__all__ = ["TaskFrames"]
