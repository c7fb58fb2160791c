"""The ``notifications`` command: send, run workers, run the demo, show the topology.

``notifications dead-letters`` lists and replays what could not be delivered;
``notifications subscribers`` shows who gets each group's notifications and
sends them a test.
"""

from __future__ import annotations

import sys

import click

from notifications.commands.common import fail, settings_or_fail
from notifications.commands.dead_letters import dead_letters
from notifications.commands.send import send
from notifications.commands.subscribers import subscribers
from notifications.errors import NotificationsError


@click.group()
@click.version_option(package_name="notifications")
def main() -> None:
    """Notifications routed by group through a direct exchange."""


@main.command(context_settings={"show_default": True})
@click.argument("groups", nargs=-1, required=True)
@click.option("-c", "--concurrency", type=int, help="Pool size [default: 32 threads].")
@click.option("-P", "--pool", help="threads, prefork or solo [default: threads].")
@click.option("-l", "--loglevel", default="INFO")
@click.option("-n", "--hostname", help="Node name [default: <groups>@<host>].")
def worker(
    groups: tuple[str, ...],
    concurrency: int | None,
    pool: str | None,
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
        "-l", loglevel,
    ]  # fmt: skip
    if pool:
        # Celery's CLI cannot tell "-P prefork" from its own default, which
        # the configured pool of threads overrides; "processes" is its alias.
        argv += ["-P", "processes" if pool == "prefork" else pool]
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


main.add_command(send)
main.add_command(dead_letters)
main.add_command(subscribers)

__all__ = ["main"]
