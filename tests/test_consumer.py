"""What a plain AMQP producer may send, and how the worker reads it."""

from __future__ import annotations

import json

import pytest

from notifications.consumer import PlainMessageError, plain_text
from notifications.settings import Settings
from notifications.tasks import backoff_s


@pytest.mark.parametrize(
    ("content_type", "body", "text"),
    [
        (None, b"New message in HR", "New message in HR"),
        ("text/plain", "caf\u00e9".encode(), "caf\u00e9"),
        ("application/json", json.dumps({"text": "hi", "x": 1}).encode(), "hi"),
        ("application/json", json.dumps("just a string").encode(), "just a string"),
        ("text/plain", "", ""),
    ],
)
def test_text_and_json_bodies_become_the_notification_text(content_type, body, text):
    assert plain_text(content_type, body) == text


@pytest.mark.parametrize(
    ("content_type", "body", "message"),
    [
        ("application/x-python-serialize", b"\x80\x04.", "not accepted"),
        ("application/xml", b"<a/>", "not accepted"),
        ("text/plain", b"\xff\xfe", "not UTF-8"),
        ("application/json", b"{broken", "not valid JSON"),
        ("application/json", json.dumps({"body": "x"}).encode(), '{"text": "..."}'),
        ("application/json", json.dumps([1, 2]).encode(), '{"text": "..."}'),
    ],
)
def test_anything_else_is_refused_with_the_reason(content_type, body, message):
    with pytest.raises(PlainMessageError, match=message):
        plain_text(content_type, body)


def test_backoff_doubles_with_jitter_and_stays_under_the_cap():
    settings = Settings(retry_backoff_s=1.0, retry_backoff_max_s=10.0)

    for retries, cap in [(0, 1.0), (1, 2.0), (2, 4.0), (3, 8.0), (4, 10.0), (9, 10.0)]:
        waits = [backoff_s(settings, retries) for _ in range(200)]
        assert all(cap / 2 <= w <= cap for w in waits)
        assert max(waits) - min(waits) > cap / 10  # jittered, not fixed
