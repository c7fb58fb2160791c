"""What every subcommand of ``notifications`` shares: one-line failures."""

from __future__ import annotations

import sys
from typing import NoReturn

import click

from notifications.errors import NotificationsError
from notifications.settings import Settings, get_settings


def fail(message: object) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


def settings_or_fail() -> Settings:
    try:
        return get_settings()
    except NotificationsError as exc:
        fail(exc)
