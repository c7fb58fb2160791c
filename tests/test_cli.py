"""The ``notifications`` command as a user runs it: exit codes and one-line errors."""

from __future__ import annotations

import pytest

from tests.helpers import assert_one_line_error, child_env, run_cli, run_python

UNREACHABLE = "amqp://guest:guest@127.0.0.1:1//"


@pytest.fixture
def embedded_env(data_dir):
    return child_env(data_dir, None)


def test_send_prints_the_notification_id(embedded_env, tmp_path, data_dir):
    result = run_cli("send", "hr", "New message in HR", env=embedded_env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    notification_id = result.stdout.strip()
    assert len(notification_id) == 36
    # The message waits in hr_queue's folder, named after its queue.
    queued = [p.name for p in (data_dir / "broker" / "queues").iterdir()]
    assert len(queued) == 1
    assert queued[0].endswith(".hr_queue.msg")


def test_send_to_an_unknown_group_names_the_allowed_ones(embedded_env, tmp_path):
    result = run_cli("send", "sales", "x", env=embedded_env, cwd=tmp_path)

    assert_one_line_error(result, "Unknown group 'sales'", "hr, marketing, support")


@pytest.mark.parametrize(
    ("text", "needle"),
    [("", "empty"), ("x" * 70_000, "at most 65536")],
)
def test_send_with_bad_text_says_what_is_allowed(embedded_env, tmp_path, text, needle):
    result = run_cli("send", "hr", text, env=embedded_env, cwd=tmp_path)

    assert_one_line_error(result, needle)


def test_bad_input_leaves_nothing_on_the_embedded_broker(
    embedded_env, tmp_path, data_dir
):
    run_cli("send", "sales", "x", env=embedded_env, cwd=tmp_path)
    run_cli("send", "hr", "", env=embedded_env, cwd=tmp_path)

    queues = data_dir / "broker" / "queues"
    assert not queues.exists() or list(queues.iterdir()) == []


def test_send_to_an_unreachable_broker_fails_in_bounded_time_naming_the_url(
    data_dir, tmp_path
):
    env = child_env(data_dir, UNREACHABLE, NOTIFICATIONS_PUBLISH_TIMEOUT_S="1")

    # The subprocess timeout is the bound: a hang fails the test.
    result = run_cli("send", "hr", "x", env=env, cwd=tmp_path, timeout_s=30)

    assert_one_line_error(
        result, "Cannot reach the broker at amqp://guest:**@127.0.0.1:1//", "within 1 s"
    )


def test_delay_to_an_unreachable_broker_raises_broker_unreachable(data_dir, tmp_path):

    env = child_env(data_dir, UNREACHABLE, NOTIFICATIONS_PUBLISH_TIMEOUT_S="1")
    code = (
        "from notifications import send_notification, BrokerUnreachableError\n"
        "try:\n"
        "    send_notification.delay('hr', 'x')\n"
        "except BrokerUnreachableError as exc:\n"
        "    print('raised:', exc)\n"
    )

    result = run_python(code, env, tmp_path, timeout_s=30)

    assert result.stdout.startswith("raised: Cannot reach the broker"), result.stderr


def test_worker_refuses_an_unknown_group_like_the_tutorial(embedded_env, tmp_path):
    result = run_cli("worker", "hr", "sales", env=embedded_env, cwd=tmp_path)

    assert_one_line_error(result, "Unknown group 'sales'", "hr, marketing, support")


def test_a_bad_group_list_is_reported_in_one_line(data_dir, tmp_path):
    env = child_env(data_dir, None, NOTIFICATION_GROUPS="hr,Sales Team")

    result = run_cli("topology", env=env, cwd=tmp_path)

    assert_one_line_error(result, "invalid group name 'Sales Team'")


def test_topology_prints_exchange_queues_and_bindings(data_dir, tmp_path):
    env = child_env(data_dir, None, NOTIFICATION_GROUPS="hr,marketing,support,urgent")

    result = run_cli("topology", env=env, cwd=tmp_path)

    assert result.returncode == 0
    assert "exchange: slack_notifications_direct (type direct, durable)" in result.stdout
    for group in ("hr", "marketing", "support", "urgent"):
        assert f"slack_notifications_direct --[{group}]--> {group}_queue" in result.stdout


def test_settings_come_from_dotenv_in_the_working_directory(data_dir, tmp_path):
    (tmp_path / ".env").write_text("NOTIFICATION_GROUPS=hr,urgent\n")

    result = run_cli("topology", env=child_env(data_dir, None), cwd=tmp_path)

    assert "urgent_queue" in result.stdout
    assert "support_queue" not in result.stdout


def test_the_demo_refuses_to_run_without_the_tutorials_groups(data_dir, tmp_path):
    env = child_env(data_dir, None, NOTIFICATION_GROUPS="hr,urgent")

    result = run_cli("demo", env=env, cwd=tmp_path)

    assert_one_line_error(result, "NOTIFICATION_GROUPS lacks support, marketing")


def test_send_refuses_a_title_on_several_lines(embedded_env, tmp_path):
    result = run_cli(
        "send", "hr", "x", "--title", "two\nlines", env=embedded_env, cwd=tmp_path
    )

    assert_one_line_error(result, "title must be a single line")
