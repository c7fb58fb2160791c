"""``notifications subscribers`` as a user runs it, and the example subscribers file.

``subscribers test`` posts to a real HTTP server started here, on a free
local port: ``/ok`` answers 200, ``/bad`` 400 and ``/down`` 503.
"""

from __future__ import annotations

import http.server
import json
import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from notifications.settings import DEFAULT_GROUPS
from notifications.subscribers import Subscribers
from tests.helpers import REPO, assert_one_line_error, child_env, run_cli

EXAMPLE = REPO / "subscribers.example.yml"
PASSWORD = "Sekr3t-abc"
STATUS_OF_PATH = {"/ok": 200, "/bad": 400, "/down": 503}

# Apprise's e-mail support imports its PGP helper, which imports the
# standard imghdr module to see whether PGPy 0.6 will find it; Python 3.11
# and 3.12 warn that imghdr is deprecated, and this project's pytest turns
# warnings into errors. Only the tests that load Apprise in-process need it.
APPRISE_IMPORTS_IMGHDR = pytest.mark.filterwarnings(
    "ignore:'imghdr' is deprecated:DeprecationWarning"
)


@dataclass
class WebhookServer:
    """A local HTTP server that records the bodies POSTed to it."""

    port: int
    bodies: dict[str, list[bytes]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def url(self, path: str, credentials: str = "") -> str:
        return f"json://{credentials}127.0.0.1:{self.port}{path}"

    def received(self, path: str) -> list[dict[str, str]]:
        with self.lock:
            return [json.loads(body) for body in self.bodies.get(path, [])]


@pytest.fixture
def webhooks() -> Iterator[WebhookServer]:
    recorder = WebhookServer(port=0)

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            with recorder.lock:
                recorder.bodies.setdefault(self.path, []).append(body)
            self.send_response(STATUS_OF_PATH.get(self.path, 404))
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: object) -> None:
            pass  # the test reads what was received, not the access log

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    recorder.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def write_subscribers(folder: Path, entries: dict[str, str]) -> Path:
    """Write an Apprise YAML file tagging each URL with its groups."""
    lines = ["version: 1", "urls:"]
    for url, tags in entries.items():
        lines += [f"  - {url}:", f"      tag: {tags}"]
    path = folder / "subscribers.yml"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def env_with(data_dir: Path, subscribers: Path) -> dict[str, str]:
    return child_env(data_dir, None, NOTIFICATIONS_SUBSCRIBERS=str(subscribers))


# -- The example file ---------------------------------------------------------


@APPRISE_IMPORTS_IMGHDR
def test_the_example_subscribers_file_loads_and_gives_every_group_a_subscriber():
    loaded = Subscribers.load(EXAMPLE, DEFAULT_GROUPS)

    for group in DEFAULT_GROUPS:
        assert loaded.for_group(group), f"No example subscriber for {group}."


@APPRISE_IMPORTS_IMGHDR
def test_every_tag_in_the_example_file_is_a_default_group():
    import apprise

    config = apprise.AppriseConfig()
    config.add(str(EXAMPLE))
    services = list(apprise.Apprise(config))

    tags = {str(tag) for service in services for tag in service.tags}

    assert services
    assert tags <= set(DEFAULT_GROUPS), sorted(tags - set(DEFAULT_GROUPS))


@APPRISE_IMPORTS_IMGHDR
def test_the_commented_examples_are_urls_apprise_accepts(tmp_path):
    # Given the example with its commented Slack, e-mail, Teams and Discord
    # entries switched on
    text = EXAMPLE.read_text(encoding="utf-8")
    switched_on = re.sub(r"^  # (- |    tag:)", r"  \1", text, flags=re.MULTILINE)
    assert switched_on.count("\n      tag:") > text.count("\n      tag:")

    path = tmp_path / "all.yml"
    path.write_text(switched_on, encoding="utf-8")

    # Then Apprise loads each of them without complaint
    loaded = Subscribers.load(path, DEFAULT_GROUPS)
    schemes = {
        target.masked_url.split("://", 1)[0]
        for targets in loaded.groups.values()
        for target in targets
    }
    assert {"json", "slack", "mailtos", "workflow", "discord"} <= schemes


# -- subscribers list ---------------------------------------------------------


def test_list_shows_each_groups_subscribers_with_their_passwords_masked(
    data_dir, tmp_path, webhooks
):
    path = write_subscribers(
        tmp_path,
        {
            webhooks.url("/ok", f"user:{PASSWORD}@"): "hr",
            webhooks.url("/down"): "hr, support",
        },
    )

    result = run_cli("subscribers", "list", env=env_with(data_dir, path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert f"json://user:****@127.0.0.1:{webhooks.port}/ok" in result.stdout
    assert result.stdout.count(f"127.0.0.1:{webhooks.port}/down") == 2
    assert "marketing: no subscribers: notifications are only logged" in result.stdout
    assert PASSWORD not in result.stdout + result.stderr


def test_list_of_one_group_shows_only_that_group(data_dir, tmp_path, webhooks):
    path = write_subscribers(tmp_path, {webhooks.url("/ok"): "hr"})

    result = run_cli(
        "subscribers", "list", "support", env=env_with(data_dir, path), cwd=tmp_path
    )

    assert result.returncode == 0, result.stderr
    assert "support: no subscribers: notifications are only logged" in result.stdout
    assert not [line for line in result.stdout.splitlines() if line.startswith("hr")]


def test_list_of_an_unknown_group_names_the_allowed_ones(data_dir, tmp_path):
    path = write_subscribers(tmp_path, {"json://hooks.example.com/x": "hr"})

    result = run_cli(
        "subscribers", "list", "sales", env=env_with(data_dir, path), cwd=tmp_path
    )

    assert_one_line_error(result, "Unknown group 'sales'", "hr, marketing, support")


def test_list_without_a_subscribers_file_says_how_to_set_one(data_dir, tmp_path):
    result = run_cli("subscribers", "list", env=child_env(data_dir, None), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert "NOTIFICATIONS_SUBSCRIBERS is not set" in result.stdout
    assert "subscribers.example.yml" in result.stdout


def test_list_marks_an_unusable_subscriber_without_its_password(data_dir, tmp_path):
    path = write_subscribers(tmp_path, {f"nosuchservice://user:{PASSWORD}@host/x": "hr"})

    result = run_cli("subscribers", "list", env=env_with(data_dir, path), cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert (
        "nosuchservice://user:**@host/x  (unusable: Apprise cannot use" in result.stdout
    )
    assert PASSWORD not in result.stdout + result.stderr


def test_a_subscriber_with_a_tag_that_is_no_group_is_a_one_line_error(data_dir, tmp_path):
    path = write_subscribers(tmp_path, {"json://hooks.example.com/x": "sales"})

    result = run_cli("subscribers", "list", env=env_with(data_dir, path), cwd=tmp_path)

    assert_one_line_error(result, "has tag 'sales'", "hr, marketing, support")


def test_a_subscribers_path_that_is_no_file_is_a_one_line_error(data_dir, tmp_path):
    env = env_with(data_dir, tmp_path / "missing.yml")

    result = run_cli("subscribers", "list", env=env, cwd=tmp_path)

    assert_one_line_error(result, "NOTIFICATIONS_SUBSCRIBERS=", "is not a file")


# -- subscribers test ---------------------------------------------------------


def test_a_test_notification_reaching_every_subscriber_exits_0(
    data_dir, tmp_path, webhooks
):
    path = write_subscribers(tmp_path, {webhooks.url("/ok", f"user:{PASSWORD}@"): "hr"})

    result = run_cli(
        *("subscribers", "test", "hr", "--text", "Is anyone there?"),
        *("--title", "Subscribers check"),
        env=env_with(data_dir, path),
        cwd=tmp_path,
    )

    assert result.returncode == 0, result.stdout + result.stderr
    assert f"[✅] delivered to json://user:****@127.0.0.1:{webhooks.port}/ok" in (
        result.stdout
    )
    [body] = webhooks.received("/ok")
    assert body["message"] == "Is anyone there?"
    assert body["title"] == "Subscribers check"
    assert PASSWORD not in result.stdout + result.stderr


def test_a_test_notification_says_which_subscribers_failed_and_how(
    data_dir, tmp_path, webhooks
):
    path = write_subscribers(
        tmp_path,
        {
            webhooks.url("/ok"): "hr",
            webhooks.url("/bad", f"user:{PASSWORD}@"): "hr",
            webhooks.url("/down"): "hr",
        },
    )

    result = run_cli(
        "subscribers", "test", "hr", env=env_with(data_dir, path), cwd=tmp_path
    )

    assert result.returncode != 0
    lines = result.stdout.splitlines()
    assert any(line.startswith("[✅] delivered to") and "/ok" in line for line in lines)
    [bad] = [line for line in lines if "/bad" in line]
    [down] = [line for line in lines if "/down" in line]
    assert bad.startswith("[❌] json://user:****@")
    assert bad.endswith("(permanent)")
    assert "400" in bad
    assert down.startswith("[❌] json://")
    assert down.endswith("(transient)")
    assert "503" in down
    assert_one_line_error(result, "2 of 3 subscribers of 'hr'")
    assert PASSWORD not in result.stdout + result.stderr
    # Every subscriber was tried, the failing ones included.
    assert [len(webhooks.received(p)) for p in ("/ok", "/bad", "/down")] == [1, 1, 1]


def test_a_test_notification_to_a_group_without_subscribers_fails(
    data_dir, tmp_path, webhooks
):
    path = write_subscribers(tmp_path, {webhooks.url("/ok"): "hr"})

    result = run_cli(
        "subscribers", "test", "marketing", env=env_with(data_dir, path), cwd=tmp_path
    )

    assert_one_line_error(result, "'marketing' has no subscribers")
    assert webhooks.received("/ok") == []


def test_a_test_notification_without_a_subscribers_file_fails(data_dir, tmp_path):
    result = run_cli(
        "subscribers", "test", "hr", env=child_env(data_dir, None), cwd=tmp_path
    )

    assert_one_line_error(result, "NOTIFICATIONS_SUBSCRIBERS is not set")


def test_a_test_notification_with_empty_text_is_refused(data_dir, tmp_path, webhooks):
    path = write_subscribers(tmp_path, {webhooks.url("/ok"): "hr"})

    result = run_cli(
        *("subscribers", "test", "hr", "--text", ""),
        env=env_with(data_dir, path),
        cwd=tmp_path,
    )

    assert_one_line_error(result, "empty")
    assert webhooks.received("/ok") == []
