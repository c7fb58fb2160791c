"""Deployment settings of the ``notifications`` Celery app.

Everything that varies between a laptop and production is read from the
environment (or ``.env``) by :mod:`notifications.settings`; this module
turns it into Celery settings. It is installed with the package, so
``celery -A notifications`` finds it from any working directory.
"""

import ssl
from urllib.parse import urlsplit

from notifications import embedded, store
from notifications.routing import NotificationRouter
from notifications.settings import get_settings
from notifications.topology import group_queues

_settings = get_settings()
store.tune_sqlite()
if _settings.store_url is None:
    # The default store is an SQLite file next to the embedded broker.
    _settings.data_dir.mkdir(parents=True, exist_ok=True)

# -- Broker -----------------------------------------------------------------
broker_url = _settings.broker_url or f"{embedded.SCHEME}://"
if _settings.embedded:
    broker_transport_options = embedded.transport_options(_settings.embedded_dir)
else:
    # Publisher confirms: a publish returns only once the broker has the
    # message (and raises if it refused it), instead of trusting the socket.
    broker_transport_options = {"confirm_publish": True}
# Connecting to an unreachable host must not eat the whole publish budget
# in one attempt; the sender retries within NOTIFICATIONS_PUBLISH_TIMEOUT_S.
broker_connection_timeout = min(4.0, _settings.publish_timeout_s)
broker_connection_retry_on_startup = True

# -- TLS (amqps://) -----------------------------------------------------------
# Left alone, py-amqp checks an amqps:// broker's certificate chain against
# the system CAs but passes no server_hostname, so it never checks the host
# name: a valid certificate for any other host would be accepted. Every check
# is spelled out here so that no Kombu or py-amqp release can drop one.
if broker_url.startswith("amqps://"):
    broker_use_ssl = {
        "cert_reqs": ssl.CERT_REQUIRED,
        # None: the system's trusted CAs (CloudAMQP's certificates chain to them).
        "ca_certs": str(_settings.ca_file) if _settings.ca_file else None,
        # A server_hostname makes py-amqp check the certificate against it.
        # It is the name in the URL: left to Kombu it would be 127.0.0.1 for
        # "localhost". A failover list (a;b) is checked against its first host.
        "server_hostname": urlsplit(broker_url.split(";", 1)[0]).hostname,
    }

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

# -- The store of delivered ids -------------------------------------------------
# The result backend remembers which notification ids were delivered, so
# a redelivered notification is acknowledged without being sent twice.
# Nobody waits on these results; they only answer "was this delivered?".
result_backend = _settings.result_backend_url
result_expires = _settings.dedup_ttl_s
result_extended = False
result_backend_always_retry = True
result_backend_max_retries = 5
database_create_tables_at_setup = True
# SQLite locks the whole file while one process writes; a generous busy
# timeout lets the processes of several workers share it. Its journal mode
# is set in notifications.store.
database_engine_options = (
    {"connect_args": {"timeout": 30}}
    if _settings.result_backend_url.startswith("db+sqlite")
    else {}
)

# -- Acknowledgement ----------------------------------------------------------
# Ack after delivery, as the tutorial's consumer does: a worker that dies
# mid-delivery leaves the notification on the broker. With late acks a
# prefetch of one per process keeps notifications from piling up unacked in
# a busy worker while an idle one waits.
task_acks_late = True
worker_prefetch_multiplier = 1
# A pool process killed mid-delivery (OOM, SIGKILL) puts the notification
# back on its queue instead of losing it; the store of delivered ids and the
# redelivery cap keep that from becoming a duplicate or a loop.
task_reject_on_worker_lost = True
# Messages that are not valid Celery tasks (plain AMQP producers, pickle,
# garbage) are turned into notifications or dead letters, never dropped.
worker_consumer = "notifications.consumer:NotificationConsumer"

# -- Monitoring -------------------------------------------------------------
# Flower reads the task and worker events. The embedded broker has no one
# to read them, and files nobody reads would only pile up, so it gets none.
worker_send_task_events = not _settings.embedded
# The "sent" event would be a second confirmed publish on every .delay()
# (measured: a third of its time). Flower shows a notification from the
# moment a worker receives it instead.
task_send_sent_event = False
worker_enable_remote_control = not _settings.embedded
