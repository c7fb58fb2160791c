"""The Celery app every sender and worker of this deployment shares."""

from __future__ import annotations

from celery import Celery

from notifications import embedded

embedded.register()

app = Celery("notifications")
app.config_from_object("celeryconfig")
