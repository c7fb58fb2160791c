"""Task messages leave out the protocol 2 headers that only repeat a default.

A worker reads every one of them with that default, so the message means
the same to Celery; tests/test_subscribers.py runs retries (ETA, retry
count) through real workers on these messages.
"""

from __future__ import annotations

from datetime import datetime
from types import SimpleNamespace

from notifications import app, send_notification
from notifications.protocol import DEFAULT_HEADERS


def message_for(**options):
    return app.amqp.create_task_message(
        "00000000-0000-0000-0000-000000000001",
        send_notification.name,
        ("hr", "New message in HR"),
        {},
        **options,
    )


def test_a_plain_notification_carries_only_the_headers_that_say_something():
    headers, properties, body, _ = message_for(ignore_result=True)

    assert set(headers) == {
        "lang",
        "task",
        "id",
        "root_id",
        "argsrepr",
        "kwargsrepr",
        "origin",
        "ignore_result",
    }
    assert headers["task"] == send_notification.name
    assert properties["correlation_id"] == headers["id"]
    assert body == (("hr", "New message in HR"), {}, {})


def test_a_retry_keeps_its_count_and_its_eta():
    headers, _, _, _ = message_for(retries=2, countdown=30, parent_id="p")

    assert headers["retries"] == 2
    assert datetime.fromisoformat(headers["eta"]) > datetime.fromisoformat(
        "2000-01-01T00:00:00+00:00"
    )
    assert headers["parent_id"] == "p"


def test_a_time_limit_and_links_are_kept():
    headers, _, body, _ = message_for(
        time_limit=10, callbacks=[{"task": "x"}], stamped_headers=["s"], s=1
    )

    assert headers["timelimit"] == [10, None]
    assert headers["stamps"] == {"s": 1}
    assert body[2]["callbacks"] == [{"task": "x"}]


def test_every_header_left_out_is_one_celerys_worker_reads_with_a_default():
    # The worker's request reads them with .get(): missing means default.
    from celery.worker.request import Request

    message = SimpleNamespace(
        headers={"id": "i", "task": send_notification.name},
        properties={},
        delivery_info={"exchange": "", "routing_key": "hr"},
        # Decoded already, as the worker's strategy hands it over.
        body=(("hr", "x"), {}, {}),
        content_type="application/json",
        content_encoding="utf-8",
    )

    request = Request(message, app=app, task=send_notification, decoded=True)

    assert request.eta is None
    assert request.expires is None
    assert request.parent_id is None
    assert request.time_limits == (None, None)
    assert request.stamps == {}
    assert request.request_dict.get("retries", 0) == DEFAULT_HEADERS["retries"]
