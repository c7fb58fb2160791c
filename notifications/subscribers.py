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
An entry Apprise cannot use at all (a malformed URL, an unknown service)
is kept as a broken target of its groups: the worker warns about it at
start-up, and each notification for it is dead-lettered with the reason,
so nobody's notification vanishes without a trace.
"""

from __future__ import annotations

import functools
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
    """One subscriber URL; ``target_id`` is stable, ``masked_url`` shows no secret.

    ``broken`` holds why Apprise cannot use the URL; such a target is never
    sent to, and its notifications are dead-lettered.
    """

    target_id: str
    masked_url: str
    service: Any
    broken: str | None = None

    def send(self, notification: Notification) -> tuple[bool, str]:
        """Send ``notification``; return (delivered, what Apprise reported)."""
        if self.broken is not None:
            return False, self.broken
        result = self._notifier.notify(
            body=notification.text, title=notification.title or ""
        )
        messages = [entry.message for r in result for entry in r.logs()]
        return bool(result), " ".join(messages)

    @functools.cached_property
    def _notifier(self) -> Any:
        # Built once per target, not per notification: only this target, so
        # its result is reported apart from the others'.
        import apprise

        one = apprise.Apprise(asset=_asset())
        one.add(self.service)
        return one


def _asset() -> Any:
    """Apprise's settings for workers: send in the calling thread.

    A worker's threads already send many notifications at once. Left to
    itself, Apprise hands each send that has a deadline (its
    ``service_timeout``, 60 s by default) to one process-wide pool of
    min(32, cores + 4) threads: 6 on two cores, which capped a worker of
    32 threads at 6 deliveries in flight. Without that deadline a send
    runs in the worker's thread, still bounded by the service's own
    connect and read timeouts.
    """
    import apprise

    return apprise.AppriseAsset(async_mode=False, service_timeout=0)


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
            config = apprise.AppriseConfig(asset=_asset())
            config.add(str(path))
            everyone = apprise.Apprise(asset=_asset())
            everyone.add(config)
            loaded = list(everyone)
        problems = [
            _mask_secrets(line.split(" - ", 2)[-1])
            for line in captured.getvalue().splitlines()
            if line.strip()
        ]

        targets: dict[str, list[Target]] = {group: [] for group in groups}
        usable = {service.url(privacy=False) for service in loaded}
        entries = [
            Target(_target_id(service), service.url(privacy=True), service)
            for service in loaded
        ]
        tags_of = {
            t.target_id: sorted(str(tag) for tag in t.service.tags) for t in entries
        }
        for url, tags in _raw_entries(path):
            if _is_loaded(url, usable):
                continue
            reason = next(
                (p for p in problems if _scheme(url) in p),
                problems[0] if problems else "Apprise cannot load it",
            )
            broken = Target(
                target_id=_hash(url),
                masked_url=_mask_secrets(url),
                service=None,
                broken=f"Apprise cannot use this subscriber URL ({reason}).",
            )
            entries.append(broken)
            tags_of[broken.target_id] = sorted(tags)

        for target in entries:
            target_tags = tags_of[target.target_id]
            unknown = [tag for tag in target_tags if tag not in targets]
            if not target_tags or unknown:
                # An untagged or mistagged subscriber would never be notified.
                what = f"tag {unknown[0]!r}" if unknown else "no tag"
                raise ConfigurationError(
                    f"Subscriber {target.masked_url} in {str(path)!r} has {what}: "
                    f"tag it with one or more of {', '.join(targets)}."
                )
            for tag in target_tags:
                targets[tag].append(target)
        return cls(targets)

    def for_group(self, group: str) -> list[Target]:
        return list(self._targets.get(group, []))

    @property
    def groups(self) -> dict[str, list[Target]]:
        return {group: list(targets) for group, targets in self._targets.items()}

    @property
    def broken(self) -> list[Target]:
        """Targets Apprise cannot use, once each."""
        seen: dict[str, Target] = {}
        for targets in self._targets.values():
            for target in targets:
                if target.broken is not None:
                    seen.setdefault(target.target_id, target)
        return list(seen.values())


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


def _hash(url: str) -> str:
    import hashlib

    # The full URL (secrets included) identifies the target; only a hash of
    # it is ever stored or shown.
    return hashlib.sha256(url.encode("utf-8")).hexdigest()[:16]


def _target_id(service: Any) -> str:
    return _hash(service.url(privacy=False))


def _scheme(url: str) -> str:
    return url.split("://", 1)[0] + "://" if "://" in url else url


def _is_loaded(url: str, usable: set[str]) -> bool:
    """Whether Apprise loaded ``url`` (it rewrites URLs, so compare its form)."""
    import apprise

    with apprise.LogCapture(level=logging.CRITICAL):
        service = apprise.Apprise.instantiate(url)
    return service is not None and service.url(privacy=False) in usable


def _raw_entries(path: Path) -> list[tuple[str, tuple[str, ...]]]:
    """(url, tags) of every entry as written, for the ones Apprise rejects.

    Apprise drops an entry it cannot parse, tags and all; reading the file
    again finds the groups such an entry was meant for.
    """
    text = path.read_text(encoding="utf-8")
    if path.suffix.lower() in {".yml", ".yaml"} or re.match(
        r"\s*(version|urls)\s*:", text
    ):
        return _raw_yaml_entries(text)
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        head, sep, rest = line.partition("=")
        # "tags=url", or a bare URL (whose query may hold "=" too).
        tags, url = (head, rest) if sep and "://" not in head else ("", line)
        entries.append((url.strip(), _split_tags(tags)))
    return entries


def _raw_yaml_entries(text: str) -> list[tuple[str, tuple[str, ...]]]:
    import yaml

    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError:
        return []
    if not isinstance(data, dict):
        return []
    common = _split_tags(data.get("tag") or data.get("tags"))
    entries = []
    for item in data.get("urls") or []:
        if isinstance(item, str):
            entries.append((item, common))
        elif isinstance(item, dict):
            for url, options in item.items():
                listed = options if isinstance(options, list) else [options]
                tags = set(common)
                for option in listed:
                    if isinstance(option, dict):
                        tags |= set(_split_tags(option.get("tag") or option.get("tags")))
                entries.append((str(url), tuple(sorted(tags))))
    return entries


def _split_tags(raw: object) -> tuple[str, ...]:
    if isinstance(raw, (list, tuple)):
        raw = ",".join(str(r) for r in raw)
    if not raw:
        return ()
    return tuple(t.lower() for t in re.split(r"[\s,]+", str(raw)) if t)
