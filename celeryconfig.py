"""Deployment settings of the ``notifications`` Celery app.

Everything that varies between a laptop and production is read from the
environment (or ``.env``) by :mod:`notifications.settings`; this module
turns it into Celery settings. It is installed with the package, so
``celery -A notifications`` finds it from any working directory.
"""

import ssl
from urllib.parse import urlsplit

from notifications import embedded
from notifications.routing import NotificationRouter
from notifications.settings import get_settings
from notifications.topology import group_queues

_settings = get_settings()

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

# -- Results ------------------------------------------------------------------
# None: nobody waits on a notification's result. What a worker must know
# ("was this id delivered?") is kept by notifications.store, one small
# record per notification, instead of a result document per task.
result_backend = None
task_ignore_result = True

# -- Acknowledgement and the pool ---------------------------------------------
# Ack after delivery, as the tutorial's consumer does: a worker that dies
# mid-delivery leaves the notification on the broker.
task_acks_late = True
# A delivery mostly waits on the network (an HTTP call to Slack, an SMTP
# exchange), so one process runs many at once in threads: 32 deliveries to
# an endpoint that answers in 50 ms overlap instead of queueing, where a
# prefork pool of one process per core would wait on one each. A worker
# that needs more (or a CPU-bound delivery that needs processes) says so
# with -c / -P; a prefork pool is `-P processes`, since Celery's CLI takes
# `-P prefork` for its own default and lets this setting win over it.
# docs/benchmarks.md has the figures.
# The embedded broker is Kombu's filesystem transport, whose channels are
# not made to be acked from other threads: its workers run one notification
# at a time in the main process, enough for a laptop.
worker_pool = "solo" if _settings.embedded else "threads"
worker_concurrency = 1 if _settings.embedded else 32
# With late acks, a prefetch of two messages per thread: every thread has
# its next notification at hand when it finishes one, so the worker never
# waits on the broker between two, and a busy worker holds at most one
# more per thread that an idle one could be delivering. A prefetch of one
# per thread drained about a sixth slower (docs/benchmarks.md). Anything
# prefetched goes back to the queue if the worker dies.
worker_prefetch_multiplier = 2
# After a lost connection Celery lowers the prefetch and raises it again
# from the acknowledgement of each task. With the threads pool that ack
# runs in a pool thread, whose basic.qos waits for an answer that the main
# loop reads first: the threads hung and the worker stalled at a reduced
# prefetch after a broker restart (seen in a fault test, with py-spy).
# The full prefetch at once is what a fresh worker gets anyway.
worker_enable_prefetch_count_reduction = False
# A pool process killed mid-delivery (OOM, SIGKILL) puts the notification
# back on its queue instead of losing it; the store of delivered ids and the
# redelivery cap keep that from becoming a duplicate or a loop.
task_reject_on_worker_lost = True
# Messages that are not valid Celery tasks (plain AMQP producers, pickle,
# garbage) are turned into notifications or dead letters, never dropped.
worker_consumer = "notifications.consumer:NotificationConsumer"

# -- Monitoring -------------------------------------------------------------
# Flower reads the task events, and turns them on in every worker it sees
# (its enable_events option, on by default, through remote control). So a
# worker sends none until someone watches: three events per notification
# cost a worker a tenth of its time when nobody reads them. `-E` turns
# them on from the start.
worker_send_task_events = False
# The "sent" event would be a second confirmed publish on every .delay()
# (measured: a third of its time). Flower shows a notification from the
# moment a worker receives it instead.
task_send_sent_event = False
worker_enable_remote_control = not _settings.embedded
