"""Loading the subscribers file: every subscriber reachable, every mistake loud."""

from __future__ import annotations

import pytest

from notifications.errors import (
    ConfigurationError,
    PermanentDeliveryError,
    TransientDeliveryError,
)
from notifications.subscribers import Subscribers, classify

GROUPS = ("hr", "marketing", "support")


def load(tmp_path, text: str, name: str = "subscribers.txt") -> Subscribers:
    path = tmp_path / name
    path.write_text(text)
    return Subscribers.load(path, GROUPS)


def test_targets_are_found_by_their_group_tags(tmp_path):
    subscribers = load(
        tmp_path,
        "hr=json://hooks.example.com/hr\n"
        "hr,support=json://user:Pa55-word@hooks.example.com/both\n",
    )

    hr = subscribers.for_group("hr")
    assert [t.masked_url.split("?")[0] for t in hr] == [
        "json://hooks.example.com/hr",
        "json://user:****@hooks.example.com/both",
    ]
    assert len(subscribers.for_group("support")) == 1
    assert subscribers.for_group("marketing") == []
    assert all("Pa55-word" not in t.masked_url for t in hr)
    # The id is stable and does not reveal the URL.
    assert hr[1].target_id == subscribers.for_group("support")[0].target_id
    assert "Pa55" not in hr[1].target_id


def test_a_subscriber_without_a_tag_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="has no tag"):
        load(tmp_path, "json://hooks.example.com/untagged\n")


def test_a_subscriber_tagged_with_an_unknown_group_is_refused(tmp_path):
    with pytest.raises(ConfigurationError, match="tag 'sales': tag it with one or more"):
        load(tmp_path, "sales=json://hooks.example.com/typo\n")


def test_an_unusable_entry_becomes_a_broken_target_of_its_groups(tmp_path):
    subscribers = load(
        tmp_path,
        "hr=json://hooks.example.com/hr\nhr,support=nosuch://user:Secretpw99@host/x\n",
    )

    [broken] = subscribers.broken
    assert [t.target_id for t in subscribers.for_group("support")] == [broken.target_id]
    assert broken in subscribers.for_group("hr")
    assert broken.masked_url == "nosuch://user:**@host/x"
    assert broken.broken is not None
    assert "Unparseable URL" in broken.broken
    assert "Secretpw99" not in broken.broken
    assert "S...9" not in broken.broken


def test_an_unusable_yaml_entry_keeps_its_tags(tmp_path):
    subscribers = load(
        tmp_path,
        "version: 1\nurls:\n  - json://hooks.example.com/ok:\n      tag: hr\n"
        "  - nosuch://example.com/x:\n      tag: marketing, support\n",
        name="subscribers.yml",
    )

    [broken] = subscribers.broken
    assert subscribers.for_group("marketing") == [broken]
    assert subscribers.for_group("support") == [broken]
    assert broken not in subscribers.for_group("hr")


def test_a_missing_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigurationError, match="is not a file"):
        Subscribers.load(tmp_path / "nope.yml", GROUPS)


@pytest.mark.parametrize(
    ("report", "kind"),
    [
        ("Failed to send JSON notification: Servers are overloaded., error=503.",
         TransientDeliveryError),
        ("Failed to send JSON notification: Too Many Requests., error=429.",
         TransientDeliveryError),
        ("A Connection error occurred sending JSON notification to h.",
         TransientDeliveryError),
        ("Failed to send JSON notification: Bad Request., error=400.",
         PermanentDeliveryError),
        ("Failed to send JSON notification: Not Found., error=404.",
         PermanentDeliveryError),
    ],
)  # fmt: skip
def test_failures_are_sorted_into_transient_and_permanent(report, kind):
    assert classify(report) is kind
