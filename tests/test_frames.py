"""``TaskFrames`` writes the bytes Celery, Kombu and py-amqp would write.

tests/test_bulk.py compares what reaches RabbitMQ from ``.delay()`` and
``send_many``; here the frames themselves are compared, for many texts,
against py-amqp's own encoding of the message Celery builds.
"""

from __future__ import annotations

from types import SimpleNamespace

import amqp
import pytest
from amqp.method_framing import frame_writer
from amqp.serialization import dumps
from celery.utils import uuid
from kombu.serialization import dumps as serialize

from notifications import ConfigurationError, app, send_notification
from notifications.frames import TaskFrames

EXCHANGE = "slack_notifications_direct"
CHANNEL_ID = 7


def written_by_py_amqp(
    notification_id: str, group: str, text: str, title: str | None, frame_max: int
) -> bytes:
    """The frames py-amqp writes for the message Celery and Kombu build."""
    kwargs = {"title": title} if title else {}
    headers, properties, body, _ = app.amqp.create_task_message(
        notification_id,
        send_notification.name,
        (group, text),
        kwargs,
        reply_to=app.thread_oid,
        ignore_result=send_notification.ignore_result,
    )
    content_type, encoding, data = serialize(body, "json")
    message = amqp.Message(
        data.encode(encoding),
        content_type=content_type,
        content_encoding=encoding,
        application_headers=headers,
        delivery_mode=2,
        priority=0,
        **properties,
    )
    written: list[bytes] = []
    write_frame = frame_writer(
        SimpleNamespace(frame_max=frame_max, bytes_sent=0),
        SimpleNamespace(write=lambda data: written.append(bytes(data))),
    )
    publish = dumps("Bssbb", (0, EXCHANGE, group, True, False))
    write_frame(1, CHANNEL_ID, (60, 40), publish, message)
    return b"".join(written)


def frames_for(group: str, title: str | None, frame_max: int) -> TaskFrames:
    return TaskFrames(
        app,
        send_notification,
        group,
        title,
        channel_id=CHANNEL_ID,
        frame_max=frame_max,
        mandatory=True,
    )


TEXTS = [
    "x",
    "New message in HR",
    "It's 'quoted' twice, \"and\" double",
    "two\nlines\r\nand a tab\t",
    "a backslash \\ and \\n not a newline",
    "Ünïcödé, emoji 🚀, a line separator \u2028",
    "é" * 32_768,  # 64 KiB of UTF-8, 192 KiB of JSON
    "word " * 300,
]
# Around the length where Celery starts cutting argsrepr (1024 characters
# with the group around it), with and without quotes that it escapes.
TEXTS += ["q" * n for n in range(1005, 1030)]
TEXTS += ["'" * n for n in range(1005, 1030, 3)]


@pytest.mark.parametrize("frame_max", [131_072, 4096])
@pytest.mark.parametrize("title", [None, "Payroll", "Don't miss it"])
@pytest.mark.parametrize("group", ["hr", "support"])
def test_frames_are_those_py_amqp_writes_for_celerys_message(
    group: str, title: str | None, frame_max: int
):
    frames = frames_for(group, title, frame_max)

    for text in TEXTS:
        notification_id = uuid()
        expected = written_by_py_amqp(notification_id, group, text, title, frame_max)
        assert frames.render(notification_id, text) == expected, (len(text), text[:40])


def test_argsrepr_is_the_one_celery_writes():
    frames = frames_for("hr", None, 131_072)

    for text in TEXTS:
        headers = app.amqp.create_task_message(
            uuid(), send_notification.name, ("hr", text)
        )[0]
        assert frames.argsrepr(text) == headers["argsrepr"]


def test_an_id_that_is_not_a_uuid_is_refused():
    frames = frames_for("hr", None, 131_072)

    with pytest.raises(ValueError, match="Not a notification id"):
        frames.render("42", "x")


@pytest.mark.parametrize(
    ("setting", "value"), [("task_compression", "gzip"), ("task_serializer", "pickle")]
)
def test_settings_it_cannot_reproduce_are_refused(
    monkeypatch: pytest.MonkeyPatch, setting: str, value: str
):
    monkeypatch.setitem(app.conf, setting, value)

    with pytest.raises(ConfigurationError, match=setting):
        frames_for("hr", None, 131_072)
