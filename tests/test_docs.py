"""The README and .env.example keep up with the settings the code reads."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SETTINGS_SOURCE = (REPO / "notifications" / "settings.py").read_text()
README = (REPO / "README.md").read_text()


def variables_read_by_the_code() -> set[str]:
    return set(re.findall(r'"((?:CELERY|CLOUDAMQP|NOTIFICATION)\w*)"', SETTINGS_SOURCE))


def test_the_code_reads_the_variables_we_expect():
    assert {"CLOUDAMQP_URL", "CELERY_BROKER_URL", "NOTIFICATION_GROUPS"} <= (
        variables_read_by_the_code()
    )


def test_every_variable_the_code_reads_is_in_the_readme_table():
    table_rows = set(re.findall(r"^\| `(\w+)` \|", README, flags=re.MULTILINE))

    assert variables_read_by_the_code() <= table_rows


def test_every_variable_the_code_reads_is_in_env_example():
    example = (REPO / ".env.example").read_text()

    missing = [v for v in variables_read_by_the_code() if v not in example]
    assert missing == []


def test_the_readme_starts_with_the_demo_and_the_test_command():
    blocks = re.findall(r"```sh\n(.*?)\n```", README, flags=re.DOTALL)

    assert blocks[0].endswith("notifications demo")
    assert blocks[1].endswith("pytest")
    assert "<!-- test-command -->\n```sh\n" + blocks[1] in README
