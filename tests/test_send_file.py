"""``notifications send GROUP --file FILE``: one notification per line, on RabbitMQ.

The command runs as a user runs it, in a child process pointed at the
session's vhost; what it published is taken off ``hr_queue``.
"""

from __future__ import annotations

import json
import os
import pty
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from notifications.commands.send import LINES_PER_BATCH
from tests.helpers import (
    Broker,
    assert_one_line_error,
    child_env,
    run_cli,
)

pytestmark = pytest.mark.rabbitmq

UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")


@pytest.fixture
def env(rabbitmq: Broker, data_dir: Path) -> dict[str, str]:
    return child_env(data_dir, rabbitmq.url)


def printed_ids(stdout: str) -> list[str]:
    ids = stdout.splitlines()
    assert all(UUID.match(i) for i in ids), stdout[:500]
    return ids


def queued(rabbitmq: Broker) -> list[tuple[str, str, dict[str, Any]]]:
    """(id, text, kwargs) of each notification on hr_queue, in queue order."""
    found = []
    for message in rabbitmq.take_all():
        (group, text), kwargs, _ = json.loads(message.body)
        assert group == "hr"
        found.append((message.headers["id"], text, kwargs))
    return found


def test_each_line_of_a_file_is_sent_and_its_id_printed_in_order(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path
):
    # More lines than one batch: the ids of every batch are printed.
    texts = [f"Payslip {n} is ready" for n in range(LINES_PER_BATCH + 5)]
    (tmp_path / "payslips.txt").write_text("\n".join(texts) + "\n")

    result = run_cli("send", "hr", "--file", "payslips.txt", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    assert result.stderr == ""  # no progress bar when stderr is not a terminal
    ids = printed_ids(result.stdout)
    assert queued(rabbitmq) == [(i, t, {}) for i, t in zip(ids, texts, strict=True)]


def test_lines_from_stdin_are_sent_with_the_title(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path
):
    texts = ["Payroll is out", "It's on the intranet", "Ünïcödé too 🚀"]

    result = run_cli(
        "send", "hr", "--file", "-", "--title", "Payroll",
        env=env, cwd=tmp_path, input_text="\n".join(texts),
    )  # fmt: skip

    assert result.returncode == 0, result.stderr
    ids = printed_ids(result.stdout)
    expected = [(i, t, {"title": "Payroll"}) for i, t in zip(ids, texts, strict=True)]
    assert queued(rabbitmq) == expected


def test_windows_line_endings_are_not_part_of_the_texts(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path
):
    (tmp_path / "dos.txt").write_bytes(b"First\r\nSecond\r\nThird has a \r inside\r\n")

    result = run_cli("send", "hr", "--file", "dos.txt", env=env, cwd=tmp_path)

    assert result.returncode == 0, result.stderr
    texts = [text for _, text, _ in queued(rabbitmq)]
    assert texts == ["First", "Second", "Third has a \r inside"]


@pytest.mark.parametrize(
    ("bad_line", "needles"),
    [
        (b"", ["Notification text is empty", "no line may be empty or blank"]),
        (b"   \t", ["Notification text is empty", "no line may be empty or blank"]),
        (b"caf\xe9", ["is not valid UTF-8", "each line must be UTF-8 text"]),
        (b"x" * 70_000, ["at most 65536 are allowed"]),
    ],
    ids=["empty", "blank", "not-utf-8", "too-long"],
)
def test_one_bad_line_anywhere_sends_nothing_and_names_its_line(
    rabbitmq: Broker,
    env: dict[str, str],
    tmp_path: Path,
    bad_line: bytes,
    needles: list[str],
):
    # The bad line is in the second batch: the first is not sent either.
    lines = [b"Fine %d" % n for n in range(LINES_PER_BATCH + 5)]
    lines[LINES_PER_BATCH + 2] = bad_line
    (tmp_path / "texts.txt").write_bytes(b"\n".join(lines) + b"\n")

    result = run_cli("send", "hr", "--file", "texts.txt", env=env, cwd=tmp_path)

    assert_one_line_error(result, f"Line {LINES_PER_BATCH + 3} of texts.txt", *needles)
    assert result.stdout == ""
    assert not rabbitmq.count("hr_queue")


def test_an_empty_file_is_an_error(rabbitmq: Broker, env: dict[str, str], tmp_path: Path):
    (tmp_path / "empty.txt").write_bytes(b"")

    result = run_cli("send", "hr", "--file", "empty.txt", env=env, cwd=tmp_path)

    assert_one_line_error(result, "empty.txt is empty", "one notification text per line")


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (
            ["hr", "Hello", "--file", "texts.txt"],
            "TEXT and --file cannot be used together",
        ),
        (["hr"], "Nothing to send"),
    ],
    ids=["both", "neither"],
)
def test_exactly_one_of_text_and_file_is_required(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path, args: list[str], needle: str
):
    (tmp_path / "texts.txt").write_text("Hello\n")

    result = run_cli("send", *args, env=env, cwd=tmp_path)

    assert_one_line_error(result, needle, "give the TEXT to send, or --file FILE")
    assert not rabbitmq.count("hr_queue")


@pytest.mark.parametrize(
    ("name", "reason"),
    [("missing.txt", "No such file or directory"), ("a-folder", "Is a directory")],
)
def test_a_file_that_cannot_be_read_is_named_in_the_error(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path, name: str, reason: str
):
    (tmp_path / "a-folder").mkdir()

    result = run_cli("send", "hr", "--file", name, env=env, cwd=tmp_path)

    assert_one_line_error(result, f"Cannot read {name} ({reason})", "or - for stdin")
    assert not rabbitmq.count("hr_queue")


def test_an_unreachable_broker_is_one_line_naming_it_without_its_password(
    data_dir: Path, tmp_path: Path
):
    env = child_env(
        data_dir, "amqp://guest:guest@127.0.0.1:1//", NOTIFICATIONS_PUBLISH_TIMEOUT_S="1"
    )
    (tmp_path / "texts.txt").write_text("One\nTwo\n")

    # The subprocess timeout is the bound: a hang fails the test.
    result = run_cli("send", "hr", "--file", "texts.txt", env=env, cwd=tmp_path)

    assert_one_line_error(
        result,
        "Sending lines 1 to 2 of texts.txt: Cannot reach the broker at "
        "amqp://guest:**@127.0.0.1:1//",
        "None of the 2 lines was confirmed.",
    )
    assert result.stdout == ""


def test_a_send_the_broker_stops_prints_the_ids_it_confirmed(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path
):
    # Given hr_queue takes no more than five messages...
    run_cli("send", "hr", "Declares the queue", env=env, cwd=tmp_path)
    rabbitmq.purge_queues("hr_queue")
    (tmp_path / "texts.txt").write_text("".join(f"Reminder {n}\n" for n in range(12)))

    # ...a send of twelve lines stops with the five the broker took.
    with rabbitmq.refusing_beyond("hr_queue", 5):
        result = run_cli("send", "hr", "--file", "texts.txt", env=env, cwd=tmp_path)

    assert_one_line_error(
        result, "refused 7 notifications", "5 of the 12 lines were sent and confirmed"
    )
    ids = printed_ids(result.stdout)
    assert [(i, t) for i, t, _ in queued(rabbitmq)] == [
        (i, f"Reminder {n}") for n, i in enumerate(ids)
    ]
    assert len(ids) == 5


def test_the_progress_bar_goes_to_a_terminal_and_the_ids_to_stdout(
    rabbitmq: Broker, env: dict[str, str], tmp_path: Path
):
    (tmp_path / "texts.txt").write_text("".join(f"Line {n}\n" for n in range(20)))
    terminal, terminal_end = pty.openpty()
    try:
        # stderr on a terminal, stdout on a pipe, as in `... > ids.txt`. The
        # bar writes far less than a terminal buffers: read it afterwards.
        process = subprocess.run(
            [sys.executable, "-m", "notifications", "send", "hr", "--file", "texts.txt"],
            env=env,
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=terminal_end,
            text=True,
            timeout=60,
            check=False,
        )
    finally:
        os.close(terminal_end)
    try:
        shown = read_all(terminal)
    finally:
        os.close(terminal)

    assert process.returncode == 0, shown
    assert len(printed_ids(process.stdout)) == 20
    assert "Sending" in shown
    assert "100%" in shown


def read_all(terminal: int) -> str:
    """What was written to a terminal whose other end is closed."""
    chunks = []
    while True:
        try:
            chunk = os.read(terminal, 4096)
        except OSError:  # Linux: EIO once the other end is closed and read
            break
        if not chunk:
            break
        chunks.append(chunk)
    return b"".join(chunks).decode(errors="replace")
