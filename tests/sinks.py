"""Deliveries for tests, loaded by real workers through NOTIFICATIONS_DELIVERY.

``RecordingDelivery`` appends one line per delivery to the file named by
``NOTIFICATIONS_TEST_SINK``: ``start <pid> <id>`` when it begins and
``done <pid> <id>`` once the notification counts as delivered, so a test
can kill a worker while a delivery is in progress and count deliveries by
id. ``NOTIFICATIONS_TEST_DELAY_S`` makes each delivery take that long.

Texts steer failures, so one worker can show every path:

* ``fail-transient:N:...`` fails transiently on the first N attempts;
* ``fail-permanent:...`` always fails permanently;
* ``kill-worker:...`` kills the process delivering it, every time;
* ``slow:...`` takes two seconds, a window for a test to inject a fault.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from notifications.errors import PermanentDeliveryError, TransientDeliveryError
from notifications.message import Notification


def _append(line: str) -> None:
    path = os.environ["NOTIFICATIONS_TEST_SINK"]
    # One write of a short line with O_APPEND is atomic between processes.
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (line + "\n").encode("utf-8"))
    finally:
        os.close(fd)


def _attempt(notification_id: str) -> int:
    """Count attempts per id in files next to the sink."""
    folder = Path(os.environ["NOTIFICATIONS_TEST_SINK"] + ".attempts")
    folder.mkdir(exist_ok=True)
    with open(folder / notification_id, "a") as f:
        f.write("x")
    return (folder / notification_id).stat().st_size


class RecordingDelivery:
    def deliver(self, notification: Notification) -> None:
        pid = os.getpid()
        nid = notification.notification_id
        text = notification.text
        _append(f"start {pid} {nid}")
        attempt = _attempt(nid)

        if text.startswith("kill-worker:"):
            os.kill(pid, signal.SIGKILL)
        if text.startswith("fail-permanent:"):
            raise PermanentDeliveryError("the target answered 400 Bad Request")
        if text.startswith("fail-transient:"):
            failures = int(text.split(":", 2)[1])
            if attempt <= failures:
                raise TransientDeliveryError(
                    f"the target answered 503 (attempt {attempt})"
                )

        delay_s = 2.0 if text.startswith("slow:") else 0.0
        time.sleep(delay_s or float(os.environ.get("NOTIFICATIONS_TEST_DELAY_S", "0")))
        _append(f"done {pid} {nid} {notification.group} {text}")


def read_sink(path: Path) -> list[tuple[str, ...]]:
    if not path.exists():
        return []
    return [tuple(line.split(" ", 4)) for line in path.read_text().splitlines() if line]


def delivered_ids(path: Path) -> list[str]:
    return [fields[2] for fields in read_sink(path) if fields[0] == "done"]


def in_progress(path: Path) -> list[tuple[int, str]]:
    """(pid, id) of deliveries that started and have not finished."""
    started: dict[str, int] = {}
    for fields in read_sink(path):
        if fields[0] == "start":
            started[fields[2]] = int(fields[1])
        elif fields[0] == "done":
            started.pop(fields[2], None)
    return [(pid, nid) for nid, pid in started.items()]
