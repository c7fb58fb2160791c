"""``notifications send``: one notification, or one per line of a file."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterator
from typing import BinaryIO

import click

from notifications.commands.common import fail, settings_or_fail
from notifications.errors import NotificationsError
from notifications.message import check_group, check_title
from notifications.settings import Settings

#: Lines sent per ``send_many()`` call: the ids are printed, and the
#: progress bar moves, as each batch is confirmed.
LINES_PER_BATCH = 10_000

TEXT_OR_FILE = (
    "give the TEXT to send, or --file FILE to send one notification per line "
    "of FILE (- for stdin)."
)


@click.command()
@click.argument("group")
@click.argument("text", required=False)
@click.option("--title", help="Optional title, for services that show one.")
@click.option(
    "-f",
    "--file",
    "file_name",
    metavar="FILE",
    help="Send each line of FILE (- for stdin) as a notification instead of TEXT.",
)
def send(group: str, text: str | None, title: str | None, file_name: str | None) -> None:
    """Send TEXT to GROUP and print the notification id.

    With --file, every line of FILE is checked first, so that one bad line
    sends nothing; then each line is sent, and the ids are printed one per
    line, in the order of the lines. --title applies to every line.
    """
    settings = settings_or_fail()
    if text is not None and file_name is not None:
        fail(f"TEXT and --file cannot be used together: {TEXT_OR_FILE}")
    if text is None and file_name is None:
        fail(f"Nothing to send: {TEXT_OR_FILE}")
    if file_name is not None:
        send_lines(settings, group, title, file_name)
        return

    from notifications import send_notification

    try:
        result = send_notification.delay(group, text, title=title)
    except (NotificationsError, TypeError, ValueError) as exc:
        fail(exc)
    click.echo(result.id)


def send_lines(settings: Settings, group: str, title: str | None, file_name: str) -> None:
    """Send every line of ``file_name`` to ``group``; print the ids on stdout."""
    from notifications.bulk import BulkSendError, send_many
    from notifications.lines import CheckedLines

    try:
        check_group(settings, group)
        check_title(title)
    except NotificationsError as exc:
        fail(exc)
    name = "stdin" if file_name == "-" else file_name
    try:
        with opened(file_name) as source:
            lines = CheckedLines(settings, source, name)
    except OSError as exc:
        fail(
            f"Cannot read {name} ({exc.strerror or exc}): give a readable text "
            "file, or - for stdin."
        )
    except NotificationsError as exc:
        fail(exc)

    sent = 0
    with lines, progress(lines.count) as advance:
        for batch in lines.batches(LINES_PER_BATCH):
            try:
                ids = send_many(group, batch, title=title)
            except BulkSendError as exc:
                print_ids(exc.confirmed_ids)
                fail(stopped(exc, name, sent, len(batch), lines.count, exc.confirmed_ids))
            except NotificationsError as exc:
                fail(stopped(exc, name, sent, len(batch), lines.count, []))
            print_ids(ids)
            sent += len(ids)
            advance(len(ids))


@contextlib.contextmanager
def opened(file_name: str) -> Iterator[BinaryIO]:
    if file_name == "-":
        yield sys.stdin.buffer
        return
    with open(file_name, "rb") as source:
        yield source


@contextlib.contextmanager
def progress(total: int) -> Iterator[Callable[[int], None]]:
    """A progress bar on stderr, if stderr is a terminal; stdout has the ids."""
    if not sys.stderr.isatty():
        yield lambda count: None
        return
    with click.progressbar(length=total, label="Sending", file=sys.stderr) as bar:
        yield bar.update


def print_ids(ids: list[str]) -> None:
    if ids:
        click.echo("\n".join(ids))


def stopped(
    exc: Exception, name: str, sent: int, batch: int, total: int, confirmed: list[str]
) -> str:
    """The error of a send that stopped part-way, with how far it got."""
    done = sent + len(confirmed)
    outcome = (
        f"In all, {done} of the {total} lines were sent and confirmed; their ids "
        "are on stdout."
        if done
        else f"None of the {total} lines was confirmed."
    )
    return f"Sending lines {sent + 1} to {sent + batch} of {name}: {exc} {outcome}"


__all__ = ["send"]
