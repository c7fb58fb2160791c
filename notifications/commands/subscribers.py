"""``notifications subscribers``: who gets each group's notifications, and a test."""

from __future__ import annotations

import uuid

import click

from notifications.commands.common import fail, settings_or_fail
from notifications.errors import NotificationsError, PermanentDeliveryError
from notifications.message import Notification, check_group, check_text, check_title
from notifications.settings import Settings
from notifications.subscribers import Subscribers, classify

#: What ``subscribers list`` and ``subscribers test`` say when the variable
#: is missing; the example file ships next to the README.
SUBSCRIBERS_NOT_SET = (
    "NOTIFICATIONS_SUBSCRIBERS is not set, so there are no subscribers: set it "
    "to the path of an Apprise configuration file whose tags are group names "
    "(see subscribers.example.yml)."
)


def known_group(settings: Settings, group: str) -> str:
    try:
        return check_group(settings, group)
    except NotificationsError as exc:
        fail(exc)


def load_subscribers(settings: Settings) -> Subscribers:
    if settings.subscribers_file is None:
        fail(SUBSCRIBERS_NOT_SET)
    try:
        return Subscribers.load(settings.subscribers_file, settings.groups)
    except NotificationsError as exc:
        fail(exc)


def fate_without_subscribers(settings: Settings) -> str:
    if settings.delivery is not None:
        return f"notifications go to NOTIFICATIONS_DELIVERY={settings.delivery}"
    return "notifications are only logged"


@click.group()
def subscribers() -> None:
    """Show who gets each group's notifications, and send them a test."""


@subscribers.command("list")
@click.argument("group", required=False)
def list_subscribers(group: str | None) -> None:
    """Print the subscribers of every group (or of GROUP), secrets masked."""
    settings = settings_or_fail()
    groups = [known_group(settings, group)] if group else list(settings.groups)
    if settings.subscribers_file is None:
        # Not an error: without subscribers the workers still run and log.
        click.echo(SUBSCRIBERS_NOT_SET)
        return

    loaded = load_subscribers(settings)

    click.echo(f"Subscribers in {settings.subscribers_file}:")
    if settings.delivery is not None:
        # The workers would not send to anyone listed here.
        click.echo(
            f"NOTIFICATIONS_DELIVERY={settings.delivery} is set: workers deliver "
            "through it, not to these subscribers."
        )
    for name in groups:
        targets = loaded.for_group(name)
        if not targets:
            click.echo(f"{name}: no subscribers: {fate_without_subscribers(settings)}")
            continue
        click.echo(f"{name}:")
        for target in targets:
            unusable = f"  (unusable: {target.broken})" if target.broken else ""
            click.echo(f"  {target.masked_url}{unusable}")


@subscribers.command("test")
@click.argument("group")
@click.option("--text", help="Text to send [default: a line naming GROUP].")
@click.option(
    "--title", default="Test notification", show_default=True, help="Title to send."
)
def send_test(group: str, text: str | None, title: str) -> None:
    """Send a test notification to every subscriber of GROUP, from here.

    It goes through no broker and no worker, so it shows whether the
    subscribers' URLs work. The exit status is 0 only if all of them got it.
    """
    settings = settings_or_fail()
    group = known_group(settings, group)
    try:
        default_text = f"Test notification for {group}."
        checked_text = check_text(settings, default_text if text is None else text)
        checked_title = check_title(title)
    except NotificationsError as exc:
        fail(exc)

    targets = load_subscribers(settings).for_group(group)
    if not targets:
        fail(
            f"Group {group!r} has no subscribers in {settings.subscribers_file}: "
            f"tag an entry with {group} to add one."
        )

    notification = Notification(
        f"test-{uuid.uuid4()}", group, checked_text, checked_title
    )
    failed = 0
    for target in targets:
        delivered, report = target.send(notification)
        if delivered:
            click.echo(f"[✅] delivered to {target.masked_url}")
            continue
        failed += 1
        kind = "permanent" if classify(report) is PermanentDeliveryError else "transient"
        click.echo(f"[❌] {target.masked_url}: {report or 'failed'} ({kind})")

    if failed:
        fail(f"{failed} of {len(targets)} subscribers of {group!r} did not get it.")
    click.echo(f"All {len(targets)} subscribers of {group!r} got it.")
