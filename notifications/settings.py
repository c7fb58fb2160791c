"""Settings read from the environment and from ``.env``.

Real environment variables win over the ``.env`` file in the working
directory. Nothing here mutates ``os.environ``.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from dotenv import dotenv_values
from kombu.utils.url import maybe_sanitize_url

from notifications.errors import ConfigurationError

DEFAULT_GROUPS = ("hr", "marketing", "support")
DEFAULT_EXCHANGE = "slack_notifications_direct"
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
DEFAULT_PUBLISH_TIMEOUT_S = 5.0
DEFAULT_MAX_RETRIES = 5
DEFAULT_RETRY_BACKOFF_S = 1.0
DEFAULT_RETRY_BACKOFF_MAX_S = 300.0
DEFAULT_MAX_REDELIVERIES = 3
DEFAULT_DEDUP_TTL_S = 7 * 24 * 3600.0
#: Celery's retry countdown keeps the retried message unacknowledged in the
#: worker until it is due; RabbitMQ closes a channel whose delivery stays
#: unacknowledged for 30 minutes (consumer_timeout), so stay well below.
MAX_RETRY_BACKOFF_S = 900.0

#: Group names become routing keys and queue names; keep them to a set
#: that is safe in both, in file names (embedded broker) and in shells.
GROUP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
GROUP_NAME_RULE = (
    "lowercase letters, digits, '-' and '_', starting with a letter or "
    "digit, at most 64 characters"
)
EXCHANGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")

QUEUE_SUFFIX = "_queue"
DEAD_LETTER_SUFFIX = "_dead_letter"
#: Routing key of dead letters whose group is unknown. Group names start
#: with a letter or digit, so this can never be a group.
UNROUTED = "_unrouted"


def mask_url(url: str) -> str:
    """Return ``url`` with its password replaced by ``**``."""
    return str(maybe_sanitize_url(url, mask="**"))


def default_data_dir(environ: Mapping[str, str]) -> Path:
    """Return the per-user folder the embedded broker keeps its messages in.

    It depends on the user only, never on the working directory, so a
    sender and every worker started by the same user meet there.
    """
    xdg = environ.get("XDG_DATA_HOME")
    home = Path(environ["HOME"]) if environ.get("HOME") else Path.home()
    base = Path(xdg) if xdg else home / ".local" / "share"
    return base / "notifications"


def parse_groups(raw: str) -> tuple[str, ...]:
    """Parse a comma-separated list of group names.

    Raises
    ------
    ConfigurationError
        If the list is empty, has duplicates or a name breaks the rules.
    """
    groups = tuple(part.strip() for part in raw.split(",") if part.strip())
    if not groups:
        raise ConfigurationError(
            "NOTIFICATION_GROUPS is empty: list at least one group, "
            "e.g. NOTIFICATION_GROUPS=hr,marketing,support."
        )

    for group in groups:
        if not GROUP_NAME_RE.match(group):
            raise ConfigurationError(
                f"NOTIFICATION_GROUPS has an invalid group name {group!r}: "
                f"use {GROUP_NAME_RULE}."
            )

    if "unrouted" in groups:
        # Its dead-letter queue would be the one of messages with no group.
        raise ConfigurationError(
            "NOTIFICATION_GROUPS may not name a group 'unrouted': that name is "
            "reserved for dead letters whose group is unknown."
        )

    duplicates = sorted({g for g in groups if groups.count(g) > 1})
    if duplicates:
        raise ConfigurationError(
            f"NOTIFICATION_GROUPS lists {', '.join(duplicates)} more than once."
        )
    return groups


_N = TypeVar("_N", int, float)


def _number(
    environ: Mapping[str, str],
    name: str,
    default: _N,
    parse: Callable[[str], _N],
    allowed: str,
    ok: Callable[[_N], bool],
) -> _N:
    """``name`` read with ``parse``; ``default`` when unset or blank."""
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = parse(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a number: give {allowed}."
        ) from None
    if not ok(value):
        raise ConfigurationError(f"{name}={raw!r} is not allowed: give {allowed}.")
    return value


def _positive_number(environ: Mapping[str, str], name: str, default: float) -> float:
    return _number(
        environ,
        name,
        default,
        float,
        "a number greater than 0",
        lambda value: value > 0 and math.isfinite(value),
    )


def _whole_number(environ: Mapping[str, str], name: str, default: int, least: int) -> int:
    return _number(
        environ,
        name,
        default,
        int,
        f"a whole number, {least} or more",
        lambda value: value >= least,
    )


@dataclass(frozen=True)
class Settings:
    """Everything the pipeline reads from its environment.

    Parameters
    ----------
    groups:
        The notification groups; each gets a queue ``<group>_queue``.
    exchange_name:
        Name of the direct exchange every notification is published to.
    broker_url:
        The broker URL, or ``None`` for the embedded broker.
    data_dir:
        Folder of the embedded broker (and later of other local state).
    max_text_bytes:
        Largest accepted notification text, in UTF-8 bytes.
    publish_timeout_s:
        How long a sender waits for an unreachable broker before raising.
    store_url:
        Where workers record delivered notification ids (``sqlite:///``,
        ``redis://`` or ``postgresql://``); ``None`` for SQLite in
        ``data_dir``.
    max_retries:
        Retries of a delivery that failed transiently before it is
        dead-lettered.
    retry_backoff_s:
        Wait before the first retry, in seconds; it doubles with each retry.
    retry_backoff_max_s:
        Longest wait between two retries, in seconds.
    max_redeliveries:
        How often a notification may come back after its worker died before
        it is dead-lettered.
    dedup_ttl_s:
        How long a delivered id is remembered, in seconds.
    delivery:
        ``module:attribute`` of the delivery workers use; ``None`` for the
        default: the group's subscribers, else a log line.
    subscribers_file:
        Apprise configuration file (YAML or TEXT) listing each group's
        subscribers by tag; ``None`` when every notification is only logged.
    ca_file:
        PEM file of the CA that signed the broker's TLS certificate, for
        ``amqps://`` to a broker with a private CA; ``None`` for the
        system's trusted CAs.
    """

    groups: tuple[str, ...] = DEFAULT_GROUPS
    exchange_name: str = DEFAULT_EXCHANGE
    broker_url: str | None = None
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S
    store_url: str | None = None
    max_retries: int = DEFAULT_MAX_RETRIES
    retry_backoff_s: float = DEFAULT_RETRY_BACKOFF_S
    retry_backoff_max_s: float = DEFAULT_RETRY_BACKOFF_MAX_S
    max_redeliveries: int = DEFAULT_MAX_REDELIVERIES
    dedup_ttl_s: float = DEFAULT_DEDUP_TTL_S
    delivery: str | None = None
    subscribers_file: Path | None = None
    ca_file: Path | None = None

    @property
    def amqp(self) -> bool:
        """True for an AMQP 0-9-1 broker (RabbitMQ, LavinMQ, CloudAMQP)."""
        return self.effective_broker_url.split("://", 1)[0] in {"amqp", "amqps", "pyamqp"}

    @property
    def masked_store_url(self) -> str:
        """Where delivered ids are kept, with any password masked."""
        if self.store_url is None:
            return f"sqlite:///{self.data_dir / 'delivered.sqlite3'}"
        return mask_url(self.store_url)

    def dead_letter_queue_name(self, group: str) -> str:
        return f"{group.lstrip('_')}{DEAD_LETTER_SUFFIX}"

    @property
    def dead_letter_exchange_name(self) -> str:
        return f"{self.exchange_name}.dead_letter"

    @property
    def embedded(self) -> bool:
        """True when no broker URL is set and the embedded broker serves."""
        return self.broker_url is None

    @property
    def embedded_dir(self) -> Path:
        """Folder holding the embedded broker's queues and bindings."""
        return self.data_dir / "broker"

    @property
    def effective_broker_url(self) -> str:
        return self.broker_url or "filesystem://"

    @property
    def masked_broker_url(self) -> str:
        if self.broker_url is None:
            return f"embedded broker in {self.embedded_dir}"
        return mask_url(self.broker_url)

    def queue_name(self, group: str) -> str:
        return f"{group}{QUEUE_SUFFIX}"

    @property
    def queue_names(self) -> tuple[str, ...]:
        return tuple(self.queue_name(group) for group in self.groups)


def read_environment(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> dict[str, str]:
    """Merge ``.env`` from ``cwd`` under the real environment."""
    environ = os.environ if environ is None else environ
    dotenv_path = (cwd or Path.cwd()) / ".env"
    merged: dict[str, str] = {}
    if dotenv_path.is_file():
        merged.update(
            {k: v for k, v in dotenv_values(dotenv_path).items() if v is not None}
        )
    merged.update(environ)
    return merged


def load_settings(
    environ: Mapping[str, str] | None = None, cwd: Path | None = None
) -> Settings:
    """Build :class:`Settings` from the environment and ``.env``.

    Raises
    ------
    ConfigurationError
        If a variable holds a value that is not allowed.
    """
    env = read_environment(environ, cwd)

    groups = parse_groups(env.get("NOTIFICATION_GROUPS", ",".join(DEFAULT_GROUPS)))

    exchange_name = env.get("NOTIFICATIONS_EXCHANGE", "").strip() or DEFAULT_EXCHANGE
    if not EXCHANGE_NAME_RE.match(exchange_name) or exchange_name.startswith("amq."):
        raise ConfigurationError(
            f"NOTIFICATIONS_EXCHANGE={exchange_name!r} is not a usable exchange "
            "name: use letters, digits, '_', '-', '.', ':' (not starting with "
            "'amq.')."
        )

    # Celery itself prefers CELERY_BROKER_URL from the environment, so
    # that variable must win here too or the two would disagree.
    broker_url = (
        env.get("CELERY_BROKER_URL", "").strip()
        or env.get("CLOUDAMQP_URL", "").strip()
        or None
    )
    if broker_url is not None and "://" not in broker_url:
        # Without a scheme the URL cannot be parsed, so neither can its
        # password be masked: do not echo it.
        raise ConfigurationError(
            "The broker URL (CELERY_BROKER_URL / CLOUDAMQP_URL) has no scheme: "
            "use e.g. amqp://user:password@host:5672/vhost or amqps://..."
        )

    data_dir_raw = env.get("NOTIFICATIONS_DATA_DIR", "").strip()
    data_dir = Path(data_dir_raw).expanduser() if data_dir_raw else default_data_dir(env)

    max_text_bytes = _whole_number(
        env, "NOTIFICATIONS_MAX_TEXT_BYTES", DEFAULT_MAX_TEXT_BYTES, 1
    )
    publish_timeout_s = _positive_number(
        env, "NOTIFICATIONS_PUBLISH_TIMEOUT_S", DEFAULT_PUBLISH_TIMEOUT_S
    )

    store_url = env.get("NOTIFICATIONS_STORE_URL", "").strip() or None
    if store_url is not None and not store_url.startswith(
        ("sqlite://", "redis://", "rediss://", "postgresql://", "postgres://")
    ):
        raise ConfigurationError(
            "NOTIFICATIONS_STORE_URL must start with sqlite://, redis://, rediss:// "
            "or postgresql://."
        )
    max_retries = _whole_number(env, "NOTIFICATIONS_MAX_RETRIES", DEFAULT_MAX_RETRIES, 0)
    max_redeliveries = _whole_number(
        env, "NOTIFICATIONS_MAX_REDELIVERIES", DEFAULT_MAX_REDELIVERIES, 0
    )
    retry_backoff_max_s = _positive_number(
        env, "NOTIFICATIONS_RETRY_BACKOFF_MAX_S", DEFAULT_RETRY_BACKOFF_MAX_S
    )
    if retry_backoff_max_s > MAX_RETRY_BACKOFF_S:
        raise ConfigurationError(
            f"NOTIFICATIONS_RETRY_BACKOFF_MAX_S={retry_backoff_max_s:g} is too long: at "
            f"most {MAX_RETRY_BACKOFF_S:g} s, so a waiting retry never trips the "
            "broker's consumer timeout."
        )
    retry_backoff_s = _positive_number(
        env, "NOTIFICATIONS_RETRY_BACKOFF_S", DEFAULT_RETRY_BACKOFF_S
    )
    dedup_ttl_s = _positive_number(env, "NOTIFICATIONS_DEDUP_TTL_S", DEFAULT_DEDUP_TTL_S)

    delivery = env.get("NOTIFICATIONS_DELIVERY", "").strip() or None
    if delivery is not None and not re.match(r"^[\w.]+:[\w.]+$", delivery):
        raise ConfigurationError(
            f"NOTIFICATIONS_DELIVERY={delivery!r} must look like package.module:name."
        )

    ca_file_raw = env.get("NOTIFICATIONS_CA_FILE", "").strip()
    ca_file = Path(ca_file_raw).expanduser() if ca_file_raw else None
    if ca_file is not None and not ca_file.is_file():
        raise ConfigurationError(
            f"NOTIFICATIONS_CA_FILE={ca_file_raw!r} is not a file: give the path of "
            "the PEM file holding the broker's CA certificate."
        )

    subscribers_raw = env.get("NOTIFICATIONS_SUBSCRIBERS", "").strip()
    subscribers_file = Path(subscribers_raw).expanduser() if subscribers_raw else None

    return Settings(
        subscribers_file=subscribers_file,
        delivery=delivery,
        ca_file=ca_file,
        store_url=store_url,
        max_retries=max_retries,
        max_redeliveries=max_redeliveries,
        retry_backoff_s=retry_backoff_s,
        retry_backoff_max_s=retry_backoff_max_s,
        dedup_ttl_s=dedup_ttl_s,
        groups=groups,
        exchange_name=exchange_name,
        broker_url=broker_url,
        data_dir=data_dir,
        max_text_bytes=max_text_bytes,
        publish_timeout_s=publish_timeout_s,
    )


_current: Settings | None = None


def get_settings() -> Settings:
    """The settings of this process, read once from the environment."""
    global _current
    if _current is None:
        _current = load_settings()
    return _current
