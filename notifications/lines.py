"""Notification texts read from a file or stdin, one per line.

A line is the text of one notification, without its line ending (``\\n``,
or ``\\r\\n``). Every line is checked as ``.delay()`` checks a text before
any is sent, so an empty or blank line is an error, like an empty text:
nothing is skipped.

The checked lines are kept in a private copy, read back in batches for
sending: memory holds one batch, never the whole file, whatever its size,
and a file that changes after the check (a log still being written) cannot
slip an unchecked line in. The cost is a second copy of the input — in
memory up to :data:`COPY_IN_MEMORY_BYTES`, then in a temporary file.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator
from types import TracebackType
from typing import BinaryIO

from notifications.errors import InvalidTextError
from notifications.message import check_text
from notifications.settings import Settings

COPY_IN_MEMORY_BYTES = 8 * 1024 * 1024

#: What an empty or blank line is told, after .delay()'s own message.
ONE_PER_LINE = "Each line is sent as one notification, so no line may be empty or blank."


class CheckedLines:
    """Every line of ``source``, checked, in a private copy.

    Parameters
    ----------
    settings:
        The settings the texts are checked against.
    source:
        The file (opened in binary mode) or stdin.
    name:
        How errors name the source.

    Raises
    ------
    InvalidTextError
        Naming the first line that is not a valid notification text (or
        not UTF-8), or if there is no line at all.
    OSError
        If ``source`` cannot be read.
    """

    def __init__(self, settings: Settings, source: BinaryIO, name: str) -> None:
        self.count = 0
        # Closed by close(), or below if the check fails.
        self._copy = tempfile.SpooledTemporaryFile(  # noqa: SIM115
            max_size=COPY_IN_MEMORY_BYTES
        )
        try:
            self._check(settings, source, name)
        except BaseException:
            self._copy.close()
            raise
        if not self.count:
            self._copy.close()
            raise InvalidTextError(
                f"{name} is empty: give one notification text per line."
            )

    def _check(self, settings: Settings, source: BinaryIO, name: str) -> None:
        # Room for the longest text allowed and its line ending: a longer
        # line is refused without being read whole.
        limit = settings.max_text_bytes + 2
        while raw := source.readline(limit):
            self.count += 1
            where = f"Line {self.count} of {name}"
            if raw.endswith(b"\n"):
                raw = raw[:-2] if raw.endswith(b"\r\n") else raw[:-1]
            elif len(raw) == limit:
                raise InvalidTextError(
                    f"{where}: Notification text is more than "
                    f"{settings.max_text_bytes} bytes of UTF-8; at most "
                    f"{settings.max_text_bytes} are allowed "
                    "(NOTIFICATIONS_MAX_TEXT_BYTES)."
                )
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                raise InvalidTextError(
                    f"{where} is not valid UTF-8 (byte {raw[exc.start]:#04x} at "
                    f"position {exc.start + 1}): each line must be UTF-8 text."
                ) from None
            try:
                check_text(settings, text)
            except InvalidTextError as exc:
                hint = f" {ONE_PER_LINE}" if not text.strip() else ""
                raise InvalidTextError(f"{where}: {exc}{hint}") from None
            self._copy.write(raw + b"\n")

    def batches(self, size: int) -> Iterator[list[str]]:
        """The texts, in order, ``size`` at a time (fewer in the last batch)."""
        self._copy.seek(0)
        batch: list[str] = []
        for raw in self._copy:
            batch.append(raw[:-1].decode("utf-8"))
            if len(batch) == size:
                yield batch
                batch = []
        if batch:
            yield batch

    def close(self) -> None:
        self._copy.close()

    def __enter__(self) -> CheckedLines:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()


__all__ = ["CheckedLines"]
