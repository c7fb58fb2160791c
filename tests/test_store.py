"""The store of delivered ids: SQLite by default, Redis or PostgreSQL by URL.

The same notification id arriving twice — a redelivery, or a sender that
retried — is delivered once, whichever store the workers share.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator

import pytest

from notifications import send_notification
from tests.helpers import Broker, WorkerProcess, child_env, worker_command
from tests.sinks import delivered_ids

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]


def psql(*args: str) -> None:
    subprocess.run(
        ["psql", "-h", "127.0.0.1", "-U", "postgres", "-v", "ON_ERROR_STOP=1", *args],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip


@pytest.fixture(params=["sqlite", "redis", "postgresql"])
def store_url(request, data_dir) -> Iterator[str | None]:
    if request.param == "sqlite":
        yield None  # the default: a file in the data folder
        return
    if request.param == "redis":
        redis = pytest.importorskip("redis")
        url = "redis://127.0.0.1:6379/13"
        client = redis.Redis.from_url(url)
        client.flushdb()
        try:
            yield url
        finally:
            client.flushdb()
            client.close()
        return
    pytest.importorskip("psycopg")
    database = f"notifications_test_{uuid.uuid4().hex[:8]}"
    psql("-d", "postgres", "-c", f"CREATE DATABASE {database}")
    try:
        yield f"postgresql://postgres@127.0.0.1/{database}"
    finally:
        psql("-d", "postgres", "-c", f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def test_an_id_already_delivered_is_acknowledged_without_a_second_delivery(
    rabbitmq: Broker, store_url, data_dir, tmp_path
):
    sink = tmp_path / "sink.log"
    extra = {"NOTIFICATIONS_STORE_URL": store_url} if store_url else {}
    env = child_env(
        data_dir,
        rabbitmq.url,
        NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
        NOTIFICATIONS_TEST_SINK=str(sink),
        **extra,
    )
    worker = WorkerProcess(
        worker_command("hr_queue", name=f"store-{uuid.uuid4().hex[:6]}"), env, tmp_path
    ).start()
    try:
        worker.wait_ready()
        notification_id = str(uuid.uuid4())

        # The same notification arrives twice, as after a lost confirm.
        send_notification.apply_async(("hr", "Only once"), task_id=notification_id)
        assert worker.wait_for(lambda: notification_id in delivered_ids(sink), 30)
        send_notification.apply_async(("hr", "Only once"), task_id=notification_id)
        skipped = f"Notification {notification_id} for group 'hr' skipped, already"
        assert worker.wait_for(lambda: skipped in worker.output, 30), worker.output[
            -2000:
        ]
    finally:
        worker.stop()

    assert delivered_ids(sink) == [notification_id]
    assert rabbitmq.count("hr_queue") == 0
