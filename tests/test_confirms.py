"""``ConfirmWindow``: bounded waits, and never more in flight than the window.

On a channel that is not in confirm mode RabbitMQ never answers a publish:
every publish stays unconfirmed, which shows what the window does when the
broker does not confirm.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from celery.utils import uuid
from kombu import Connection

from notifications import app, send_notification
from notifications.confirms import ConfirmWindow
from notifications.frames import TaskFrames
from tests.helpers import Broker

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def unconfirmed_channel(rabbitmq: Broker) -> Iterator[Any]:
    """A channel whose publishes the broker never confirms."""
    with Connection(rabbitmq.url) as connection:
        yield connection.channel()


def frames_on(channel: Any) -> TaskFrames:
    frames = TaskFrames(
        app,
        send_notification,
        "hr",
        None,
        channel_id=channel.channel_id,
        frame_max=channel.connection.frame_max,
        mandatory=True,
    )
    app.amqp.Producer(channel, auto_declare=False).maybe_declare(frames.queue)
    return frames


def test_waiting_for_confirms_that_never_come_times_out(unconfirmed_channel: Any):
    frames = frames_on(unconfirmed_channel)
    ids = [uuid() for _ in range(3)]
    window = ConfirmWindow(unconfirmed_channel, ids, window=10, timeout_s=0.5)
    for notification_id in ids:
        window.publish(frames.render(notification_id, "Never confirmed"))

    with pytest.raises(TimeoutError, match=r"3 notifications unconfirmed after 0\.5 s"):
        window.finish()

    assert window.confirmed_ids() == []


def test_a_full_window_stops_the_writing(rabbitmq: Broker, unconfirmed_channel: Any):
    frames = frames_on(unconfirmed_channel)
    ids = [uuid() for _ in range(5)]
    window = ConfirmWindow(unconfirmed_channel, ids, window=2, timeout_s=0.5)

    window.publish(frames.render(ids[0], "Never confirmed"))
    with pytest.raises(TimeoutError, match="2 notifications unconfirmed"):
        window.publish(frames.render(ids[1], "Never confirmed"))

    # The broker got the two that filled the window; the caller stops there.
    assert window.published == 2
    assert [m.headers["id"] for m in rabbitmq.take_all()] == ids[:2]
