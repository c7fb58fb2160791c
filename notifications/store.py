"""The store of delivered ids: what a worker asks before and after a delivery.

Every notification costs a worker one read ("was this id delivered?") and
one write ("it is now"), so this store is on the hot path of every
delivery. It keeps short string records, each for ``NOTIFICATIONS_DEDUP_TTL_S``:

* ``<id>`` — ``delivered`` or ``dead-lettered``;
* ``<id>:<target>`` — the same, per subscriber of a fanned-out notification;
* ``<id>.redeliveries`` — how often the notification came back after its
  worker died.

Three kinds, chosen by ``NOTIFICATIONS_STORE_URL``:

* SQLite (the default, a file in the data folder) for the workers of one
  machine. Write-ahead logging with ``synchronous=NORMAL`` syncs at
  checkpoints rather than on every commit: a crashed process loses nothing,
  a power cut may lose the last records, whose notifications could then be
  delivered again.
* Redis, for workers on several machines.
* PostgreSQL, likewise, where a database is at hand anyway.

Each is driven with its own client, one statement per question. (A
general-purpose result backend spends an ORM round trip and a serialised
result document per record, which measured as the largest cost of a
worker.)
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, TypeVar

from notifications.errors import NotificationsError
from notifications.settings import Settings, mask_url

logger = logging.getLogger(__name__)

DELIVERED = "delivered"
DEAD_LETTERED = "dead-lettered"

#: Expired SQLite records are deleted every this many writes of a process.
PURGE_EVERY = 1000

T = TypeVar("T")


class StoreError(NotificationsError):
    """The store of delivered ids could not be read or written."""


class Store(Protocol):
    """Short string records that expire ``ttl_s`` seconds after their last write."""

    #: Where the store is, with any password masked.
    location: str

    def get(self, key: str) -> str | None:
        """The record under ``key``, or ``None``."""

    def put(self, key: str, value: str) -> None:
        """Record ``value`` under ``key``, replacing what was there."""

    def increment(self, key: str) -> int:
        """Add one to the counter under ``key``; return the new count."""

    def forget(self, *keys: str) -> None:
        """Delete the records under ``keys``; missing ones are ignored."""

    def close(self) -> None:
        """Let go of connections; the store reconnects if used again."""


def redelivery_key(notification_id: str) -> str:
    """Where the worker counts how often ``notification_id`` came back."""
    return f"{notification_id}.redeliveries"


def target_key(notification_id: str, target_id: str) -> str:
    """Where the delivery of ``notification_id`` to one subscriber is recorded."""
    return f"{notification_id}:{target_id}"


def open_store(settings: Settings) -> Store:
    """The store ``settings`` name; nothing is connected until first used."""
    url = settings.store_url
    if url is None:
        return SQLiteStore(settings.data_dir / "delivered.sqlite3", settings.dedup_ttl_s)
    scheme = url.split("://", 1)[0]
    if scheme == "sqlite":
        # sqlite:///relative/path or sqlite:////absolute/path, as SQLAlchemy reads it.
        return SQLiteStore(Path(url[len("sqlite:///") :]), settings.dedup_ttl_s)
    if scheme in {"redis", "rediss"}:
        return RedisStore(url, settings.dedup_ttl_s)
    return PostgresStore(url, settings.dedup_ttl_s)


_store: Store | None = None
_store_lock = threading.Lock()


def get_store(settings: Settings) -> Store:
    """This process's store, opened on first use and shared by its threads."""
    global _store
    if _store is None:
        with _store_lock:
            if _store is None:
                _store = open_store(settings)
    return _store


class _Guarded:
    """One connection per process, shared by its threads one call at a time.

    A forked process (a prefork pool child) must not use its parent's
    connection, so the connection is reopened when the pid changes. A call
    that fails on a dropped connection is tried once more on a new one;
    what still fails raises :class:`StoreError`.
    """

    location: str

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connection: Any = None
        self._pid = 0

    def _connect(self) -> Any:
        raise NotImplementedError

    def _disconnect(self, connection: Any) -> None:
        # It is being thrown away, whatever state it is in.
        with contextlib.suppress(Exception):
            connection.close()

    def _call(self, operation: Callable[[Any], T]) -> T:
        with self._lock:
            for attempt in (1, 2):
                try:
                    if self._connection is None or self._pid != os.getpid():
                        self._connection = self._connect()
                        self._pid = os.getpid()
                    return operation(self._connection)
                except Exception as exc:
                    if self._connection is not None and self._pid == os.getpid():
                        self._disconnect(self._connection)
                    self._connection = None
                    reason = self._reason(exc)
                    if attempt == 2 or not self._retryable(exc):
                        raise StoreError(
                            f"The store of delivered ids at {self.location} failed: "
                            f"{reason}"
                        ) from exc
                    logger.warning(
                        "The store of delivered ids at %s failed (%s); reconnecting.",
                        self.location,
                        reason,
                    )
        raise AssertionError("unreachable")  # pragma: no cover

    def _retryable(self, exc: Exception) -> bool:
        return True

    def _reason(self, exc: Exception) -> str:
        """The first line of a driver's error, without the URL's password."""
        lines = (str(exc) or type(exc).__name__).strip().splitlines()
        reason = lines[0] if lines else type(exc).__name__
        url = getattr(self, "url", None)
        return reason.replace(url, self.location) if url else reason

    def close(self) -> None:
        with self._lock:
            if self._connection is not None and self._pid == os.getpid():
                self._disconnect(self._connection)
            self._connection = None


class _SQLStore(_Guarded):
    """Records in a table ``(key, value, expires)``, one statement per call.

    SQLite and PostgreSQL speak the same upsert; they differ in the driver's
    placeholder and in how a text counter is added to.
    """

    TABLE: str
    PLACEHOLDER: str
    #: The counter's next value, from the existing row ``r``.
    NEXT_COUNT: str

    def __init__(self, ttl_s: float) -> None:
        super().__init__()
        self.ttl_s = ttl_s
        self._writes = 0
        # Only the class's own table name and the driver's placeholder are
        # formatted in; every value is a bound parameter.
        table, p = self.TABLE, self.PLACEHOLDER
        self._select = f"SELECT value FROM {table} WHERE key = {p} AND expires > {p}"  # noqa: S608
        self._upsert = (
            f"INSERT INTO {table} (key, value, expires) VALUES ({p}, {p}, {p}) "  # noqa: S608
            "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
            "expires = excluded.expires"
        )
        # An expired counter starts again at one.
        self._count = (
            f"INSERT INTO {table} AS r (key, value, expires) VALUES ({p}, '1', {p}) "  # noqa: S608
            f"ON CONFLICT (key) DO UPDATE SET value = CASE WHEN r.expires > {p} "
            f"THEN {self.NEXT_COUNT} ELSE '1' END, expires = excluded.expires "
            "RETURNING value"
        )
        self._purge = f"DELETE FROM {table} WHERE expires <= {p}"  # noqa: S608
        self._delete = f"DELETE FROM {table} WHERE key = {p}"  # noqa: S608

    def get(self, key: str) -> str | None:
        row = self._call(
            lambda db: db.execute(self._select, (key, time.time())).fetchone()
        )
        return None if row is None else str(row[0])

    def put(self, key: str, value: str) -> None:
        def write(db: Any) -> None:
            now = time.time()
            db.execute(self._upsert, (key, value, now + self.ttl_s))
            self._writes += 1
            if self._writes % PURGE_EVERY == 0:
                db.execute(self._purge, (now,))

        self._call(write)

    def increment(self, key: str) -> int:
        def add_one(db: Any) -> int:
            now = time.time()
            return int(
                db.execute(self._count, (key, now + self.ttl_s, now)).fetchone()[0]
            )

        return self._call(add_one)

    def forget(self, *keys: str) -> None:
        def delete(db: Any) -> None:
            for key in keys:
                db.execute(self._delete, (key,))

        self._call(delete)


class SQLiteStore(_SQLStore):
    """Records in an SQLite file, shared by the worker processes of one machine.

    Each thread reads through a connection of its own: with write-ahead
    logging, readers never wait for each other or for a writer. Writes
    share one connection per process and take turns at a lock here,
    rather than in SQLite's busy handler, which sleeps for milliseconds
    between tries; between processes, that handler is what makes them
    take turns.
    """

    TABLE = "records"
    PLACEHOLDER = "?"
    NEXT_COUNT = "CAST(CAST(r.value AS INTEGER) + 1 AS TEXT)"

    def __init__(self, path: Path, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.path = path
        self.location = str(path)
        self._readers = threading.local()

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Autocommit: each statement is its own short transaction. The
        # generous timeout lets the processes of several workers take turns
        # at the write lock.
        db = sqlite3.connect(
            self.path, timeout=30, isolation_level=None, check_same_thread=False
        )
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=NORMAL")
        db.execute(
            "CREATE TABLE IF NOT EXISTS records ("
            " key TEXT PRIMARY KEY, value TEXT NOT NULL, expires REAL NOT NULL"
            ") WITHOUT ROWID"
        )
        db.execute("CREATE INDEX IF NOT EXISTS records_expires ON records (expires)")
        return db

    def _retryable(self, exc: Exception) -> bool:
        # A full disk or a corrupt file does not heal by reconnecting.
        return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)

    def _reader(self) -> sqlite3.Connection:
        readers = self._readers
        if getattr(readers, "pid", None) != os.getpid():
            if self._connection is None or self._pid != os.getpid():
                # The first use in this process creates the file and table.
                self._call(lambda db: None)
            readers.db = sqlite3.connect(self.path, timeout=30, isolation_level=None)
            readers.pid = os.getpid()
        db: sqlite3.Connection = readers.db
        return db

    def get(self, key: str) -> str | None:
        try:
            row = self._reader().execute(self._select, (key, time.time())).fetchone()
        except sqlite3.Error as exc:
            self._readers.pid = None
            raise StoreError(
                f"The store of delivered ids at {self.location} failed: "
                f"{self._reason(exc)}"
            ) from exc
        return None if row is None else str(row[0])


class RedisStore(_Guarded):
    """Records as Redis keys that expire by themselves."""

    PREFIX = "notifications:"

    def __init__(self, url: str, ttl_s: float) -> None:
        super().__init__()
        self.url = url
        self.ttl_ms = max(1, int(ttl_s * 1000))
        self.location = mask_url(url)

    def _connect(self) -> Any:
        try:
            import redis
        except ImportError:
            raise StoreError(
                "NOTIFICATIONS_STORE_URL names Redis, but the redis package is "
                "missing: pip install 'notifications[redis]'."
            ) from None
        return redis.Redis.from_url(self.url, socket_timeout=10, socket_connect_timeout=5)

    def get(self, key: str) -> str | None:
        value = self._call(lambda r: r.get(self.PREFIX + key))
        return None if value is None else bytes(value).decode()

    def put(self, key: str, value: str) -> None:
        self._call(lambda r: r.set(self.PREFIX + key, value, px=self.ttl_ms))

    def increment(self, key: str) -> int:
        def add_one(r: Any) -> int:
            pipe = r.pipeline(transaction=True)
            pipe.incr(self.PREFIX + key)
            pipe.pexpire(self.PREFIX + key, self.ttl_ms)
            return int(pipe.execute()[0])

        return self._call(add_one)

    def forget(self, *keys: str) -> None:
        if keys:
            self._call(lambda r: r.delete(*(self.PREFIX + key for key in keys)))


class PostgresStore(_SQLStore):
    """Records in a PostgreSQL table, ``notifications_delivered``."""

    TABLE = "notifications_delivered"
    PLACEHOLDER = "%s"
    NEXT_COUNT = "(r.value::integer + 1)::text"

    def __init__(self, url: str, ttl_s: float) -> None:
        super().__init__(ttl_s)
        self.url = "postgresql://" + url.split("://", 1)[1]
        self.location = mask_url(url)

    def _connect(self) -> Any:
        try:
            import psycopg
        except ImportError:
            raise StoreError(
                "NOTIFICATIONS_STORE_URL names PostgreSQL, but psycopg is missing: "
                "pip install 'notifications[postgres]'."
            ) from None
        connection = psycopg.connect(self.url, autocommit=True, connect_timeout=5)
        connection.execute(
            "CREATE TABLE IF NOT EXISTS notifications_delivered ("
            " key TEXT PRIMARY KEY, value TEXT NOT NULL,"
            " expires DOUBLE PRECISION NOT NULL)"
        )
        connection.execute(
            "CREATE INDEX IF NOT EXISTS notifications_delivered_expires "
            "ON notifications_delivered (expires)"
        )
        return connection


__all__ = [
    "DEAD_LETTERED",
    "DELIVERED",
    "PostgresStore",
    "RedisStore",
    "SQLiteStore",
    "Store",
    "StoreError",
    "get_store",
    "open_store",
    "redelivery_key",
    "target_key",
]
