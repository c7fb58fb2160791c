"""Monitoring: workers emit the events Flower reads, and Flower asks for credentials."""

from __future__ import annotations

import base64
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid

import pytest

from notifications import app, send_notification
from tests.helpers import Broker, WorkerProcess, child_env, worker_command

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def test_a_worker_emits_task_and_heartbeat_events(rabbitmq: Broker, data_dir, tmp_path):
    events: list[dict] = []
    with app.connection_for_read() as conn:
        receiver = app.events.Receiver(conn, handlers={"*": events.append})
        listener = threading.Thread(target=receiver.capture, kwargs={"limit": None})
        listener.start()
        worker = WorkerProcess(
            worker_command("hr_queue", name=f"events-{uuid.uuid4().hex[:6]}"),
            child_env(data_dir, rabbitmq.url),
            tmp_path,
        ).start()
        try:
            worker.wait_ready()
            result = send_notification.delay("hr", "Watched by Flower")
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline:
                mine = {e["type"] for e in list(events) if e.get("uuid") == result.id}
                # Heartbeats come every couple of seconds: wait for one too.
                beats = any(e["type"] == "worker-heartbeat" for e in list(events))
                if "task-succeeded" in mine and beats:
                    break
                time.sleep(0.1)
        finally:
            worker.stop()
            receiver.should_stop = True
            listener.join(timeout=10)

    mine = {e["type"] for e in events if e.get("uuid") == result.id}
    assert {"task-received", "task-succeeded"} <= mine
    assert "worker-heartbeat" in {e["type"] for e in events}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def get(url: str, auth: str | None = None) -> int:
    request = urllib.request.Request(url)
    if auth:
        token = base64.b64encode(auth.encode()).decode()
        request.add_header("Authorization", f"Basic {token}")
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_flower_with_basic_auth_refuses_anonymous_requests(
    rabbitmq: Broker, data_dir, tmp_path
):
    pytest.importorskip("flower")
    port = free_port()
    credentials = f"ops:{uuid.uuid4().hex}"
    flower = WorkerProcess(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "notifications",
            "flower",
            "--address=127.0.0.1",
            f"--port={port}",
        ],
        child_env(data_dir, rabbitmq.url, FLOWER_BASIC_AUTH=credentials),
        tmp_path,
    ).start()
    try:
        url = f"http://127.0.0.1:{port}/api/workers"
        assert flower.wait_for(lambda: "Visit me at" in flower.output, 60), flower.output

        assert get(url) == 401
        assert get(url, auth="ops:wrong") == 401
        assert get(url, auth=credentials) == 200
    finally:
        flower.stop()
