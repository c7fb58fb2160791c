"""Shared fixtures.

The test process itself always talks to a RabbitMQ vhost of its own (set
up below before ``notifications`` is imported); tests of the embedded
broker run senders and workers as child processes with their own data
folder, exactly as a user would.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.helpers import Broker, rabbitmqctl

RABBITMQ_HOST = "127.0.0.1"
RABBITMQ_PORT = 5672
IN_CI = os.environ.get("CI", "").lower() in {"1", "true", "yes"}

SESSION_VHOST = f"notifications-test-{uuid.uuid4().hex[:8]}"
SESSION_URL = f"amqp://guest:guest@{RABBITMQ_HOST}:{RABBITMQ_PORT}/{SESSION_VHOST}"

# The package reads its settings once per process: pin them before any
# test imports it, so that nothing here touches the user's own setup.
os.environ.pop("CLOUDAMQP_URL", None)
os.environ["CELERY_BROKER_URL"] = SESSION_URL
os.environ["NOTIFICATIONS_PUBLISH_TIMEOUT_S"] = "3"
os.environ.pop("NOTIFICATION_GROUPS", None)
os.environ.pop("NOTIFICATIONS_EXCHANGE", None)
# The store of delivered ids of this process lives in a folder of its own.
_SESSION_DATA = tempfile.mkdtemp(prefix="notifications-test-")
atexit.register(shutil.rmtree, _SESSION_DATA, ignore_errors=True)
os.environ["NOTIFICATIONS_DATA_DIR"] = _SESSION_DATA


def rabbitmq_answers() -> bool:
    try:
        with socket.create_connection((RABBITMQ_HOST, RABBITMQ_PORT), timeout=2):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def rabbitmq_session() -> Iterator[Broker]:
    """The session's own vhost on the local RabbitMQ, deleted afterwards."""
    if not rabbitmq_answers():
        message = f"no RabbitMQ answers on {RABBITMQ_HOST}:{RABBITMQ_PORT}"
        if IN_CI:
            pytest.fail(f"{message}, and CI=true requires it")
        pytest.skip(message)

    rabbitmqctl("add_vhost", SESSION_VHOST)
    rabbitmqctl("set_permissions", "-p", SESSION_VHOST, "guest", ".*", ".*", ".*")
    try:
        yield Broker(url=SESSION_URL, vhost=SESSION_VHOST)
    finally:
        # The connections this process sent on, closed before the broker
        # drops them with their vhost.
        from notifications import app

        app.pool.force_close_all()
        rabbitmqctl("delete_vhost", SESSION_VHOST)


@pytest.fixture
def rabbitmq(rabbitmq_session: Broker) -> Iterator[Broker]:
    """The session vhost, with the notification queues purged around each test."""
    rabbitmq_session.purge_queues()
    yield rabbitmq_session
    rabbitmq_session.purge_queues()


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    folder = tmp_path / "data"
    folder.mkdir()
    return folder
