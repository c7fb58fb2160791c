"""The ``notifications`` command: send, run workers, run the demo, show the topology.

``notifications dead-letters`` lists and replays what could not be delivered;
``notifications subscribers`` shows who gets each group's notifications and
sends them a test.
"""

from __future__ import annotations

import sys
import uuid
from typing import Any, NoReturn

import click
from kombu.exceptions import ContentDisallowed, DecodeError

from notifications import dead_letter
from notifications.dead_letter import DeadLetter
from notifications.errors import NotificationsError, PermanentDeliveryError
from notifications.message import Notification, check_group, check_text, check_title
from notifications.settings import UNROUTED, Settings, get_settings
from notifications.subscribers import Subscribers, classify


def fail(message: object) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def settings_or_fail() -> Settings:
    try:
        return get_settings()
    except NotificationsError as exc:
        fail(exc)


@click.group()
@click.version_option(package_name="notifications")
def main() -> None:
    """Notifications routed by group through a direct exchange."""


@main.command()
@click.argument("group")
@click.argument("text")
@click.option("--title", help="Optional title, for services that show one.")
def send(group: str, text: str, title: str | None) -> None:
    """Send TEXT to GROUP and print the notification id."""
    settings_or_fail()
    from notifications import send_notification

    try:
        result = send_notification.delay(group, text, title=title)
    except (NotificationsError, TypeError, ValueError) as exc:
        fail(exc)
    click.echo(result.id)


@main.command(context_settings={"show_default": True})
@click.argument("groups", nargs=-1, required=True)
@click.option("-c", "--concurrency", type=int, help="Pool size [default: cores].")
@click.option("-P", "--pool", default="prefork", help="prefork, threads or solo.")
@click.option("-l", "--loglevel", default="INFO")
@click.option("-n", "--hostname", help="Node name [default: <groups>@<host>].")
def worker(
    groups: tuple[str, ...],
    concurrency: int | None,
    pool: str,
    loglevel: str,
    hostname: str | None,
) -> None:
    """Run a worker on the queues of GROUPS.

    The same as ``celery -A notifications worker -Q hr_queue``.
    """
    settings = settings_or_fail()
    unknown = [g for g in groups if g not in settings.groups]
    if unknown:
        fail(
            f"Unknown group {unknown[0]!r}: allowed groups are "
            f"{', '.join(settings.groups)}."
        )

    from notifications import app

    argv = [
        "worker",
        "-Q", ",".join(settings.queue_name(g) for g in groups),
        "-n", hostname or f"{'+'.join(groups)}@%h",
        "-P", pool,
        "-l", loglevel,
    ]  # fmt: skip
    if concurrency:
        argv += ["-c", str(concurrency)]
    app.worker_main(argv)


@main.command()
@click.option(
    "--timeout",
    "timeout_s",
    type=float,
    default=60.0,
    show_default=True,
    help="Seconds to wait for the workers and their messages.",
)
def demo(timeout_s: float) -> None:
    """Start a worker per group, send the tutorial's three messages, show who got what."""
    settings = settings_or_fail()
    from notifications.demo import run_demo

    try:
        code = run_demo(settings, timeout_s=timeout_s)
    except NotificationsError as exc:
        fail(exc)
    sys.exit(code)


@main.command()
def topology() -> None:
    """Print the exchange, queues and bindings this configuration declares."""
    from notifications.topology import describe

    click.echo(describe(settings_or_fail()))


#: What a user types for the dead letters whose group was not known.
UNROUTED_ARGUMENT = "unrouted"
#: Longest raw body shown by ``dead-letters list``; bodies of foreign
#: producers can be megabytes of binary.
SHOWN_BODY_CHARS = 200


class UnreplayableError(NotificationsError):
    """A dead letter has text, but not a notification this deployment accepts."""

    def __init__(self, letter: DeadLetter, reason: object) -> None:
        self.letter = letter
        super().__init__(reason)


def dead_letter_group(settings: Settings, group: str) -> str:
    """The routing key of the dead letters that ``group`` names on the command line."""
    if group in settings.groups:
        return group
    if group == UNROUTED_ARGUMENT:
        return UNROUTED
    fail(
        f"Unknown group {group!r}: allowed are {', '.join(settings.groups)}, "
        f"or {UNROUTED_ARGUMENT} for letters whose group was not known."
    )


def letter_id(letter: DeadLetter) -> str:
    return letter.notification_id or "(no id)"


def count_of(count: int) -> str:
    return f"{count} dead letter{'' if count == 1 else 's'}"


def describe_letter(letter: DeadLetter) -> str:
    reason = dead_letter.REASONS.get(letter.reason, "reason not known")
    group = "an unknown group" if letter.group == UNROUTED else f"group {letter.group!r}"
    lines = [
        f"Notification {letter_id(letter)} for {group}",
        f"  failed at:    {letter.failed_at}",
        f"  reason:       {letter.reason} ({reason})",
        f"  error:        {letter.error}",
        f"  attempts:     {letter.attempts}",
    ]
    if letter.text is not None:
        lines.append(f"  text:         {letter.text!r}")
        return "\n".join(lines)

    lines.append(f"  content type: {letter.content_type or '(none)'}")
    body = letter.body or ""
    if len(body) > SHOWN_BODY_CHARS:
        shown = f"{body[:SHOWN_BODY_CHARS]!r}… ({len(body)} characters)"
    else:
        shown = repr(body)
    lines.append(f"  body:         {shown}")
    return "\n".join(lines)


def why_not_replayable(letter: DeadLetter) -> str:
    if letter.text is None:
        return "it carries no notification text"
    if letter.group == UNROUTED:
        return "its group is not known"
    return dead_letter.REASONS.get(letter.reason, "it cannot be sent again")


def redelivery_key(notification_id: str) -> str:
    # The worker counts redeliveries under this key; a replayed
    # notification must not inherit the count that dead-lettered it.
    return f"{notification_id}.redeliveries"


@main.group("dead-letters")
def dead_letters() -> None:
    """Show and replay notifications that could not be delivered."""


@dead_letters.command("list")
@click.argument("group")
def list_command(group: str) -> None:
    """Print the dead letters of GROUP (or of 'unrouted') and leave them queued."""
    settings = settings_or_fail()
    key = dead_letter_group(settings, group)
    queue_name = settings.dead_letter_queue_name(key)

    from notifications import app
    from notifications.broker import broker_errors, ensure_connected

    try:
        with broker_errors(settings), app.connection_for_write() as connection:
            ensure_connected(connection, settings)
            letters = dead_letter.list_dead_letters(connection, settings, key)
    except NotificationsError as exc:
        fail(exc)
    except (ContentDisallowed, DecodeError) as exc:
        fail(foreign_message(queue_name, exc))

    if not letters:
        click.echo(f"No dead letters in {queue_name}.")
        return
    # The embedded broker puts browsed letters back in reverse order, so
    # the queue's order says nothing; oldest first reads the same anywhere.
    for letter in sorted(letters, key=lambda letter: letter.failed_at):
        click.echo(describe_letter(letter))
        click.echo()
    click.echo(f"{count_of(len(letters))} in {queue_name}.")


@dead_letters.command("replay")
@click.argument("group")
@click.option(
    "--id", "notification_id", help="Replay only the notification with this id."
)
def replay_command(group: str, notification_id: str | None) -> None:
    """Send the dead letters of GROUP (or of 'unrouted') to their group's queue again.

    Letters without a notification text stay in the dead-letter queue.
    """
    settings = settings_or_fail()
    key = dead_letter_group(settings, group)
    queue_name = settings.dead_letter_queue_name(key)

    from notifications import app, send_notification
    from notifications.broker import broker_errors, ensure_connected

    sent: list[tuple[DeadLetter, str]] = []

    def send(letter: DeadLetter) -> None:
        try:
            target = check_group(settings, letter.group)
            text = check_text(settings, letter.text)
        except (NotificationsError, TypeError, ValueError) as exc:
            raise UnreplayableError(letter, exc) from exc

        new_id = letter.notification_id or str(uuid.uuid4())
        forget_redeliveries(app, settings, new_id, letter.target_id)
        send_notification.apply_async(
            (target, text), {"title": letter.title}, task_id=new_id
        )
        sent.append((letter, new_id))

    try:
        with broker_errors(settings), app.connection_for_write() as connection:
            ensure_connected(connection, settings)
            replayed, skipped = dead_letter.replay(
                connection, settings, key, send, notification_id
            )
    except UnreplayableError as exc:
        echo_replayed(settings, sent)
        # The letter cannot be skipped: replay() either sends a letter or
        # stops, and whatever it has not acknowledged stays queued.
        staying = "It stays" if notification_id else "It and the letters after it stay"
        fail(
            f"Notification {letter_id(exc.letter)} cannot be replayed: {exc} "
            f"{staying} in {queue_name}."
        )
    except NotificationsError as exc:
        echo_replayed(settings, sent)
        fail(exc)
    except (ContentDisallowed, DecodeError) as exc:
        echo_replayed(settings, sent)
        fail(foreign_message(queue_name, exc))

    if notification_id is not None and not replayed:
        if not skipped:
            fail(f"No dead letter with id {notification_id!r} in {queue_name}.")
        fail(
            f"Notification {notification_id} cannot be replayed: "
            f"{why_not_replayable(skipped[0])}; it stays in {queue_name}."
        )

    echo_replayed(settings, sent)
    for letter in skipped:
        click.echo(
            f"Left notification {letter_id(letter)} in {queue_name}: "
            f"{why_not_replayable(letter)} ({letter.reason})."
        )
    summary = f"{count_of(len(replayed))} replayed"
    if skipped:
        summary += f", {len(skipped)} not replayable left in {queue_name}"
    click.echo(f"{summary}.")


def echo_replayed(settings: Settings, sent: list[tuple[DeadLetter, str]]) -> None:
    for letter, new_id in sent:
        click.echo(
            f"Replayed notification {new_id} to {settings.queue_name(letter.group)}: "
            f"{letter.text!r}"
        )


def forget_redeliveries(
    app: Any, settings: Settings, notification_id: str, target_id: str | None = None
) -> None:
    """Make the store of delivered ids forget what would stop a replay.

    That is the redelivery count of ``notification_id``, its own record (a
    notification delivered to all but one subscriber counts as delivered),
    and the record of the subscriber ``target_id`` that refused it.

    Raises
    ------
    NotificationsError
        If the store cannot be reached.
    """
    try:
        app.backend.forget(redelivery_key(notification_id))
        app.backend.forget(notification_id)
        if target_id:
            app.backend.forget(f"{notification_id}:{target_id}")
    # Each kind of store raises its own driver's errors (SQLAlchemy, redis,
    # psycopg2); none of them share a base class but Exception.
    except Exception as exc:
        reason = (str(exc) or type(exc).__name__).splitlines()[0]
        if settings.store_url:
            reason = reason.replace(settings.store_url, settings.masked_store_url)
        raise NotificationsError(
            f"The store of delivered ids at {settings.masked_store_url} failed "
            f"({reason}); nothing more was replayed."
        ) from exc


def foreign_message(queue_name: str, exc: Exception) -> str:
    return (
        f"{queue_name} holds a message that is not a dead letter of this "
        f"pipeline ({type(exc).__name__}: {exc}); remove it on the broker."
    )


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


@main.group()
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
            click.echo(f"  {target.masked_url}")


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
