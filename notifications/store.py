"""The store of delivered ids, when it is the default SQLite file.

Celery's database backend opens the file through SQLAlchemy with SQLite's
defaults: a rollback journal and a full sync on every commit, which makes
each recorded delivery wait for the disk twice. Write-ahead logging with
``synchronous=NORMAL`` syncs at checkpoints instead and lets readers work
while a worker writes. A crash of a process loses nothing; a power cut may
lose the last records, so those notifications could be delivered again.
"""

from __future__ import annotations

import sqlite3
from typing import Any

_tuned = False


def redelivery_key(notification_id: str) -> str:
    """Where the worker counts how often ``notification_id`` came back."""
    return f"{notification_id}.redeliveries"


def target_key(notification_id: str, target_id: str) -> str:
    """Where the delivery of ``notification_id`` to one subscriber is recorded."""
    return f"{notification_id}:{target_id}"


def tune_sqlite() -> None:
    """Set WAL and ``synchronous=NORMAL`` on every SQLite connection SQLAlchemy opens."""
    global _tuned
    if _tuned:
        return
    try:
        from sqlalchemy import event
        from sqlalchemy.engine import Engine
    except ImportError:  # pragma: no cover - SQLAlchemy is a dependency
        return

    @event.listens_for(Engine, "connect")
    def _on_connect(dbapi_connection: Any, connection_record: Any) -> None:
        if isinstance(dbapi_connection, sqlite3.Connection):
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.close()

    _tuned = True
