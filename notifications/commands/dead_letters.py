"""``notifications dead-letters``: list and replay what could not be delivered."""

from __future__ import annotations

import uuid

import click
from kombu.exceptions import ContentDisallowed, DecodeError

from notifications import dead_letter
from notifications.commands.common import fail, settings_or_fail
from notifications.dead_letter import DeadLetter
from notifications.errors import NotificationsError
from notifications.message import check_group, check_text
from notifications.settings import UNROUTED, Settings
from notifications.store import StoreError, get_store, redelivery_key, target_key

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


@click.group("dead-letters")
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
        forget_redeliveries(settings, new_id, letter.target_id)
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
    settings: Settings, notification_id: str, target_id: str | None = None
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
    keys = [redelivery_key(notification_id), notification_id]
    if target_id:
        keys.append(target_key(notification_id, target_id))
    try:
        get_store(settings).forget(*keys)
    except StoreError as exc:
        raise NotificationsError(f"{exc}; nothing more was replayed.") from exc


def foreign_message(queue_name: str, exc: Exception) -> str:
    return (
        f"{queue_name} holds a message that is not a dead letter of this "
        f"pipeline ({type(exc).__name__}: {exc}); remove it on the broker."
    )
