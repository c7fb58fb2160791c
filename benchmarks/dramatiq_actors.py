"""The dramatiq side of the benchmark: one actor that records each message.

Loaded by ``dramatiq benchmarks.dramatiq_actors``; the broker URL comes
from ``BENCH_BROKER_URL`` so each measurement can use a vhost of its own.
"""

from __future__ import annotations

import os

import dramatiq
from dramatiq.brokers.rabbitmq import RabbitmqBroker

from benchmarks.sink import record

#: benchmarks/run.py publishes under the same names (it cannot import this
#: module, which needs the broker URL at import time, as dramatiq's CLI does).
ACTOR_NAME = "record"
QUEUE_NAME = "bench"

broker = RabbitmqBroker(url=os.environ["BENCH_BROKER_URL"])
dramatiq.set_broker(broker)


@dramatiq.actor(actor_name=ACTOR_NAME, queue_name=QUEUE_NAME, max_retries=0)
def record_message(message_id: str) -> None:
    record(message_id)
