"""Broker trouble gets an answer, not a hang: exchange type clash, bad credentials."""

from __future__ import annotations

import uuid

import pytest
from kombu import Connection, Exchange

from tests.helpers import Broker, WorkerProcess, child_env, run_cli, worker_command

pytestmark = pytest.mark.rabbitmq


@pytest.fixture
def fanout_exchange(rabbitmq: Broker):
    """A fanout exchange, like the tutorial's earlier one, under the name we will use."""
    name = f"clash_{uuid.uuid4().hex[:8]}"
    with Connection(rabbitmq.url) as conn:
        Exchange(name, type="fanout", durable=True)(conn.channel()).declare()
    yield name
    with Connection(rabbitmq.url) as conn:
        conn.channel().exchange_delete(name)


def test_a_worker_facing_an_exchange_of_another_type_stops_with_advice(
    rabbitmq: Broker, fanout_exchange, data_dir, tmp_path
):
    env = child_env(data_dir, rabbitmq.url, NOTIFICATIONS_EXCHANGE=fanout_exchange)
    worker = WorkerProcess(worker_command("hr_queue", name="clash"), env, tmp_path)

    worker.start()
    code = worker.stop_when_exited(timeout_s=60)

    assert code != 0
    assert (
        f"Exchange '{fanout_exchange}' already exists on the broker with type 'fanout'"
        in worker.output
    )
    assert "NOTIFICATIONS_EXCHANGE" in worker.output
    assert "Traceback" not in worker.output


def test_a_sender_facing_an_exchange_of_another_type_gets_one_line(
    rabbitmq: Broker, fanout_exchange, data_dir, tmp_path
):
    env = child_env(data_dir, rabbitmq.url, NOTIFICATIONS_EXCHANGE=fanout_exchange)

    result = run_cli("send", "hr", "x", env=env, cwd=tmp_path)

    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        f"Error: Exchange '{fanout_exchange}' already exists on the broker with type "
        "'fanout', but this deployment needs a durable 'direct' exchange. Delete it "
        "on the broker (management UI, or rabbitmqadmin delete exchange "
        f"name={fanout_exchange}) or set NOTIFICATIONS_EXCHANGE to another name."
    ]
    assert rabbitmq.count("hr_queue") in (None, 0)
