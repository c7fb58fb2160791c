"""Publishing on a confirm-mode channel without waiting for each confirm.

In confirm mode the broker numbers a channel's publishes 1, 2, 3… (their
delivery tags) and answers each with ``basic.ack``, or ``basic.nack`` if it
refused it, often for several at once (``multiple``: every tag up to this
one). A ``mandatory`` message that no queue receives comes back as
``basic.return`` just before its ack.

:class:`ConfirmWindow` writes ahead while at most ``window`` publishes
await their answer, reads the answers that have arrived between writes
without blocking, and blocks only when the window is full and at the end.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

UNSETTLED = 0
CONFIRMED = 1
REFUSED = 2
RETURNED = 3

#: Bytes of frames gathered before one write to the socket: one system
#: call per hundred or so notifications instead of one each.
WRITE_BYTES = 64 * 1024


class ConfirmWindow:
    """The publishes of one new confirm-mode channel, and what became of them.

    Publish number ``n`` on the channel is the message of
    ``message_ids[n - 1]``: the channel must be new and publish nothing else.

    Parameters
    ----------
    channel:
        A py-amqp channel in confirm mode that has published nothing yet.
    message_ids:
        The ``correlation_id`` of each message to publish, in order.
    window:
        The most publishes awaiting the broker's answer at any time.
    timeout_s:
        How long a write, or a wait for an answer, may take.
    """

    def __init__(
        self, channel: Any, message_ids: Sequence[str], window: int, timeout_s: float
    ) -> None:
        self.connection = channel.connection
        self.message_ids = message_ids
        self.window = window
        self.timeout_s = timeout_s
        #: What became of each message: UNSETTLED, CONFIRMED, REFUSED or RETURNED.
        self.outcomes = bytearray(len(message_ids))
        #: Messages handed to the socket, or about to be.
        self.published = 0
        self.settled = 0
        self.refused = 0
        self.returned: set[str] = set()
        self.return_reason = ""
        # Every tag below this one is settled.
        self._lowest_unsettled = 1
        self._pending: list[bytes] = []
        self._pending_bytes = 0

        channel.events["basic_ack"].add(self._on_ack)
        channel.events["basic_nack"].add(self._on_nack)
        channel.events["basic_return"].add(self._on_return)

    @property
    def unsettled(self) -> int:
        return self.published - self.settled

    @property
    def failed(self) -> bool:
        """The broker refused or returned a message."""
        return bool(self.refused or self.returned)

    def confirmed_ids(self) -> list[str]:
        return [
            message_id
            for message_id, outcome in zip(self.message_ids, self.outcomes, strict=True)
            if outcome == CONFIRMED
        ]

    def publish(self, frames: bytes) -> None:
        """Publish the next message, given as its encoded frames.

        Blocks while the window is full.

        Raises
        ------
        TimeoutError
            If the broker took ``timeout_s`` to take the bytes or to answer.
        """
        self._pending.append(frames)
        self._pending_bytes += len(frames)
        self.published += 1
        if self._pending_bytes >= WRITE_BYTES or self.unsettled >= self.window:
            self.flush()
            self._read_arrived()
            if self.unsettled >= self.window:
                self._wait(lambda: self.unsettled < self.window or self.failed)

    def finish(self) -> None:
        """Write what is pending and wait for every answer.

        Raises
        ------
        TimeoutError
            If some are still unanswered ``timeout_s`` after the last write.
        """
        self.flush()
        self._wait(lambda: not self.unsettled)

    def flush(self) -> None:
        if not self._pending:
            return
        data = b"".join(self._pending)
        self._pending.clear()
        self._pending_bytes = 0
        transport = self.connection.transport
        # A broker that blocks publishers (memory or disk alarm) stops
        # reading: without a timeout the write would wait for ever.
        with transport.having_timeout(self.timeout_s):
            transport.write(data)

    def _read_arrived(self) -> None:
        """Handle every answer already received, without waiting for more."""
        while True:
            try:
                self.connection.drain_events(timeout=0)
            except TimeoutError:  # what py-amqp raises when nothing is there
                return

    def _wait(self, done: Callable[[], bool]) -> None:
        deadline = time.monotonic() + self.timeout_s
        while not done():
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise TimeoutError
                self.connection.drain_events(timeout=remaining)
            except TimeoutError:
                raise TimeoutError(
                    f"{self.unsettled} notifications unconfirmed after "
                    f"{self.timeout_s:g} s"
                ) from None

    def _settle(self, delivery_tag: int, multiple: bool, outcome: int) -> None:
        outcomes = self.outcomes
        if multiple and not delivery_tag:
            # Tag 0 with ``multiple``: every publish so far.
            delivery_tag = self.published
        first = self._lowest_unsettled if multiple else delivery_tag
        for tag in range(first, delivery_tag + 1):
            if outcomes[tag - 1] != UNSETTLED:
                continue
            # Acked after coming back: the broker had it, no queue took it.
            returned = self.returned and self.message_ids[tag - 1] in self.returned
            outcomes[tag - 1] = RETURNED if returned else outcome
            self.settled += 1
            if outcome == REFUSED:
                self.refused += 1
        lowest = self._lowest_unsettled
        while lowest <= self.published and outcomes[lowest - 1] != UNSETTLED:
            lowest += 1
        self._lowest_unsettled = lowest

    def _on_ack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, CONFIRMED)

    def _on_nack(self, delivery_tag: int, multiple: bool) -> None:
        self._settle(delivery_tag, multiple, REFUSED)

    def _on_return(
        self, exc: Exception, exchange: str, routing_key: str, message: Any
    ) -> None:
        message_id = message.properties.get("correlation_id")
        if message_id:
            self.returned.add(message_id)
        self.return_reason = f"routing key {routing_key!r}: {exc}"


__all__ = ["CONFIRMED", "REFUSED", "RETURNED", "ConfirmWindow"]
