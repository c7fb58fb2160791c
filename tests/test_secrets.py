"""No password ever shows: worker banners, logs, CLI output and errors are grepped.

A dedicated RabbitMQ user with a distinctive password runs everything a
user would run; the password must appear nowhere in what they print.
"""

from __future__ import annotations

import sys
import uuid

import pytest

from tests.helpers import Broker, WorkerProcess, child_env, rabbitmqctl, run_cli

pytestmark = [pytest.mark.rabbitmq, pytest.mark.slow]

PASSWORD = f"Zebra-Quartz-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def secret_user(rabbitmq: Broker):
    user = f"notifications-secret-{uuid.uuid4().hex[:6]}"
    rabbitmqctl("add_user", user, PASSWORD)
    rabbitmqctl("set_permissions", "-p", rabbitmq.vhost, user, ".*", ".*", ".*")
    try:
        yield f"amqp://{user}:{PASSWORD}@127.0.0.1:5672/{rabbitmq.vhost}"
    finally:
        rabbitmqctl("delete_user", user)


def test_the_password_appears_in_no_output(secret_user, rabbitmq, data_dir, tmp_path):
    printed: list[str] = []
    env = child_env(data_dir, None, CLOUDAMQP_URL=secret_user)

    # A worker started by hand, with Celery's most talkative logging.
    worker = WorkerProcess(
        [
            *(sys.executable, "-m", "celery", "-A", "notifications", "worker"),
            *("-Q", "hr_queue", "-n", "secret@%h", "--pool", "solo", "-l", "DEBUG"),
        ],
        env,
        tmp_path,
    )
    worker.start()
    try:
        worker.wait_ready()
        sent = run_cli("send", "hr", "Password check", env=env, cwd=tmp_path)
        printed += [sent.stdout, sent.stderr]
        assert sent.returncode == 0, sent.stderr
        notification_id = sent.stdout.strip()
        assert worker.wait_for(
            lambda: any(r.notification_id == notification_id for r in worker.received()),
            timeout_s=30,
        )
    finally:
        worker.stop()
    printed.append(worker.output)
    assert "secret@" in worker.output  # the banner was captured

    for args in (
        ("topology",),
        ("demo", "--timeout", "60"),
        ("dead-letters", "list", "hr"),
    ):
        result = run_cli(*args, env=env, cwd=tmp_path, timeout_s=120)
        assert result.returncode == 0, result.stdout + result.stderr
        printed += [result.stdout, result.stderr]

    # Errors quote the URL they tried: a wrong vhost and a wrong password.
    wrong_vhost = secret_user.rsplit("/", 1)[0] + "/no-such-vhost"
    wrong_password = secret_user.replace(PASSWORD, PASSWORD + "-wrong")
    for url in (wrong_vhost, wrong_password):
        env_bad = child_env(data_dir, url, NOTIFICATIONS_PUBLISH_TIMEOUT_S="1")
        result = run_cli("send", "hr", "x", env=env_bad, cwd=tmp_path)
        assert result.returncode != 0
        assert "Error: " in result.stderr
        printed += [result.stdout, result.stderr]

    everything = "\n".join(printed)
    assert ":**@" in everything  # masked URLs were printed...
    assert PASSWORD not in everything  # ...and the password never was
