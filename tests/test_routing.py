from __future__ import annotations

import pytest

from notifications import UnknownGroupError, app, send_notification
from notifications.routing import NotificationRouter
from notifications.settings import Settings

SETTINGS = Settings(groups=("hr", "marketing", "support"), broker_url=None)


@pytest.mark.parametrize("group", ["hr", "marketing", "support"])
def test_a_notification_is_routed_to_its_groups_queue_by_routing_key(group):
    route = NotificationRouter(SETTINGS)(
        "notifications.send_notification", (group, "hi"), {}, {}
    )

    assert route is not None
    assert route["queue"].name == f"{group}_queue"
    assert route["routing_key"] == group
    assert route["exchange"].name == "slack_notifications_direct"


def test_the_group_is_found_in_keyword_arguments_too():
    route = NotificationRouter(SETTINGS)(
        "notifications.send_notification", (), {"group": "support", "text": "x"}, {}
    )

    assert route is not None
    assert route["queue"].name == "support_queue"


def test_an_unknown_group_is_never_given_a_queue():
    router = NotificationRouter(SETTINGS)

    with pytest.raises(UnknownGroupError):
        router("notifications.send_notification", ("sales", "x"), {}, {})


def test_other_tasks_are_left_to_celery():
    assert NotificationRouter(SETTINGS)("other.task", (), {}, {}) is None


@pytest.mark.parametrize(
    "make_options",
    [
        lambda: {"args": ("support", "x")},
        lambda: {"kwargs": {"group": "support", "text": "x"}},
    ],
)
def test_celerys_own_router_sends_the_task_to_the_direct_exchange(make_options):
    options = make_options()

    route = app.amqp.router.route(
        {}, "notifications.send_notification", options.get("args"), options.get("kwargs")
    )

    assert route["queue"].name == "support_queue"
    assert route["routing_key"] == "support"
    assert route["exchange"].name == "slack_notifications_direct"


def test_the_task_is_registered_under_a_stable_name():
    assert send_notification.name == "notifications.send_notification"
