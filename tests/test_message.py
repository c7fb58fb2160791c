from __future__ import annotations

import pytest

from notifications import (
    InvalidTextError,
    InvalidTextTypeError,
    NotificationsError,
    UnknownGroupError,
)
from notifications.message import check_group, check_text
from notifications.settings import Settings

SETTINGS = Settings(groups=("hr", "marketing", "support"), max_text_bytes=10)


def test_an_unknown_group_names_the_allowed_groups_and_is_a_value_error():
    with pytest.raises(ValueError, match="sales") as caught:
        check_group(SETTINGS, "sales")

    assert isinstance(caught.value, UnknownGroupError)
    assert isinstance(caught.value, NotificationsError)
    assert str(caught.value) == (
        "Unknown group 'sales': allowed groups are hr, marketing, support."
    )


@pytest.mark.parametrize("group", [None, 3, b"hr", "HR", "hr_queue", " hr"])
def test_anything_but_a_configured_group_name_is_unknown(group):
    with pytest.raises(UnknownGroupError):
        check_group(SETTINGS, group)


@pytest.mark.parametrize("text", [None, 42, b"bytes", ["x"]])
def test_text_that_is_not_a_str_is_a_type_error(text):
    with pytest.raises(TypeError, match="must be a str") as caught:
        check_text(SETTINGS, text)

    assert isinstance(caught.value, InvalidTextTypeError)


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_blank_text_is_refused(text):
    with pytest.raises(InvalidTextError, match="empty"):
        check_text(SETTINGS, text)


def test_the_limit_counts_utf8_bytes_not_characters():
    assert check_text(SETTINGS, "a" * 10) == "a" * 10

    # Five characters, but fifteen bytes of UTF-8.
    with pytest.raises(InvalidTextError, match="15 bytes of UTF-8; at most 10"):
        check_text(SETTINGS, "€€€€€")


def test_text_with_a_lone_surrogate_is_refused():
    with pytest.raises(InvalidTextError, match="not valid Unicode"):
        check_text(SETTINGS, "bad \ud800")
