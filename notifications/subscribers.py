"""Subscribers: who gets a group's notifications, through Apprise.

A subscriber is an Apprise URL (Slack, e-mail, a JSON webhook…) tagged
with the groups it wants, in an Apprise configuration file (YAML or TEXT)
named by ``NOTIFICATIONS_SUBSCRIBERS``. A worker sends each notification
to every subscriber tagged with its group, one target at a time, and
remembers per (notification, target) what was delivered, so a retry after
one target failed never sends again to the targets that already got it.

Failures are sorted by what Apprise reports for the target: a connection
error, a timeout, HTTP 5xx or 429 is transient and retried with backoff;
any other HTTP 4xx is permanent and the target is dead-lettered at once.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from notifications.errors import (
    ConfigurationError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from notifications.message import Notification

logger = logging.getLogger(__name__)

_STATUS_RE = re.compile(r"\berror=(\d{3})\b|\b(\d{3}) (?:error|status)\b", re.IGNORECASE)
_TRANSIENT_WORDS = ("connection error", "timed out", "timeout", "temporarily")


@dataclass(frozen=True)
class Target:
    """One subscriber URL; ``target_id`` is stable, ``masked_url`` shows no secret."""

    target_id: str
    masked_url: str
    service: Any

    def send(self, notification: Notification) -> tuple[bool, str]:
        """Send ``notification``; return (delivered, what Apprise reported)."""
        import apprise

        one = apprise.Apprise()
        one.add(self.service)
        result = one.notify(body=notification.text, title=notification.title or "")
        messages = [entry.message for r in result for entry in r.logs()]
        return bool(result), " ".join(messages)


def classify(report: str) -> type[TransientDeliveryError] | type[PermanentDeliveryError]:
    """Transient for connection trouble, 5xx and 429; permanent for other 4xx."""
    found = _STATUS_RE.search(report)
    if found:
        status = int(found.group(1) or found.group(2))
        if status == 429 or status >= 500:
            return TransientDeliveryError
        if 400 <= status < 500:
            return PermanentDeliveryError
    return TransientDeliveryError


class Subscribers:
    """The targets of every group, loaded from an Apprise configuration file."""

    def __init__(self, targets: dict[str, list[Target]]) -> None:
        self._targets = targets

    @classmethod
    def load(cls, path: Path, groups: Iterable[str]) -> Subscribers:
        """Load ``path``.

        Raises
        ------
        ConfigurationError
            If the file cannot be read, or an entry is a malformed URL or
            an unknown service: such a subscriber would silently never be
            notified, so the worker refuses to start instead.
        """
        import apprise

        if not path.is_file():
            raise ConfigurationError(
                f"NOTIFICATIONS_SUBSCRIBERS={str(path)!r} is not a file: give the path "
                "of an Apprise configuration file (YAML or TEXT)."
            )
        with apprise.LogCapture(level=logging.ERROR) as captured:
            config = apprise.AppriseConfig()
            config.add(str(path))
            everyone = apprise.Apprise()
            everyone.add(config)
            loaded = list(everyone)
        problems = [line for line in captured.getvalue().splitlines() if line.strip()]
        if problems:
            detail = _mask_secrets(problems[0].split(" - ", 2)[-1])
            raise ConfigurationError(
                f"Subscribers file {str(path)!r} has an entry Apprise cannot use "
                f"({detail}); fix or remove it."
            )

        targets: dict[str, list[Target]] = {group: [] for group in groups}
        for service in loaded:
            target = Target(
                target_id=_target_id(service),
                masked_url=service.url(privacy=True),
                service=service,
            )
            tags = sorted(str(tag) for tag in service.tags)
            unknown = [tag for tag in tags if tag not in targets]
            if not tags or unknown:
                # An untagged or mistagged subscriber would never be notified.
                what = f"tag {unknown[0]!r}" if unknown else "no tag"
                raise ConfigurationError(
                    f"Subscriber {target.masked_url} in {str(path)!r} has {what}: "
                    f"tag it with one or more of {', '.join(targets)}."
                )
            for tag in tags:
                targets[tag].append(target)
        return cls(targets)

    def for_group(self, group: str) -> list[Target]:
        return list(self._targets.get(group, []))

    @property
    def groups(self) -> dict[str, list[Target]]:
        return {group: list(targets) for group, targets in self._targets.items()}


_PASSWORD_IN_URL_RE = re.compile(r"(\w[\w+.-]*://[^:/@\s]*:)[^@\s]+@")


def _mask_secrets(text: str) -> str:
    """Hide passwords in URLs quoted by Apprise, which keeps two letters of them."""
    return _PASSWORD_IN_URL_RE.sub(r"\1**@", text)


class _MaskSecrets(logging.Filter):
    """Mask the passwords Apprise half-masks in its own log lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        masked = _mask_secrets(message)
        if masked != message:
            record.msg, record.args = masked, ()
        return True


logging.getLogger("apprise").addFilter(_MaskSecrets())


def _target_id(service: Any) -> str:
    import hashlib

    # The full URL (secrets included) identifies the target; only a hash of
    # it is ever stored or shown.
    return hashlib.sha256(service.url(privacy=False).encode("utf-8")).hexdigest()[:16]
