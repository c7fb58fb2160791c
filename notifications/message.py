"""What a notification is, and the checks both sender and worker apply."""

from __future__ import annotations

from dataclasses import dataclass

from notifications.errors import (
    InvalidTextError,
    InvalidTextTypeError,
    UnknownGroupError,
)
from notifications.settings import Settings


@dataclass(frozen=True)
class Notification:
    """One notification to deliver to the subscribers of ``group``.

    ``notification_id`` is the Celery task id: the id ``.delay()`` returns.
    """

    notification_id: str
    group: str
    text: str
    title: str | None = None


def check_group(settings: Settings, group: object) -> str:
    """Return ``group`` if this deployment has it.

    Raises
    ------
    UnknownGroupError
        If ``group`` is not one of the configured groups.
    """
    if not isinstance(group, str) or group not in settings.groups:
        raise UnknownGroupError(group, settings.groups)
    return group


def check_text(settings: Settings, text: object) -> str:
    """Return ``text`` if it is a non-empty ``str`` within the size limit.

    Raises
    ------
    InvalidTextTypeError
        If ``text`` is not a ``str``.
    InvalidTextError
        If it is blank, not encodable as UTF-8, or longer than
        ``settings.max_text_bytes`` UTF-8 bytes.
    """
    if not isinstance(text, str):
        raise InvalidTextTypeError(
            f"Notification text must be a str, not {type(text).__name__}."
        )
    if not text.strip():
        raise InvalidTextError("Notification text is empty: give some text to send.")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidTextError(
            "Notification text is not valid Unicode (it holds a lone surrogate)."
        ) from None
    if size > settings.max_text_bytes:
        raise InvalidTextError(
            f"Notification text is {size} bytes of UTF-8; at most "
            f"{settings.max_text_bytes} are allowed (NOTIFICATIONS_MAX_TEXT_BYTES)."
        )
    return text


#: Titles are one line in most services; keep them short.
MAX_TITLE_BYTES = 1024


def check_title(title: object) -> str | None:
    """Return ``title`` if it is ``None`` or a short one-line ``str``.

    Raises
    ------
    InvalidTextTypeError
        If ``title`` is neither ``None`` nor a ``str``.
    InvalidTextError
        If it spans several lines or is longer than 1024 UTF-8 bytes.
    """
    if title is None:
        return None
    if not isinstance(title, str):
        raise InvalidTextTypeError(
            f"Notification title must be a str or None, not {type(title).__name__}."
        )
    if "\n" in title or "\r" in title:
        raise InvalidTextError("Notification title must be a single line.")
    if len(title.encode("utf-8", "surrogatepass")) > MAX_TITLE_BYTES:
        raise InvalidTextError(
            f"Notification title is longer than {MAX_TITLE_BYTES} bytes of UTF-8."
        )
    return title
