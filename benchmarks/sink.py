"""Where benchmark consumers record what they processed, and when.

Every consumer — the project's worker through ``NOTIFICATIONS_DELIVERY``,
the dramatiq actor — appends ``<time.time()> <id>`` to the file named by
``BENCH_SINK``, so the run reads one format to count deliveries and to
time them, whichever framework consumed the message.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from notifications.message import Notification


def record(message_id: str) -> None:
    """Append the current wall-clock time and ``message_id`` to the sink."""
    line = f"{time.time():.6f} {message_id}\n".encode()
    # One short write with O_APPEND is atomic between processes, so pool
    # processes and threads can share the file without a lock.
    fd = os.open(os.environ["BENCH_SINK"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


class TimestampDelivery:
    """A delivery that only records the time: the worker's own cost, no target's."""

    def deliver(self, notification: Notification) -> None:
        record(notification.notification_id)


def read(path: Path) -> list[tuple[float, str]]:
    """(time, id) of every recorded message, in the order they were written."""
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        stamp, _, message_id = line.partition(" ")
        if message_id:
            rows.append((float(stamp), message_id))
    return rows


def count(path: Path) -> int:
    """How many messages were recorded, without parsing them."""
    if not path.exists():
        return 0
    with open(path, "rb") as f:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(1 << 16), b""))
