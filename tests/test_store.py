"""The store of delivered ids: SQLite by default, Redis or PostgreSQL by URL.

The same notification id arriving twice — a redelivery, or a sender that
retried — is delivered once, whichever store the workers share.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from notifications import send_notification
from notifications.settings import load_settings
from notifications.store import Store, StoreError, open_store
from tests.helpers import Broker, WorkerProcess, child_env, worker_command
from tests.sinks import delivered_ids


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


@pytest.mark.rabbitmq
@pytest.mark.slow
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


# -- The store itself, for each kind ----------------------------------------------


def a_store(store_url: str | None, data_dir: Path, ttl_s: float = 60.0) -> Store:
    env = {
        "NOTIFICATIONS_DATA_DIR": str(data_dir),
        "NOTIFICATIONS_DEDUP_TTL_S": str(ttl_s),
    }
    if store_url:
        env["NOTIFICATIONS_STORE_URL"] = store_url
    return open_store(load_settings(env, data_dir))


def test_records_are_written_read_counted_and_forgotten(store_url, data_dir):
    store = a_store(store_url, data_dir)
    try:
        assert store.get("n1") is None
        store.put("n1", "delivered")
        store.put("n1:target", "dead-lettered")
        assert store.get("n1") == "delivered"
        assert store.get("n1:target") == "dead-lettered"
        assert [store.increment("n1.redeliveries") for _ in range(3)] == [1, 2, 3]

        store.forget("n1", "n1.redeliveries", "never-written")

        assert store.get("n1") is None
        assert store.get("n1:target") == "dead-lettered"
        assert store.increment("n1.redeliveries") == 1
    finally:
        store.close()


def test_records_expire_after_the_dedup_ttl(store_url, data_dir):
    store = a_store(store_url, data_dir, ttl_s=0.5)
    try:
        store.put("n2", "delivered")
        store.increment("n2.redeliveries")
        assert store.get("n2") == "delivered"
        time.sleep(1.2)
        assert store.get("n2") is None
        assert store.increment("n2.redeliveries") == 1
    finally:
        store.close()


def test_the_threads_of_a_worker_share_the_store_without_losing_a_count(
    store_url, data_dir
):
    store = a_store(store_url, data_dir)
    errors: list[BaseException] = []

    def count_and_record(thread: int) -> None:
        try:
            for n in range(100):
                store.increment("shared")
                store.put(f"t{thread}-{n}", "delivered")
                assert store.get(f"t{thread}-{n}") == "delivered"
        except BaseException as exc:  # noqa: BLE001 - reported below, not lost
            errors.append(exc)

    threads = [threading.Thread(target=count_and_record, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    try:
        assert errors == []
        assert store.increment("shared") == 801
    finally:
        store.close()


def test_worker_processes_share_the_default_sqlite_store(data_dir, tmp_path):
    code = (
        "from notifications.settings import get_settings\n"
        "from notifications.store import open_store\n"
        "store = open_store(get_settings())\n"
        "for _ in range(200):\n"
        "    store.increment('across')\n"
    )
    env = child_env(data_dir, None)
    children = [
        subprocess.Popen([sys.executable, "-c", code], env=env, cwd=tmp_path)
        for _ in range(3)
    ]
    assert [child.wait(timeout=60) for child in children] == [0, 0, 0]

    store = a_store(None, data_dir)
    try:
        assert store.increment("across") == 601
    finally:
        store.close()


@pytest.mark.parametrize(
    "url",
    ["redis://:hunter2@127.0.0.1:1/0", "postgresql://postgres:hunter2@127.0.0.1:1/x"],
)
def test_an_unreachable_store_raises_one_line_without_the_password(url, data_dir):
    pytest.importorskip("redis" if url.startswith("redis") else "psycopg")
    store = a_store(url, data_dir)

    with pytest.raises(StoreError) as raised:
        store.get("n3")

    message = str(raised.value)
    assert message.startswith("The store of delivered ids at ")
    assert "127.0.0.1:1" in message
    assert "hunter2" not in message
    assert "\n" not in message


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_worker_whose_store_is_down_dead_letters_instead_of_losing_it(
    rabbitmq: Broker, data_dir, tmp_path
):
    sink = tmp_path / "sink.log"
    env = child_env(
        data_dir,
        rabbitmq.url,
        NOTIFICATIONS_DELIVERY="tests.sinks:RecordingDelivery",
        NOTIFICATIONS_TEST_SINK=str(sink),
        NOTIFICATIONS_STORE_URL="redis://:hunter2@127.0.0.1:1/0",
        NOTIFICATIONS_MAX_RETRIES="1",
        NOTIFICATIONS_RETRY_BACKOFF_S="0.1",
    )
    worker = WorkerProcess(
        worker_command("hr_queue", name=f"store-down-{uuid.uuid4().hex[:6]}"),
        env,
        tmp_path,
    ).start()
    try:
        worker.wait_ready()
        notification_id = send_notification.delay("hr", "Kept safe").id
        assert worker.wait_for(lambda: rabbitmq.count("hr_dead_letter") == 1, 60), (
            worker.output[-3000:]
        )
    finally:
        worker.stop()
        rabbitmq.purge_queues("hr_dead_letter")

    assert delivered_ids(sink) == []
    assert f"Notification {notification_id} for group 'hr' retried in" in worker.output
    assert "The store of delivered ids at redis://:**@127.0.0.1:1/0 failed" in (
        worker.output
    )
    assert "hunter2" not in worker.output
