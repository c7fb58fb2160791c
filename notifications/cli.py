"""Entry point of the ``notifications`` command; the commands live in
:mod:`notifications.commands`."""

from notifications.commands import main

__all__ = ["main"]
