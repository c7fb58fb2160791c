"""Local stand-ins for what subscribers run: a webhook and a mail server.

Workers reach them through Apprise exactly as they would reach a real
service, so a test sees every request and e-mail a subscriber would get,
and can make a target fail the way real services fail (503, 400).
"""

from __future__ import annotations

import email
import email.policy
import http.server
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email.message import EmailMessage
from typing import Any
from urllib.parse import parse_qsl

HOST = "127.0.0.1"


def wait_until(predicate: Callable[[], bool], timeout_s: float) -> bool:
    """Poll ``predicate`` until it holds or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def free_port() -> int:
    # Another process may take the port before it is bound again; on a
    # test machine that window is too short to matter.
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


@dataclass(frozen=True)
class Request:
    """One request as the webhook received it, and how it answered."""

    path: str
    content_type: str
    body: bytes
    authorization: str
    status: int
    #: The client's port: requests sent over one connection share it.
    client_port: int = 0
    cookie: str = ""

    def json(self) -> Any:
        return json.loads(self.body)

    def form(self) -> dict[str, str]:
        return dict(parse_qsl(self.body.decode("utf-8"), strict_parsing=True))


class Webhook:
    """An HTTP server on 127.0.0.1 that records each request and answers by path.

    ``/bad`` answers 400 Bad Request; ``/flaky`` answers 503 to its first
    ``flaky_failures`` requests and 200 afterwards; every other path 200.
    ``/cookie`` also sets a cookie. Connections stay open between requests
    (HTTP/1.1), as they do at Slack and most webhook endpoints.
    """

    def __init__(self, flaky_failures: int = 0) -> None:
        self.flaky_failures = flaky_failures
        self._requests: list[Request] = []
        self._lock = threading.Lock()
        self._server = http.server.ThreadingHTTPServer((HOST, 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def port(self) -> int:
        return int(self._server.server_address[1])

    def url(self, path: str, scheme: str = "json", credentials: str = "") -> str:
        """Apprise URL of ``path``; ``credentials`` is ``user:password@`` or empty."""
        return f"{scheme}://{credentials}{HOST}:{self.port}{path}"

    def start(self) -> Webhook:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    def requests(self, path: str | None = None) -> list[Request]:
        with self._lock:
            return [r for r in self._requests if path is None or r.path == path]

    def successes(self, path: str) -> list[Request]:
        return [r for r in self.requests(path) if r.status == 200]

    def _answer(self, path: str) -> int:
        # Called under the lock, so concurrent requests count correctly.
        if path == "/bad":
            return 400
        if path == "/flaky":
            earlier = sum(1 for r in self._requests if r.path == path)
            return 503 if earlier < self.flaky_failures else 200
        return 200

    def _handler(self) -> type[http.server.BaseHTTPRequestHandler]:
        webhook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                with webhook._lock:
                    status = webhook._answer(self.path)
                    webhook._requests.append(
                        Request(
                            path=self.path,
                            content_type=self.headers.get("Content-Type", ""),
                            body=body,
                            authorization=self.headers.get("Authorization", ""),
                            status=status,
                            client_port=self.client_address[1],
                            cookie=self.headers.get("Cookie", ""),
                        )
                    )
                self.send_response(status)
                if self.path == "/cookie":
                    self.send_header("Set-Cookie", "session=from-the-endpoint; Path=/")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                # Keep pytest's output for failures, not for access logs.
                pass

        return Handler


@contextmanager
def running_webhook(flaky_failures: int = 0) -> Iterator[Webhook]:
    webhook = Webhook(flaky_failures).start()
    try:
        yield webhook
    finally:
        webhook.stop()


class MailServer:
    """An SMTP server on 127.0.0.1, without TLS or login, that keeps every e-mail."""

    def __init__(self) -> None:
        from aiosmtpd.controller import Controller

        self.port = free_port()
        self._envelopes: list[Any] = []
        self._lock = threading.Lock()
        self._controller = Controller(self, hostname=HOST, port=self.port)

    async def handle_DATA(  # noqa: N802 (the name aiosmtpd calls)
        self, server: Any, session: Any, envelope: Any
    ) -> str:
        with self._lock:
            self._envelopes.append(envelope)
        return "250 Message accepted"

    def start(self) -> MailServer:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def mails(self) -> list[tuple[str, list[str], EmailMessage]]:
        """Every e-mail received: (envelope sender, envelope recipients, message)."""
        with self._lock:
            envelopes = list(self._envelopes)
        return [
            (
                e.mail_from,
                list(e.rcpt_tos),
                email.message_from_bytes(e.original_content, policy=email.policy.default),
            )
            for e in envelopes
        ]


@contextmanager
def running_mail_server() -> Iterator[MailServer]:
    server = MailServer().start()
    try:
        yield server
    finally:
        server.stop()
