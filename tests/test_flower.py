"""Monitoring: Flower shows what workers deliver, and asks for credentials.

Workers send no task events until someone watches; Flower turns them on
through remote control when it starts.
"""

from __future__ import annotations

import base64
import json
import socket
import sys
import time
import urllib.error
import urllib.request
import uuid

import pytest

from notifications import send_notification
from tests.helpers import Broker, WorkerProcess, child_env, worker_command

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


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


def get_json(url: str, auth: str) -> object:
    request = urllib.request.Request(url)
    token = base64.b64encode(auth.encode()).decode()
    request.add_header("Authorization", f"Basic {token}")
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def start_flower(data_dir, tmp_path, broker: Broker, credentials: str) -> tuple:
    port = free_port()
    flower = WorkerProcess(
        [
            sys.executable, "-m", "celery", "-A", "notifications", "flower",
            "--address=127.0.0.1", f"--port={port}",
        ],
        child_env(data_dir, broker.url, FLOWER_BASIC_AUTH=credentials),
        tmp_path,
    ).start()  # fmt: skip
    return flower, f"http://127.0.0.1:{port}"


def test_flower_shows_the_notifications_a_worker_delivered(
    rabbitmq: Broker, data_dir, tmp_path
):
    pytest.importorskip("flower")
    credentials = f"ops:{uuid.uuid4().hex}"
    worker = WorkerProcess(
        worker_command("hr_queue", name=f"watched-{uuid.uuid4().hex[:6]}"),
        child_env(data_dir, rabbitmq.url),
        tmp_path / "worker",
    )
    (tmp_path / "worker").mkdir()
    flower, base = start_flower(data_dir, tmp_path, rabbitmq, credentials)
    try:
        worker.start().wait_ready()
        assert flower.wait_for(lambda: "Visit me at" in flower.output, 60), flower.output

        # Flower turns events on within seconds of seeing the worker; until
        # then a notification is delivered unseen, so keep sending.
        sent: list[str] = []
        seen: dict = {}
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            sent.append(send_notification.delay("hr", "Watched by Flower").id)
            time.sleep(1)
            tasks = get_json(f"{base}/api/tasks", credentials)
            assert isinstance(tasks, dict)
            seen = {i: t for i, t in tasks.items() if i in sent}
            if any(t.get("state") == "SUCCESS" for t in seen.values()):
                break
    finally:
        flower.stop()
        worker.stop()

    delivered = [t for t in seen.values() if t.get("state") == "SUCCESS"]
    assert delivered, f"Flower listed none of {len(sent)} notifications: {seen}"
    assert delivered[0]["name"] == "notifications.send_notification"
