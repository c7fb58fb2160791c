"""The Celery app every sender and worker of this deployment shares."""

from __future__ import annotations

from celery import Celery

from notifications import embedded

embedded.register()

# Task messages without the protocol 2 headers that only repeat a default,
# which every worker would otherwise decode for every notification.
app = Celery("notifications", amqp="notifications.protocol:NotificationAMQP")
app.config_from_object("celeryconfig")
