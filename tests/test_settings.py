from __future__ import annotations

from pathlib import Path

import pytest

from notifications.errors import ConfigurationError
from notifications.settings import (
    DEFAULT_EXCHANGE,
    load_settings,
    mask_url,
    parse_groups,
)
from notifications.store import open_store


def settings_from(env: dict[str, str], cwd: Path):
    return load_settings(environ=env, cwd=cwd)


def test_defaults_are_the_tutorials_three_groups_on_the_embedded_broker(tmp_path):
    settings = settings_from({"HOME": str(tmp_path)}, tmp_path)

    assert settings.groups == ("hr", "marketing", "support")
    assert settings.queue_names == ("hr_queue", "marketing_queue", "support_queue")
    assert settings.exchange_name == DEFAULT_EXCHANGE == "slack_notifications_direct"
    assert settings.embedded
    assert settings.max_text_bytes == 64 * 1024


def test_the_default_exchange_does_not_clash_with_the_tutorials_fanout_exchange():
    assert DEFAULT_EXCHANGE != "slack_notifications"
    assert DEFAULT_EXCHANGE != "slack_notifications_fanout"


def test_groups_come_from_notification_groups_with_spaces_trimmed(tmp_path):
    settings = settings_from({"NOTIFICATION_GROUPS": " hr , urgent,on-call_2 "}, tmp_path)

    assert settings.groups == ("hr", "urgent", "on-call_2")
    assert settings.queue_name("urgent") == "urgent_queue"


@pytest.mark.parametrize(
    "raw",
    ["HR", "hr,Marketing", "sales team", "-hr", "hr.queue", "hr/x", "é", "a" * 65],
)
def test_an_invalid_group_name_is_refused_with_the_rule(raw):
    with pytest.raises(ConfigurationError) as caught:
        parse_groups(raw)

    message = str(caught.value)
    assert "invalid group name" in message
    assert "lowercase letters, digits, '-' and '_'" in message


@pytest.mark.parametrize("raw", ["", " , ,"])
def test_an_empty_group_list_is_refused(raw):
    with pytest.raises(ConfigurationError, match="at least one group"):
        parse_groups(raw)


def test_a_group_listed_twice_is_refused():
    with pytest.raises(ConfigurationError, match="hr more than once"):
        parse_groups("hr,support,hr")


def test_dotenv_in_the_working_directory_is_read(tmp_path):
    (tmp_path / ".env").write_text(
        "NOTIFICATION_GROUPS=hr,urgent\nCLOUDAMQP_URL=amqp://u:p@broker:5672/v\n"
    )

    settings = settings_from({}, tmp_path)

    assert settings.groups == ("hr", "urgent")
    assert settings.broker_url == "amqp://u:p@broker:5672/v"


def test_real_environment_variables_win_over_dotenv(tmp_path):
    (tmp_path / ".env").write_text("NOTIFICATION_GROUPS=hr,urgent\n")

    settings = settings_from({"NOTIFICATION_GROUPS": "support"}, tmp_path)

    assert settings.groups == ("support",)


def test_celery_broker_url_wins_over_cloudamqp_url(tmp_path):
    env = {
        "CLOUDAMQP_URL": "amqps://a:b@cloud.example/v",
        "CELERY_BROKER_URL": "amqp://c:d@local/v",
    }

    assert settings_from(env, tmp_path).broker_url == "amqp://c:d@local/v"


def test_cloudamqp_url_alone_selects_that_broker(tmp_path):
    env = {"CLOUDAMQP_URL": "amqps://a:b@cloud.example/v"}

    settings = settings_from(env, tmp_path)

    assert not settings.embedded
    assert settings.masked_broker_url == "amqps://a:**@cloud.example/v"


def test_a_broker_url_without_scheme_is_refused_without_showing_the_password(tmp_path):
    with pytest.raises(ConfigurationError) as caught:
        settings_from({"CLOUDAMQP_URL": "user:Sekrit@host"}, tmp_path)

    assert "no scheme" in str(caught.value)
    assert "Sekrit" not in str(caught.value)


def test_the_embedded_broker_lives_in_a_per_user_folder_whatever_the_cwd(tmp_path):
    home = tmp_path / "home"
    env = {"HOME": str(home)}

    one = settings_from(env, tmp_path / "a")
    other = settings_from(env, tmp_path / "b")

    assert one.embedded_dir == other.embedded_dir
    assert str(one.embedded_dir).startswith(str(home))


def test_the_data_folder_can_be_overridden(tmp_path):
    settings = settings_from({"NOTIFICATIONS_DATA_DIR": str(tmp_path / "x")}, tmp_path)

    assert settings.embedded_dir == tmp_path / "x" / "broker"


def test_xdg_data_home_is_respected(tmp_path):
    settings = settings_from({"XDG_DATA_HOME": str(tmp_path / "xdg")}, tmp_path)

    assert settings.data_dir == tmp_path / "xdg" / "notifications"


@pytest.mark.parametrize("name", ["amq.direct", "has space", "", "x" * 256])
def test_an_unusable_exchange_name_is_refused(tmp_path, name):
    env = {"NOTIFICATIONS_EXCHANGE": name}
    if name == "":
        # An empty value means "not set": the default serves.
        assert settings_from(env, tmp_path).exchange_name == DEFAULT_EXCHANGE
        return
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_EXCHANGE"):
        settings_from(env, tmp_path)


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("NOTIFICATIONS_PUBLISH_TIMEOUT_S", "soon"),
        ("NOTIFICATIONS_PUBLISH_TIMEOUT_S", "0"),
        ("NOTIFICATIONS_PUBLISH_TIMEOUT_S", "inf"),
        ("NOTIFICATIONS_MAX_TEXT_BYTES", "-1"),
        # Not cut down to 0, which would refuse every text.
        ("NOTIFICATIONS_MAX_TEXT_BYTES", "0.5"),
        ("NOTIFICATIONS_MAX_RETRIES", "2.5"),
        ("NOTIFICATIONS_MAX_REDELIVERIES", "-3"),
    ],
)
def test_a_bad_number_is_refused_naming_the_variable(tmp_path, name, value):
    with pytest.raises(ConfigurationError) as raised:
        settings_from({name: value}, tmp_path)

    message = str(raised.value)
    assert message.startswith(f"{name}={value!r} is not ")
    assert "give a " in message
    assert "\n" not in message


def test_numbers_are_read(tmp_path):
    env = {
        "NOTIFICATIONS_PUBLISH_TIMEOUT_S": "1.5",
        "NOTIFICATIONS_MAX_TEXT_BYTES": "100",
    }

    settings = settings_from(
        {
            **env,
            "NOTIFICATIONS_MAX_RETRIES": "0",
            "NOTIFICATIONS_MAX_REDELIVERIES": " 7 ",
        },
        tmp_path,
    )

    assert settings.publish_timeout_s == 1.5
    assert settings.max_text_bytes == 100
    assert (settings.max_retries, settings.max_redeliveries) == (0, 7)


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("amqp://guest:guest@localhost:5672//", "amqp://guest:**@localhost:5672//"),
        ("amqps://u:p%40ss@h.cloudamqp.com/v", "amqps://u:**@h.cloudamqp.com/v"),
        ("amqp://localhost//", "amqp://localhost//"),
    ],
)
def test_mask_url_hides_the_password(url, masked):
    assert mask_url(url) == masked


def test_unrouted_is_reserved_for_dead_letters_without_a_group():
    with pytest.raises(ConfigurationError, match="reserved"):
        parse_groups("hr,unrouted")


@pytest.mark.parametrize(
    ("url", "kind", "where"),
    [
        (None, "SQLiteStore", "delivered.sqlite3"),
        ("sqlite:////var/lib/n/delivered.db", "SQLiteStore", "/var/lib/n/delivered.db"),
        (
            "redis://:secret@127.0.0.1:6379/0",
            "RedisStore",
            "redis://:**@127.0.0.1:6379/0",
        ),
        ("postgresql://u:secret@db/n", "PostgresStore", "postgresql://u:**@db/n"),
        ("postgres://u:secret@db/n", "PostgresStore", "postgres://u:**@db/n"),
    ],
)
def test_the_store_of_delivered_ids_is_chosen_by_url(tmp_path, url, kind, where):
    env = {"NOTIFICATIONS_DATA_DIR": str(tmp_path)}
    if url:
        env["NOTIFICATIONS_STORE_URL"] = url

    store = open_store(settings_from(env, tmp_path))

    assert type(store).__name__ == kind
    assert store.location.endswith(where)
    assert "secret" not in store.location


def test_an_unknown_store_is_refused_naming_what_is_allowed(tmp_path):
    with pytest.raises(ConfigurationError, match="sqlite://, redis://"):
        settings_from({"NOTIFICATIONS_STORE_URL": "mongodb://x"}, tmp_path)


def test_a_retry_backoff_longer_than_the_consumer_timeout_allows_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="at most 900 s"):
        settings_from({"NOTIFICATIONS_RETRY_BACKOFF_MAX_S": "3600"}, tmp_path)
