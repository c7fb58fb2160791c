"""Settings read from the environment and from ``.env``.

Real environment variables win over the ``.env`` file in the working
directory. Nothing here mutates ``os.environ``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from dotenv import dotenv_values
from kombu.utils.url import maybe_sanitize_url

from notifications.errors import ConfigurationError

DEFAULT_GROUPS = ("hr", "marketing", "support")
DEFAULT_EXCHANGE = "slack_notifications_direct"
DEFAULT_MAX_TEXT_BYTES = 64 * 1024
DEFAULT_PUBLISH_TIMEOUT_S = 5.0

#: Group names become routing keys and queue names; keep them to a set
#: that is safe in both, in file names (embedded broker) and in shells.
GROUP_NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
GROUP_NAME_RULE = (
    "lowercase letters, digits, '-' and '_', starting with a letter or "
    "digit, at most 64 characters"
)
EXCHANGE_NAME_RE = re.compile(r"^[A-Za-z0-9_.:-]{1,255}$")

QUEUE_SUFFIX = "_queue"


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

    duplicates = sorted({g for g in groups if groups.count(g) > 1})
    if duplicates:
        raise ConfigurationError(
            f"NOTIFICATION_GROUPS lists {', '.join(duplicates)} more than once."
        )
    return groups


def _positive_number(environ: Mapping[str, str], name: str, default: float) -> float:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        value = float(raw)
    except ValueError:
        raise ConfigurationError(
            f"{name}={raw!r} is not a number: give a positive number."
        ) from None
    if not value > 0:
        raise ConfigurationError(f"{name}={raw!r} must be greater than 0.")
    return value


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
    """

    groups: tuple[str, ...] = DEFAULT_GROUPS
    exchange_name: str = DEFAULT_EXCHANGE
    broker_url: str | None = None
    data_dir: Path = field(default_factory=lambda: default_data_dir(os.environ))
    max_text_bytes: int = DEFAULT_MAX_TEXT_BYTES
    publish_timeout_s: float = DEFAULT_PUBLISH_TIMEOUT_S

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

    max_text_bytes = int(
        _positive_number(env, "NOTIFICATIONS_MAX_TEXT_BYTES", DEFAULT_MAX_TEXT_BYTES)
    )
    publish_timeout_s = _positive_number(
        env, "NOTIFICATIONS_PUBLISH_TIMEOUT_S", DEFAULT_PUBLISH_TIMEOUT_S
    )

    return Settings(
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
