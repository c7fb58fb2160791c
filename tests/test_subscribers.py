"""Subscribers get their group's notifications through Apprise, each exactly once.

Real workers read a real Apprise subscribers file and deliver to servers
running in this process: a webhook that can answer 503 or 400, and an SMTP
server. Nothing between the worker and those servers is replaced.
"""

from __future__ import annotations

import http.server
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from kombu import Connection

from notifications import send_notification
from notifications.dead_letter import DeadLetter
from tests.endpoints import Webhook, running_mail_server, running_webhook, wait_until
from tests.helpers import (
    Broker,
    WorkerProcess,
    child_env,
    run_cli,
    stop_all,
    worker_command,
)

pytestmark = pytest.mark.slow

SECRET = "Sekr3t-XYZ"
StartWorker = Callable[..., WorkerProcess]


def write_yaml_subscribers(folder: Path, tags_by_url: dict[str, str]) -> Path:
    """An Apprise YAML file subscribing each URL to its comma-separated groups."""
    path = folder / "subscribers.yml"
    urls = [{url: [{"tag": tags}]} for url, tags in tags_by_url.items()]
    path.write_text(yaml.safe_dump({"version": 1, "urls": urls}), encoding="utf-8")
    return path


def rabbitmq_env(broker: Broker, data_dir: Path, subscribers: Path) -> dict[str, str]:
    # A short backoff keeps retries within a second or two.
    return child_env(
        data_dir,
        broker.url,
        NOTIFICATIONS_SUBSCRIBERS=str(subscribers),
        NOTIFICATIONS_MAX_RETRIES="5",
        NOTIFICATIONS_RETRY_BACKOFF_S="0.2",
    )


@pytest.fixture
def start_worker(tmp_path) -> Iterator[StartWorker]:
    """Start workers with (env, *queues, loglevel=...); all are stopped at the end."""
    started: list[WorkerProcess] = []

    def start(env: dict[str, str], *queues: str, loglevel: str = "INFO") -> WorkerProcess:
        command = worker_command(*queues, name=f"subscribers-{uuid.uuid4().hex[:6]}")
        command[command.index("--loglevel") + 1] = loglevel
        worker = WorkerProcess(command, env, tmp_path).start()
        started.append(worker)
        return worker

    try:
        yield start
    finally:
        stop_all(started)


@pytest.fixture
def webhook() -> Iterator[Webhook]:
    with running_webhook() as server:
        yield server


@pytest.fixture
def hr_dead_letters(rabbitmq: Broker) -> Iterator[Callable[[], list[DeadLetter]]]:
    """Take the dead letters of hr off their queue; the queue starts and ends empty."""
    rabbitmq.purge_queues("hr_dead_letter")

    def take() -> list[DeadLetter]:
        letters = []
        with Connection(rabbitmq.url) as conn:
            channel = conn.channel()
            while True:
                message = channel.basic_get("hr_dead_letter", no_ack=True)
                if message is None:
                    return letters
                letters.append(DeadLetter.from_json(json.loads(message.body)))

    try:
        yield take
    finally:
        rabbitmq.purge_queues("hr_dead_letter")


def wait_done(worker: WorkerProcess, notification_id: str, group: str = "hr") -> None:
    """Wait for the line saying the worker is done with the whole notification.

    It comes after every target was tried on the last attempt, so the
    requests counted afterwards are all there will be.
    """
    line = f"Notification {notification_id} for group '{group}' delivered: "
    done = worker.wait_for(lambda: line in worker.output, timeout_s=60)
    assert done, worker.output[-4000:]


def outcome_lines(worker: WorkerProcess, notification_id: str, outcome: str) -> list[str]:
    prefix = f"Notification {notification_id} for group 'hr' {outcome}"
    return [line for line in worker.lines if prefix in line]


# -- On RabbitMQ ------------------------------------------------------------------------


@pytest.mark.rabbitmq
def test_a_json_and_a_form_subscriber_each_get_the_notification_once(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook
):
    # Given hr has a JSON webhook and a form webhook...
    subscribers = write_yaml_subscribers(
        tmp_path, {webhook.url("/ok"): "hr", webhook.url("/form", scheme="form"): "hr"}
    )
    worker = start_worker(rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue")
    worker.wait_ready()

    # ...when a notification with a title is sent to hr...
    result = send_notification.delay("hr", "New message in HR", title="HR")
    wait_done(worker, result.id)

    # ...then each webhook got it once, in Apprise's fields.
    [as_json] = webhook.requests("/ok")
    assert as_json.content_type == "application/json"
    assert as_json.json()["message"] == "New message in HR"
    assert as_json.json()["title"] == "HR"
    [as_form] = webhook.requests("/form")
    assert as_form.content_type == "application/x-www-form-urlencoded"
    assert as_form.form()["message"] == "New message in HR"
    assert as_form.form()["title"] == "HR"
    assert len(outcome_lines(worker, result.id, "delivered to ")) == 2


@pytest.mark.rabbitmq
def test_a_target_answering_503_is_retried_until_it_takes_the_notification_once(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook
):
    # Given hr's only webhook answers 503 twice before it recovers...
    webhook.flaky_failures = 2
    subscribers = write_yaml_subscribers(tmp_path, {webhook.url("/flaky"): "hr"})
    worker = start_worker(rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue")
    worker.wait_ready()

    # ...when a notification is sent...
    result = send_notification.delay("hr", "Payroll is out", title="HR")
    wait_done(worker, result.id)

    # ...then it took three requests, and only the last one delivered.
    assert [r.status for r in webhook.requests("/flaky")] == [503, 503, 200]
    assert len(outcome_lines(worker, result.id, "failed for ")) == 2
    assert len(outcome_lines(worker, result.id, "retried in ")) == 2
    assert len(outcome_lines(worker, result.id, "delivered to ")) == 1


@pytest.mark.rabbitmq
def test_a_target_answering_400_is_dead_lettered_after_one_request(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook, hr_dead_letters
):
    # Given hr's only webhook refuses everything with 400...
    subscribers = write_yaml_subscribers(tmp_path, {webhook.url("/bad"): "hr"})
    worker = start_worker(rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue")
    worker.wait_ready()

    # ...when a notification is sent...
    result = send_notification.delay("hr", "Bad address", title="HR")
    assert wait_until(lambda: (rabbitmq.count("hr_dead_letter") or 0) >= 1, 60), (
        worker.output[-4000:]
    )

    # The notification is acknowledged and nothing else is in hr_queue
    # (ready or held by the worker), so no retry of it is still due.
    def settled() -> bool:
        rows = rabbitmq.table("queues", "name", "messages")
        return {row["name"]: row["messages"] for row in rows}.get("hr_queue") == "0"

    assert wait_until(settled, 30), worker.output[-4000:]
    assert len(outcome_lines(worker, result.id, "dead-lettered")) == 1

    # ...then it is dead-lettered at once, naming the target that refused it.
    [letter] = hr_dead_letters()
    assert (letter.reason, letter.notification_id, letter.attempts) == (
        "delivery_refused",
        result.id,
        1,
    )
    assert (letter.text, letter.title) == ("Bad address", "HR")
    assert letter.target is not None
    assert letter.target.startswith(f"json://127.0.0.1:{webhook.port}/bad")
    assert letter.target_id
    assert "400" in letter.error
    assert len(webhook.requests("/bad")) == 1
    assert outcome_lines(worker, result.id, "retried in ") == []


@pytest.mark.rabbitmq
def test_a_retry_for_one_failing_target_skips_the_targets_that_already_have_it(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook
):
    # Given hr has two working webhooks and one that answers 503 three times...
    webhook.flaky_failures = 3
    urls = [webhook.url("/ok"), webhook.url("/ok2"), webhook.url("/flaky")]
    subscribers = write_yaml_subscribers(tmp_path, dict.fromkeys(urls, "hr"))
    worker = start_worker(rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue")
    worker.wait_ready()

    # ...when a notification is sent and retried until the third one recovers...
    result = send_notification.delay("hr", "Team lunch on Friday")
    wait_done(worker, result.id)
    assert len(outcome_lines(worker, result.id, "retried in ")) == 3

    # ...then every webhook got it exactly once.
    assert len(webhook.requests("/ok")) == 1
    assert len(webhook.requests("/ok2")) == 1
    assert [r.status for r in webhook.requests("/flaky")] == [503, 503, 503, 200]


@pytest.mark.rabbitmq
def test_a_mailto_subscriber_gets_an_email_with_the_title_as_subject(
    rabbitmq: Broker, data_dir, tmp_path, start_worker
):
    with running_mail_server() as mail:
        # Given support subscribes an address on a plain SMTP server, in a TEXT file...
        subscribers = tmp_path / "subscribers.txt"
        subscribers.write_text(
            f"support=mailto://127.0.0.1:{mail.port}"
            "?from=alerts@example.com&to=support@example.com\n",
            encoding="utf-8",
        )
        worker = start_worker(
            rabbitmq_env(rabbitmq, data_dir, subscribers), "support_queue"
        )
        worker.wait_ready()

        # ...when a notification is sent to support...
        result = send_notification.delay(
            "support", "A customer waits on the line", title="Support"
        )
        wait_done(worker, result.id, group="support")

        # ...then one e-mail went to that address, titled and worded as sent.
        [(sender, recipients, message)] = mail.mails()
    assert sender == "alerts@example.com"
    assert recipients == ["support@example.com"]
    assert message["To"] == "support@example.com"
    assert message["Subject"] == "Support"
    plain = message.get_body(preferencelist=("plain",))
    assert plain is not None
    assert plain.get_content().strip() == "A customer waits on the line"


@pytest.mark.rabbitmq
def test_a_group_without_subscribers_is_only_logged_while_hr_reaches_its_target(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook
):
    # Given only hr has a subscriber, and the worker serves hr and marketing...
    subscribers = write_yaml_subscribers(tmp_path, {webhook.url("/ok"): "hr"})
    worker = start_worker(
        rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue", "marketing_queue"
    )
    worker.wait_ready()
    assert (
        "Group 'marketing' has 0 subscriber(s); its notifications are only logged."
        in worker.output
    )

    # ...when both groups get a notification...
    marketing = send_notification.delay("marketing", "Spring campaign")
    hr = send_notification.delay("hr", "New message in HR")
    wait_done(worker, hr.id)
    received = f"Notification {marketing.id} for group 'marketing' received: "
    assert worker.wait_for(lambda: received in worker.output, timeout_s=30), (
        worker.output[-4000:]
    )

    # ...then marketing's was logged, and only hr's reached the webhook.
    assert [r.json()["message"] for r in webhook.requests()] == ["New message in HR"]


@pytest.mark.rabbitmq
def test_no_subscriber_secret_appears_in_the_worker_output_or_dead_letters(
    rabbitmq: Broker, data_dir, tmp_path, start_worker, webhook, hr_dead_letters
):
    # Given three targets with a password: one works, one answers 503 once, one
    # refuses, so the worker logs success, retry and dead letter alike...
    webhook.flaky_failures = 1
    login = f"user:{SECRET}@"
    subscribers = write_yaml_subscribers(
        tmp_path,
        {
            webhook.url("/ok", credentials=login): "hr",
            webhook.url("/flaky", credentials=login): "hr",
            webhook.url("/bad", credentials=login): "hr",
        },
    )
    worker = start_worker(
        rabbitmq_env(rabbitmq, data_dir, subscribers), "hr_queue", loglevel="DEBUG"
    )
    worker.wait_ready()

    # ...when a notification is sent...
    result = send_notification.delay("hr", "Salaries are paid", title="HR")
    wait_done(worker, result.id)

    # ...then the webhook saw the password, and nothing the worker wrote shows it.
    assert all(r.authorization.startswith("Basic ") for r in webhook.requests())
    assert len(webhook.successes("/ok")) == len(webhook.successes("/flaky")) == 1
    letters = hr_dead_letters()
    assert [letter.reason for letter in letters] == ["delivery_refused"]
    assert SECRET not in json.dumps([letter.to_json() for letter in letters])
    assert SECRET not in worker.output
    worker.stop()
    assert SECRET not in worker.output  # nor while shutting down


# -- On the embedded broker -------------------------------------------------------------


def test_a_json_subscriber_gets_the_notification_once_on_the_embedded_broker(
    data_dir, tmp_path, start_worker, webhook
):
    # Given hr has a JSON webhook and no broker is configured...
    subscribers = write_yaml_subscribers(tmp_path, {webhook.url("/ok"): "hr"})
    env = child_env(data_dir, None, NOTIFICATIONS_SUBSCRIBERS=str(subscribers))
    worker = start_worker(env, "hr_queue")
    worker.wait_ready()

    # ...when a user sends a notification from the command line...
    sent = run_cli("send", "hr", "New message in HR", env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    notification_id = sent.stdout.strip()
    wait_done(worker, notification_id)

    # ...then the webhook got it once.
    [request] = webhook.requests("/ok")
    assert request.json()["message"] == "New message in HR"


def test_an_unusable_subscriber_is_reported_at_start_and_dead_lettered_per_notification(
    data_dir, tmp_path, start_worker, webhook
):
    # Given hr's subscribers include a service Apprise does not know...
    broken = "nosuchservice://ops:Hidden-pw-42@example.com/alerts"
    subscribers = write_yaml_subscribers(
        tmp_path, {webhook.url("/ok"): "hr", broken: "hr"}
    )
    env = child_env(data_dir, None, NOTIFICATIONS_SUBSCRIBERS=str(subscribers))

    # ...the worker starts and says, at start-up, which subscriber is unusable...
    worker = start_worker(env, "hr_queue")
    worker.wait_ready()
    [warning] = [line for line in worker.lines if "cannot be used" in line]
    assert "nosuchservice://ops:**@example.com/alerts" in warning

    # ...and a notification reaches the working target once, while the
    # broken one is dead-lettered with the reason.
    sent = run_cli("send", "hr", "New message in HR", env=env, cwd=tmp_path)
    assert sent.returncode == 0, sent.stderr
    notification_id = sent.stdout.strip()
    wait_done(worker, notification_id)
    assert len(webhook.requests("/ok")) == 1

    listed = run_cli("dead-letters", "list", "hr", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    assert notification_id in listed.stdout
    assert "bad_subscriber" in listed.stdout
    assert "Hidden-pw-42" not in listed.stdout + worker.output


class _SlowWebhook(http.server.ThreadingHTTPServer):
    """Answers every POST after a second; counts the requests in flight."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _SlowHandler)
        self.lock = threading.Lock()
        self.in_flight = 0
        self.most_in_flight = 0
        self.answered = 0


class _SlowHandler(http.server.BaseHTTPRequestHandler):
    server: _SlowWebhook

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        with self.server.lock:
            self.server.in_flight += 1
            self.server.most_in_flight = max(
                self.server.most_in_flight, self.server.in_flight
            )
        time.sleep(1.0)
        with self.server.lock:
            self.server.in_flight -= 1
            self.server.answered += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.mark.rabbitmq
def test_a_worker_waits_on_as_many_slow_subscribers_at_once_as_it_has_threads(
    rabbitmq: Broker, data_dir, tmp_path
):
    server = _SlowWebhook()
    serving = threading.Thread(target=server.serve_forever, daemon=True)
    serving.start()
    subscribers = tmp_path / "subscribers.txt"
    subscribers.write_text(f"hr=json://127.0.0.1:{server.server_port}/\n")
    worker = WorkerProcess(
        worker_command(
            "hr_queue", name=f"threads-{uuid.uuid4().hex[:6]}", pool="threads",
            concurrency=12,
        ),
        rabbitmq_env(rabbitmq, data_dir, subscribers),
        tmp_path,
    ).start()  # fmt: skip
    try:
        worker.wait_ready()
        for n in range(12):
            send_notification.delay("hr", f"Slow target {n}")
        assert worker.wait_for(lambda: server.answered >= 12, 60), worker.output[-3000:]
    finally:
        worker.stop()
        server.shutdown()
        server.server_close()

    # Twelve threads, twelve requests waiting on the target at the same time.
    assert server.most_in_flight == 12
