"""Deployment settings of the ``notifications`` Celery app.

Everything that varies between a laptop and production is read from the
environment (or ``.env``) by :mod:`notifications.settings`; this module
turns it into Celery settings. It is installed with the package, so
``celery -A notifications`` finds it from any working directory.
"""

from notifications import embedded
from notifications.routing import NotificationRouter
from notifications.settings import get_settings
from notifications.topology import group_queues

_settings = get_settings()

# -- Broker -----------------------------------------------------------------
broker_url = _settings.broker_url or f"{embedded.SCHEME}://"
broker_transport_options = (
    embedded.transport_options(_settings.embedded_dir) if _settings.embedded else {}
)
# Connecting to an unreachable host must not eat the whole publish budget
# in one attempt; the sender retries within NOTIFICATIONS_PUBLISH_TIMEOUT_S.
broker_connection_timeout = min(4.0, _settings.publish_timeout_s)
broker_connection_retry_on_startup = True

# -- Topology and routing ---------------------------------------------------
# The exchange and the group queues, declared by Kombu.
task_queues = group_queues(_settings)
task_routes = (NotificationRouter(_settings),)
# A queue that is not a configured group is never created on the fly.
task_create_missing_queues = False

# -- Messages -----------------------------------------------------------------
# JSON only: a pickle from an untrusted producer could run code.
accept_content = ["json"]
task_serializer = "json"
result_accept_content = ["json"]
event_serializer = "json"
task_default_delivery_mode = "persistent"
# Nothing waits on a notification's result, so none is stored.
result_backend = None
task_ignore_result = True

# -- Acknowledgement ----------------------------------------------------------
# Ack after delivery, as the tutorial's consumer does: a worker that dies
# mid-delivery leaves the notification on the broker. With late acks a
# prefetch of one per process keeps notifications from piling up unacked in
# a busy worker while an idle one waits.
task_acks_late = True
worker_prefetch_multiplier = 1

# -- Monitoring -------------------------------------------------------------
# Flower reads the task and worker events. The embedded broker has no one
# to read them, and files nobody reads would only pile up, so it gets none.
worker_send_task_events = not _settings.embedded
task_send_sent_event = not _settings.embedded
worker_enable_remote_control = not _settings.embedded
