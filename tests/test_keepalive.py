"""Deliveries over HTTP reuse their connections and carry no cookies.

The in-process tests call requests' module functions, as Apprise does,
against the local webhook; the last one runs a real worker.
"""

from __future__ import annotations

import http.server
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import ClassVar

import pytest
import requests
import requests.api

from notifications import keepalive, send_notification
from tests.endpoints import Webhook, running_webhook
from tests.helpers import Broker, WorkerProcess, child_env, worker_command


@pytest.fixture
def reusing(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """requests' module functions reuse connections, for this test only."""
    monkeypatch.setattr(requests.api, "request", requests.api.request)
    monkeypatch.setattr(requests, "request", requests.request)
    monkeypatch.setattr(keepalive, "_installed", False)
    keepalive.reuse_connections()
    yield
    keepalive.session().close()
    monkeypatch.delattr(keepalive._local, "session")


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with running_webhook() as server:
        yield server


def test_requests_from_one_thread_share_one_connection(reusing, webhook):
    for n in range(3):
        requests.post(webhook.url("/ok", scheme="http"), json={"n": n}, timeout=10)
    requests.request("POST", webhook.url("/ok", scheme="http"), timeout=10)

    ports = {r.client_port for r in webhook.requests("/ok")}
    assert len(webhook.requests("/ok")) == 4
    assert len(ports) == 1


def test_each_thread_has_a_session_of_its_own(reusing, webhook):
    sessions = []

    def post() -> None:
        requests.post(webhook.url("/ok", scheme="http"), timeout=10)
        sessions.append(keepalive.session())

    threads = [threading.Thread(target=post) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=10)

    assert len(sessions) == 2
    assert sessions[0] is not sessions[1]
    for session in sessions:
        session.close()


def test_a_cookie_set_by_one_endpoint_is_never_sent_back(reusing, webhook):
    requests.post(webhook.url("/cookie", scheme="http"), timeout=10)
    requests.post(webhook.url("/cookie", scheme="http"), timeout=10)

    assert [r.cookie for r in webhook.requests("/cookie")] == ["", ""]
    assert len(keepalive.session().cookies) == 0


def test_without_it_every_request_opens_a_connection(webhook):
    # The behaviour being replaced, shown on the same endpoint.
    for _ in range(2):
        requests.post(webhook.url("/ok", scheme="http"), timeout=10)

    assert len({r.client_port for r in webhook.requests("/ok")}) == 2


@pytest.mark.rabbitmq
@pytest.mark.slow
def test_a_worker_sends_its_notifications_over_one_connection(
    rabbitmq: Broker, data_dir: Path, tmp_path: Path, webhook: Webhook
):
    # Given a worker of one thread whose only hr subscriber is the webhook...
    subscribers = tmp_path / "subscribers.txt"
    subscribers.write_text(f"hr={webhook.url('/ok')}\n", encoding="utf-8")
    env = child_env(data_dir, rabbitmq.url, NOTIFICATIONS_SUBSCRIBERS=str(subscribers))
    command = worker_command("hr_queue", name=f"keepalive-{uuid.uuid4().hex[:6]}")
    worker = WorkerProcess(command, env, tmp_path).start()
    try:
        worker.wait_ready()

        # ...when three notifications are delivered one after another...
        for n in range(3):
            result = send_notification.delay("hr", f"Keep-alive {n}")
            line = f"Notification {result.id} for group 'hr' delivered: "
            assert worker.wait_for(lambda line=line: line in worker.output, 60)
    finally:
        worker.stop()

    # ...then the webhook got each once, all over the same connection.
    requests_seen = webhook.requests("/ok")
    assert sorted(r.json()["message"] for r in requests_seen) == [
        f"Keep-alive {n}" for n in range(3)
    ]
    assert len({r.client_port for r in requests_seen}) == 1


class _ClosingHandler(http.server.BaseHTTPRequestHandler):
    """Answers over HTTP/1.1 as if keeping the connection, then drops it.

    That is what an endpoint's idle timeout looks like to a client.
    """

    protocol_version = "HTTP/1.1"
    ports: ClassVar[list[int]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.ports.append(self.client_address[1])
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.close_connection = True

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_a_connection_the_endpoint_dropped_is_replaced_not_failed(reusing):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ClosingHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    try:
        first = requests.post(url, timeout=10)
        # Until the close has reached this side of the socket.
        time.sleep(0.2)
        second = requests.post(url, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)

    assert (first.status_code, second.status_code) == (200, 200)
    assert len(set(_ClosingHandler.ports)) == 2


class _ProxyHandler(http.server.BaseHTTPRequestHandler):
    """Stands in for an HTTP proxy: records the URL it was asked for."""

    asked: ClassVar[list[str]] = []

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        # A request through a proxy names the whole URL, not just the path.
        self.asked.append(self.path)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_proxy_settings_from_the_environment_still_apply(
    reusing, webhook, monkeypatch: pytest.MonkeyPatch
):
    proxy = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ProxyHandler)
    thread = threading.Thread(target=proxy.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{proxy.server_address[1]}")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    try:
        for _ in range(2):
            # Through the proxy, every time...
            answer = requests.post("http://hooks.example.invalid/team", timeout=10)
            assert answer.status_code == 200
            # ...but straight to a host NO_PROXY names.
            requests.post(webhook.url("/ok", scheme="http"), timeout=10)
    finally:
        proxy.shutdown()
        proxy.server_close()
        thread.join(timeout=10)

    assert _ProxyHandler.asked == ["http://hooks.example.invalid/team"] * 2
    assert len(webhook.requests("/ok")) == 2
