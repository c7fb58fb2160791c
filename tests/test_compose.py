"""The docker-compose.yml shipped for users, read as YAML.

No Docker and no broker is needed: PyYAML resolves the ``<<`` merge keys
the same way Compose does, and ``${...}`` is checked as written, before
Compose would substitute it.
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from notifications.settings import DEFAULT_GROUPS, Settings, parse_groups

COMPOSE_FILE = Path(__file__).resolve().parent.parent / "docker-compose.yml"

BROKER_IMAGES = ("rabbitmq:", "cloudamqp/lavinmq")

# Only ``${VAR:?message}`` stops Compose when VAR is unset *or empty*:
# ``${VAR}`` and ``${VAR?message}`` let an empty value through, and an
# empty FLOWER_BASIC_AUTH is no login at all.
REQUIRED_VARIABLE = r"\$\{[A-Za-z_][A-Za-z0-9_]*:\?[^}]*\}"
REQUIRED_VALUE_RE = re.compile(rf"(?:{REQUIRED_VARIABLE}|[:,])+")

# A secret with a fallback, e.g. ``${RABBITMQ_DEFAULT_PASS:-guest}``.
SECRET_DEFAULT_RE = re.compile(
    r"\$\{\w*(?:PASS|PASSWORD|SECRET|BASIC_AUTH)\w*:?[-+][^}]*\}", re.IGNORECASE
)

SUBSTITUTION = r"\$\{[^}]*\}"
BROKER_URL_RE = re.compile(
    rf"^amqps?://(?P<user>{SUBSTITUTION}|[^:@/]*)"
    rf":(?P<password>{SUBSTITUTION}|[^@/]*)"
    rf"@(?P<host>[^:/]+)"
)

Service = dict[str, Any]


# -- Reading services ---------------------------------------------------------


def split_command(text: str) -> list[str]:
    """Split like a shell, keeping each ``${...}`` whole.

    Compose substitutes variables before it splits a command, so the
    spaces of a ``${VAR:?message}`` never separate arguments.
    """
    substitutions = re.findall(SUBSTITUTION, text)
    for i, substitution in enumerate(substitutions):
        text = text.replace(substitution, f"__substitution_{i}__", 1)

    args = shlex.split(text)
    for i, substitution in enumerate(substitutions):
        args = [arg.replace(f"__substitution_{i}__", substitution) for arg in args]
    return args


def command_args(service: Service) -> list[str]:
    """The service's command as arguments, unwrapped from ``sh -c``."""
    command = service.get("command", [])
    if isinstance(command, str):
        args = split_command(command)
    else:
        args = [str(arg) for arg in command]

    if args[:2] == ["sh", "-c"] and len(args) > 2:
        return split_command(args[2])
    return args


def runs_celery(service: Service, subcommand: str) -> bool:
    args = command_args(service)
    return "celery" in args and subcommand in args[args.index("celery") :]


def option_values(args: list[str], *names: str) -> list[str]:
    """Values of an option given as ``-Q x``, ``-Qx``, ``--queues x`` or
    ``--queues=x``."""
    values = []
    for i, arg in enumerate(args):
        for name in names:
            if arg == name and i + 1 < len(args):
                values.append(args[i + 1])
            elif name.startswith("--") and arg.startswith(f"{name}="):
                values.append(arg.partition("=")[2])
            elif not name.startswith("--") and arg.startswith(name) and arg != name:
                values.append(arg[len(name) :])
    return values


def consumed_queues(service: Service) -> frozenset[str]:
    """Queues a worker names with ``-Q``.

    Empty when it names none: such a worker consumes Celery's default
    ``celery`` queue instead of a group's.
    """
    values = option_values(command_args(service), "-Q", "--queues")
    return frozenset(q for value in values for q in value.split(",") if q)


def node_group(service: Service) -> str | None:
    """The group in a worker's node name ``<group>@%h``, if it has one."""
    names = option_values(command_args(service), "-n", "--hostname")
    if len(names) != 1 or "@" not in names[0]:
        return None
    return names[0].partition("@")[0]


def environment(service: Service) -> dict[str, str | None]:
    """The service's environment; ``None`` for a name passed through bare."""
    env = service.get("environment", {})
    if isinstance(env, dict):
        return {k: None if v is None else str(v) for k, v in env.items()}

    pairs = (str(item).partition("=") for item in env)
    return {name: value if sep else None for name, sep, value in pairs}


def is_required_value(value: str | None) -> bool:
    """True when ``value`` is only ``${VAR:?...}`` substitutions (joined by
    ':' or ','), so it holds no literal and cannot end up empty."""
    return value is not None and REQUIRED_VALUE_RE.fullmatch(value) is not None


def flower_is_authenticated(service: Service) -> bool:
    """True when every basic-auth source of a Flower service is required
    from the environment, and there is at least one."""
    args = command_args(service)
    sources: list[str | None] = [*option_values(args, "--basic-auth", "--basic_auth")]
    env = environment(service)
    if "FLOWER_BASIC_AUTH" in env:
        sources.append(env["FLOWER_BASIC_AUTH"])
    return bool(sources) and all(is_required_value(s) for s in sources)


def published_host_ips(service: Service) -> list[str | None]:
    """The host address of each published port; ``None`` means all."""
    ips: list[str | None] = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ips.append(port.get("host_ip"))
            continue
        parts = str(port).rsplit(":", 2)
        ips.append(parts[0] if len(parts) == 3 else None)
    return ips


def substitution_default(value: str) -> str | None:
    """The default of ``${VAR:-default}``, or ``None``."""
    match = re.fullmatch(r"\$\{\w+:?-(?P<default>[^}]*)\}", value)
    return match["default"] if match else None


@dataclass(frozen=True)
class Mount:
    source: str
    read_only: bool


# ``source:target[:mode]``; a ``${VAR:-default}`` source has colons of its own.
SHORT_VOLUME_RE = re.compile(
    rf"^(?P<source>{SUBSTITUTION}|[^:]+):(?P<target>[^:]+)(?::(?P<mode>[^:]+))?$"
)


def mounts(service: Service) -> dict[str, Mount]:
    """The service's volumes by their path in the container, in either syntax."""
    found: dict[str, Mount] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = Mount(
                str(volume.get("source", "")), bool(volume.get("read_only", False))
            )
            continue
        match = SHORT_VOLUME_RE.match(str(volume))
        if match:
            modes = (match["mode"] or "").split(",")
            found[match["target"]] = Mount(match["source"], "ro" in modes)
    return found


# -- Fixtures -----------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load(COMPOSE_FILE.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Service]:
    return compose["services"]


@pytest.fixture(scope="module")
def workers(services: dict[str, Service]) -> dict[str, Service]:
    found = {n: s for n, s in services.items() if runs_celery(s, "worker")}
    assert found, "No service runs `celery ... worker`."
    return found


@pytest.fixture(scope="module")
def flower(services: dict[str, Service]) -> Service:
    found = [s for s in services.values() if runs_celery(s, "flower")]
    assert len(found) == 1, "Expected exactly one service running Flower."
    return found[0]


@pytest.fixture(scope="module")
def broker_name(services: dict[str, Service]) -> str:
    found = [
        name
        for name, service in services.items()
        if str(service.get("image", "")).startswith(BROKER_IMAGES)
    ]
    assert len(found) == 1, f"Expected one broker service, found {found}."
    return found[0]


# -- Workers ------------------------------------------------------------------


@pytest.mark.parametrize("group", DEFAULT_GROUPS)
def test_every_configured_group_has_a_worker_service_consuming_its_queue(
    group: str, workers: dict[str, Service]
) -> None:
    queue = Settings().queue_name(group)

    consumers = [n for n, s in workers.items() if queue in consumed_queues(s)]

    assert consumers, f"No worker service consumes {queue!r}."


def test_each_worker_consumes_only_its_own_groups_queue(
    workers: dict[str, Service],
) -> None:
    for name, service in workers.items():
        group = node_group(service)
        assert group in DEFAULT_GROUPS, f"{name} has no node name <group>@%h."

        queues = consumed_queues(service)

        assert queues == {Settings().queue_name(group)}, (
            f"{name} (node {group}@...) consumes {sorted(queues)}."
        )
        assert "celery" not in queues


def test_the_default_groups_given_to_the_containers_are_the_groups_with_workers(
    services: dict[str, Service],
) -> None:
    for name, service in services.items():
        raw = environment(service).get("NOTIFICATION_GROUPS")
        if raw is None:
            continue

        default = substitution_default(raw)

        assert default is not None, f"{name}: NOTIFICATION_GROUPS={raw!r}."
        assert parse_groups(default) == DEFAULT_GROUPS


def test_a_worker_naming_no_queue_is_seen_consuming_no_group_queue() -> None:
    # Given a worker that would fall back to Celery's default queue
    service = {"command": "celery -A notifications worker -n hr@%h"}

    # Then no group queue is found, so the tests above would fail on it
    assert consumed_queues(service) == frozenset()


def test_queues_are_found_inside_an_sh_c_wrapper() -> None:
    service = {
        "command": 'sh -c "pip install . && exec celery -A notifications worker '
        '-Q hr_queue -n hr@%h"'
    }

    assert runs_celery(service, "worker")
    assert consumed_queues(service) == {"hr_queue"}
    assert node_group(service) == "hr"


def test_every_worker_reads_its_subscribers_from_a_file_mounted_read_only(
    workers: dict[str, Service],
) -> None:
    for name, service in workers.items():
        path = environment(service).get("NOTIFICATIONS_SUBSCRIBERS")
        assert path, f"{name} has no NOTIFICATIONS_SUBSCRIBERS."

        mount = mounts(service).get(path)

        assert mount is not None, f"{name} does not mount {path}."
        assert mount.read_only, f"{name} mounts {path} writable."
        # Docker mounts a host path that does not exist as an empty folder,
        # on which the worker refuses to start: the default must exist.
        default = substitution_default(mount.source) or mount.source
        assert (COMPOSE_FILE.parent / default).is_file(), f"{name}: {default}"


@pytest.mark.parametrize(
    ("volume", "expected"),
    [
        pytest.param("./s.yml:/etc/s.yml:ro", Mount("./s.yml", True), id="short-ro"),
        pytest.param(
            "${S:-./s.yml}:/etc/s.yml", Mount("${S:-./s.yml}", False), id="short-rw"
        ),
        pytest.param(
            {"type": "bind", "source": "./s.yml", "target": "/etc/s.yml"},
            Mount("./s.yml", False),
            id="long-rw",
        ),
    ],
)
def test_mounts_are_read_in_either_syntax(volume: Any, expected: Mount) -> None:
    assert mounts({"volumes": [volume]}) == {"/etc/s.yml": expected}


# -- Broker -------------------------------------------------------------------


def test_the_broker_has_a_healthcheck(
    services: dict[str, Service], broker_name: str
) -> None:
    healthcheck = services[broker_name].get("healthcheck", {})

    assert healthcheck.get("test"), "The broker has no healthcheck test."
    assert healthcheck["test"] != ["NONE"]
    assert not healthcheck.get("disable", False)


def test_every_worker_and_flower_wait_for_a_healthy_broker(
    workers: dict[str, Service], flower: Service, broker_name: str
) -> None:
    for service in [*workers.values(), flower]:
        depends_on = service.get("depends_on", {})
        # The short list form only waits for the broker to start, not to
        # accept connections.
        assert isinstance(depends_on, dict), "depends_on needs the long form."

        condition = depends_on.get(broker_name, {}).get("condition")

        assert condition == "service_healthy"


def test_workers_connect_to_the_broker_service_they_wait_for(
    workers: dict[str, Service], broker_name: str
) -> None:
    for name, service in workers.items():
        url = environment(service).get("CELERY_BROKER_URL") or ""

        match = BROKER_URL_RE.match(url)

        assert match, f"{name} has no amqp://user:password@host URL."
        assert match["host"] == broker_name


def test_the_broker_password_comes_from_the_environment_with_no_default(
    services: dict[str, Service], workers: dict[str, Service], broker_name: str
) -> None:
    broker_env = environment(services[broker_name])
    assert is_required_value(broker_env.get("RABBITMQ_DEFAULT_PASS"))

    for name, service in workers.items():
        match = BROKER_URL_RE.match(environment(service)["CELERY_BROKER_URL"] or "")
        assert match
        assert is_required_value(match["password"]), f"{name}: a literal broker password."


# -- Flower -------------------------------------------------------------------


def test_flower_is_never_unauthenticated(flower: Service) -> None:
    assert flower_is_authenticated(flower)


def test_flower_is_published_on_localhost_only(flower: Service) -> None:
    host_ips = published_host_ips(flower)

    assert host_ips, "Flower publishes no port."
    assert set(host_ips) == {"127.0.0.1"}


@pytest.mark.parametrize(
    "service",
    [
        pytest.param({"command": "celery -A notifications flower"}, id="no-auth"),
        pytest.param({"environment": {"FLOWER_BASIC_AUTH": "admin:admin"}}, id="literal"),
        pytest.param(
            {"environment": {"FLOWER_BASIC_AUTH": "${FLOWER_BASIC_AUTH:-admin:pw}"}},
            id="default",
        ),
        pytest.param(
            {"environment": ["FLOWER_BASIC_AUTH=${FLOWER_BASIC_AUTH}"]},
            id="empty-when-unset",
        ),
        pytest.param(
            {
                "command": "celery -A notifications flower --basic-auth=admin:pw",
                "environment": {"FLOWER_BASIC_AUTH": "${FLOWER_BASIC_AUTH:?set it}"},
            },
            id="command-line-overrides-env",
        ),
    ],
)
def test_flower_without_a_required_login_is_seen_as_unauthenticated(
    service: Service,
) -> None:
    assert not flower_is_authenticated(service)


def test_flower_with_a_login_from_required_variables_is_authenticated() -> None:
    service = {
        "command": "celery -A notifications flower "
        "--basic-auth=${FLOWER_USER:?set it}:${FLOWER_PASSWORD:?set it}"
    }

    assert flower_is_authenticated(service)


# -- Secrets ------------------------------------------------------------------


def test_no_password_literal_is_committed() -> None:
    text = COMPOSE_FILE.read_text(encoding="utf-8")

    assert "guest:guest" not in text
    assert SECRET_DEFAULT_RE.findall(text) == []


def test_a_default_on_a_secret_variable_is_caught() -> None:
    text = "PASS: ${RABBITMQ_DEFAULT_PASS:-guest}\nAUTH: ${FLOWER_BASIC_AUTH-a:b}"

    assert len(SECRET_DEFAULT_RE.findall(text)) == 2
