"""Throughput, latency and memory of this project next to plain clients, in one run.

    python benchmarks/run.py [--count N] [--out DIR] [--smoke]
    python benchmarks/run.py --profile N      # where the time of .delay() goes

Every measurement runs in a vhost of its own on the local RabbitMQ
(created and deleted with rabbitmqctl), on durable queues with persistent
short messages. Each figure is printed with its ratio to baselines measured
in the same run, on the same machine, minutes apart: figures from another
run or another machine are not comparable.

The project's own code (``.delay()``, ``send_many``, the worker) always
runs in a child process whose environment points at the measurement's
vhost and a fresh data folder, so it reads its settings as a user's
process would.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
# Run as a script, this folder (not the repository) is on sys.path.
sys.path.insert(0, str(REPO))

from benchmarks import sink  # noqa: E402

HOST = "127.0.0.1"
AMQP_PORT = 5672
#: The queue of the plain clients' measurements.
QUEUE = "bench_queue"
#: As in benchmarks/dramatiq_actors.py, which the dramatiq workers load.
DRAMATIQ_ACTOR = "record"
DRAMATIQ_QUEUE = "bench"
#: How long the HTTP endpoint takes to answer each delivery.
HTTP_DELAY_S = 0.05
#: Highest rate of the latency measurement: well below what one sender
#: and one worker handle, so it measures waiting, not queueing.
LATENCY_RATE_PER_S = 100.0
POLL_S = 0.01


# -- The broker ---------------------------------------------------------------


def rabbitmqctl(*args: str, timeout_s: float = 60) -> str:
    executable = shutil.which("rabbitmqctl")
    if executable is None:
        raise SystemExit("rabbitmqctl is not on PATH: it creates the benchmark's vhosts.")
    result = subprocess.run(
        [executable, "-q", *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=True,
    )
    return result.stdout


@contextlib.contextmanager
def fresh_vhost(label: str) -> Iterator[str]:
    """A new vhost for one measurement, deleted afterwards; yields its URL."""
    vhost = f"notifications-bench-{label}-{uuid.uuid4().hex[:6]}"
    rabbitmqctl("add_vhost", vhost)
    try:
        rabbitmqctl("set_permissions", "-p", vhost, "guest", ".*", ".*", ".*")
        yield f"amqp://guest:guest@{HOST}:{AMQP_PORT}/{vhost}"
    finally:
        rabbitmqctl("delete_vhost", vhost)


class QueueWatch:
    """Reads a queue's depth and consumer count with passive declares."""

    def __init__(self, url: str) -> None:
        import pika

        self._pika = pika
        self.connection = pika.BlockingConnection(pika.URLParameters(url))
        self.channel = self.connection.channel()

    def look(self, queue: str) -> tuple[int, int] | None:
        """(ready messages, consumers), or None while the queue does not exist."""
        try:
            ok = self.channel.queue_declare(queue, passive=True).method
        except self._pika.exceptions.ChannelClosedByBroker:
            # A missing queue closes the channel (404): open another.
            self.channel = self.connection.channel()
            return None
        return ok.message_count, ok.consumer_count

    def wait(
        self, queue: str, ready: Callable[[int, int], bool], timeout_s: float, what: str
    ) -> float:
        """Poll until ``ready(messages, consumers)``; return the wall-clock time."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            seen = self.look(queue)
            if seen is not None and ready(*seen):
                return time.time()
            time.sleep(POLL_S)
        raise TimeoutError(f"no {what} on {queue} within {timeout_s:g} s")

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.connection.close()


@contextlib.contextmanager
def watching(url: str) -> Iterator[QueueWatch]:
    watch = QueueWatch(url)
    try:
        yield watch
    finally:
        watch.close()


def expect_depth(url: str, queue: str, expected: int) -> None:
    """Refuse a publish figure whose messages did not all reach the queue.

    The queue's count can trail what its channel already routed by a few
    milliseconds, so it is read again for a little while; more messages
    than expected, or fewer after that, refuse the figure.
    """
    deadline = time.monotonic() + 10
    with watching(url) as watch:
        seen = watch.look(queue)
        while (seen is None or seen[0] < expected) and time.monotonic() < deadline:
            time.sleep(POLL_S)
            seen = watch.look(queue)
    if seen is None or seen[0] != expected:
        raise RuntimeError(f"{queue} holds {seen} messages, expected {expected}")


# -- Processes ----------------------------------------------------------------


def child_env(url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """The environment of a project process: this vhost, its own data folder."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CELERY_", "NOTIFICATION", "BENCH_"))
        and k != "CLOUDAMQP_URL"
    }
    env["CELERY_BROKER_URL"] = url
    env["NOTIFICATIONS_DATA_DIR"] = str(data_dir)
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH", "")) if p
    )
    env.update(extra)
    return env


@dataclass
class Background:
    """A process started in its own session, stopped with everything it forked."""

    command: list[str]
    env: dict[str, str]
    log: Path
    process: subprocess.Popen[bytes] | None = None

    def start(self) -> Background:
        with open(self.log, "wb") as out:
            self.process = subprocess.Popen(
                self.command,
                env=self.env,
                cwd=REPO,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        return self

    def check_alive(self) -> None:
        if self.process is not None and self.process.poll() is not None:
            tail = self.log.read_text(errors="replace")[-2000:]
            raise RuntimeError(f"{self.command[:6]} exited early:\n{tail}")

    def stop(self, timeout_s: float = 30) -> None:
        process = self.process
        if process is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout_s)
        # Pool processes outlive a main process that did not wait for them.
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signal.SIGKILL)


@contextlib.contextmanager
def running(command: list[str], env: dict[str, str], log: Path) -> Iterator[Background]:
    background = Background(command, env, log).start()
    try:
        yield background
    finally:
        background.stop()


def process_tree(pid: int) -> list[int]:
    """``pid`` and all its descendants, as /proc lists them now."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            # The command name is in parentheses and may hold spaces.
            fields = stat.read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, pending = [], [pid]
    while pending:
        current = pending.pop()
        found.append(current)
        pending.extend(children.get(current, []))
    return found


def tree_rss_bytes(pid: int) -> int:
    """Resident memory of ``pid`` and all its descendants, summed.

    Pages a forked child still shares with its parent count once per
    process, so this overstates a prefork pool; dramatiq's processes are
    forked too and overstated the same way.
    """
    total = 0
    for current in process_tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{current}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def tree_cpu_s(pids: Sequence[int]) -> tuple[float, float]:
    """(user, system) CPU seconds used so far by ``pids`` and their descendants.

    Counts every thread of each process, and the processes alive now: a
    worker's pool processes live as long as the measurement.
    """
    user = system = 0
    for pid in pids:
        for current in process_tree(pid):
            with contextlib.suppress(OSError):
                fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1]
                utime, stime = fields.split()[11:13]
                user, system = user + int(utime), system + int(stime)
    return user / _CLOCK_TICKS_PER_S, system / _CLOCK_TICKS_PER_S


def run_child(mode: str, env: dict[str, str], *args: str, timeout_s: float) -> Any:
    """Run this script in ``mode`` in a child process; return its JSON answer."""
    result = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "--child", mode, *args],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    if result.returncode != 0:
        raise RuntimeError(f"child {mode} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


#: Threads per process of both frameworks in the side-by-side drain.
THREADS = 8
#: The worker's default pool size (celeryconfig.py).
DEFAULT_THREADS = 32


def celery_worker(threads: int | None = None) -> list[str]:
    """The command the README gives: a pool of threads, WARNING log.

    ``threads`` sets ``-c``; ``None`` leaves the worker at its default.
    """
    command = [
        sys.executable, "-m", "celery", "-A", "notifications", "worker",
        "-Q", "hr_queue", "-n", f"bench-{uuid.uuid4().hex[:6]}@%h",
    ]  # fmt: skip
    return command + (["-c", str(threads)] if threads else [])


def dramatiq_worker(processes: int, threads: int = THREADS) -> list[str]:
    return [
        sys.executable, "-m", "dramatiq", "benchmarks.dramatiq_actors",
        "--processes", str(processes), "--threads", str(threads),
    ]  # fmt: skip


# -- Results ------------------------------------------------------------------


@dataclass
class Figure:
    section: str
    name: str
    value: float
    unit: str
    #: Baseline name -> the figure it is compared with.
    versus: dict[str, Figure] = field(default_factory=dict)
    note: str = ""
    #: This project's figure (drawn in the chart), not a baseline's.
    ours: bool = False

    def ratio(self, baseline: Figure) -> float:
        return self.value / baseline.value if baseline.value else float("nan")


@dataclass
class Results:
    figures: list[Figure] = field(default_factory=list)

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        print(f"  {figure.name}: {format_value(figure)}", flush=True)
        return figure


def format_value(figure: Figure) -> str:
    digits = 0 if figure.value >= 100 else 1 if figure.value >= 10 else 2
    return f"{figure.value:,.{digits}f} {figure.unit}"


def table(results: Results) -> str:
    baselines: list[str] = []
    for figure in results.figures:
        for name in figure.versus:
            if name not in baselines:
                baselines.append(name)
    header = ["section", "measurement", "value", *[f"÷ {b}" for b in baselines]]
    rows = [header, ["---"] * len(header)]
    for figure in results.figures:
        cells = [figure.section, figure.name, format_value(figure)]
        for name in baselines:
            base = figure.versus.get(name)
            cells.append(f"{figure.ratio(base):.2f}×" if base else "")
        rows.append(cells)
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


@dataclass(frozen=True)
class Target:
    """A ratio this project aims for, and where to look when it falls short."""

    goal: str
    section: str
    #: The start of the measured figure's name.
    name: str
    baseline: str
    at_least: float
    #: What says why, when the ratio falls short.
    why: str


TARGETS = (
    Target(
        ".delay() ≥ 1.0× pika, confirm per message",
        "publish",
        ".delay()",
        "pika confirm/msg",
        1.0,
        "`--profile N` profiles .delay(); both wait one confirm round trip",
    ),
    Target(
        "send_many ≥ 1.0× dramatiq send",
        "publish",
        "send_many",
        "dramatiq send",
        1.0,
        "`--profile N`; send_many waits for the broker to confirm every message",
    ),
    Target(
        "send_many ≥ 0.8× pika unconfirmed",
        "publish",
        "send_many",
        "pika unconfirmed",
        0.8,
        "the broker persisting and confirming is the bound; pika's clock stops "
        "before the broker has written anything",
    ),
    Target(
        "worker drain ≥ 1.0× dramatiq, 1 process",
        "drain",
        "this worker, 1 process",
        "dramatiq, same processes",
        1.0,
        "`--profile-worker N`: where a worker's time goes, by layer",
    ),
    Target(
        "worker drain ≥ 1.0× dramatiq, 2 processes",
        "drain",
        "this worker, 2 processes",
        "dramatiq, same processes",
        1.0,
        "`--profile-worker N`: where a worker's time goes, by layer",
    ),
    Target(
        "50 ms deliveries ≥ 0.8× the same worker's no-op rate",
        "http",
        "this worker at its defaults, endpoint answering in",
        "same worker, no-op",
        0.8,
        "`benchmarks/apprise_send.py`: the CPU of one Apprise send; the "
        "'÷ endpoint answering at once' ratio shows whether the wait is hidden",
    ),
)


def targets_table(results: Results) -> str:
    """Each target with this run's ratio: met, or where to look why not."""
    rows = ["| target | this run | met? |", "| --- | --- | --- |"]
    for target in TARGETS:
        figure = next(
            (
                f
                for f in results.figures
                if f.section == target.section and f.name.startswith(target.name)
            ),
            None,
        )
        if figure is None or target.baseline not in figure.versus:
            rows.append(f"| {target.goal} | not measured | |")
            continue
        ratio = figure.ratio(figure.versus[target.baseline])
        verdict = "yes" if ratio >= target.at_least else f"no: {target.why}"
        rows.append(
            f"| {target.goal} | {ratio:.2f}× ({format_value(figure)}) | {verdict} |"
        )
    return "\n".join(rows)


def environment_lines(count: int) -> list[str]:
    packages = ("celery", "kombu", "amqp", "pika", "dramatiq")
    try:
        broker = rabbitmqctl("version").strip()
    except (subprocess.SubprocessError, OSError):
        broker = "unknown"
    return [
        f"- messages per throughput measurement: {count}",
        f"- machine: {os.cpu_count()} CPUs, {platform.platform()}, Python "
        f"{platform.python_version()}",
        f"- RabbitMQ {broker} on {HOST}:{AMQP_PORT}; "
        + ", ".join(f"{p} {version(p)}" for p in packages),
    ]


def write_report(results: Results, out: Path, count: int, notes: list[str]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    text = [
        "# Benchmark results",
        "",
        f"Measured {time.strftime('%Y-%m-%d %H:%M:%S %Z')} by `python benchmarks/run.py"
        f" --count {count}`; every ratio divides two figures of this run.",
        "",
        *environment_lines(count),
        "",
        table(results),
        "",
        "## Targets",
        "",
        targets_table(results),
        "",
        *[f"- {note}" for note in notes],
        "",
    ]
    (out / "results.md").write_text("\n".join(text), encoding="utf-8")
    plot(results, out / "results.png")


#: Sections whose figures are costs, not rates.
LOWER_IS_BETTER = frozenset({"cpu", "memory", "latency"})


def plot(results: Results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels, ratios = [], []
    for figure in results.figures:
        if not figure.ours:
            continue
        # Rates are better above 1; CPU and memory below.
        better = "lower" if figure.section in LOWER_IS_BETTER else "higher"
        for name, base in figure.versus.items():
            label = f"{figure.section}: {figure.name} ÷ {name}"
            labels.append(f"{label} ({better} is better)")
            ratios.append(figure.ratio(base))
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(labels) + 1.5))
    ax.barh(range(len(labels)), ratios, color="tab:blue")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_yticks(range(len(labels)), labels, fontsize=8)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("ratio (log scale; 1 = same as the baseline)")
    fig.suptitle("notifications ÷ baselines measured in the same run")
    fig.tight_layout()
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


# -- Publishing ---------------------------------------------------------------


def texts(count: int) -> list[str]:
    return [f"Payslip {n} is ready" for n in range(count)]


def pika_channel(url: str, confirm: bool) -> tuple[Any, Any]:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(url))
    channel = connection.channel()
    channel.queue_declare(QUEUE, durable=True)
    if confirm:
        channel.confirm_delivery()
    return connection, channel


def publish_pika(url: str, count: int, confirm: bool) -> float:
    """Seconds for ``count`` persistent publishes with pika's BlockingChannel."""
    import pika

    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    connection, channel = pika_channel(url, confirm)
    try:
        bodies = [t.encode() for t in texts(count)]
        start = time.perf_counter()
        for body in bodies:
            channel.basic_publish("", QUEUE, body, persistent)
        # A synchronous call on the same channel returns only once the
        # broker handled every publish before it: the unconfirmed run
        # stops the clock when the broker has them, as the others do.
        channel.queue_declare(QUEUE, passive=True)
        return time.perf_counter() - start
    finally:
        connection.close()


def publish_kombu(url: str, count: int, confirm: bool) -> float:
    from kombu import Connection, Producer

    options = {"confirm_publish": True} if confirm else {}
    with Connection(url, transport_options=options) as connection:
        channel = connection.channel()
        channel.queue_declare(QUEUE, durable=True, auto_delete=False)
        producer = Producer(channel)
        bodies = texts(count)
        start = time.perf_counter()
        for body in bodies:
            producer.publish(body, routing_key=QUEUE, delivery_mode=2, retry=False)
        channel.queue_declare(QUEUE, passive=True)
        return time.perf_counter() - start


def dramatiq_broker(url: str, confirm: bool = False) -> tuple[Any, Any]:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    kwargs = {"confirm_delivery": True} if confirm else {}
    broker = RabbitmqBroker(url=url, **kwargs)

    def record_message(message_id: str) -> None:
        """Never runs here: the workers load benchmarks/dramatiq_actors.py."""

    actor = dramatiq.actor(
        record_message,
        broker=broker,
        actor_name=DRAMATIQ_ACTOR,
        queue_name=DRAMATIQ_QUEUE,
    )
    return broker, actor


def publish_dramatiq(url: str, count: int, confirm: bool) -> float:
    """Seconds for ``count`` ``actor.send()``; one warm-up send is not timed."""
    broker, actor = dramatiq_broker(url, confirm)
    try:
        actor.send("warm-up")  # connects and declares the queues
        ids = [f"d{n}" for n in range(count)]
        start = time.perf_counter()
        for message_id in ids:
            actor.send(message_id)
        if not confirm:
            # As for pika: stop the clock once the broker has them all.
            broker.channel.queue_declare(DRAMATIQ_QUEUE, passive=True)
        return time.perf_counter() - start
    finally:
        broker.close()


def measure_publishing(results: Results, count: int, work: Path) -> dict[str, Figure]:
    print("Publishing", count, "persistent messages, each way in a fresh vhost:")
    rate = "msg/s"
    figures: dict[str, Figure] = {}

    ways: list[tuple[str, str, Callable[[str, int, bool], float], bool, str]] = [
        ("pika", "pika, unconfirmed", publish_pika, False, QUEUE),
        ("pika-confirm", "pika, confirm per message", publish_pika, True, QUEUE),
        ("kombu", "Kombu Producer.publish", publish_kombu, False, QUEUE),
        ("kombu-confirm", "Kombu, confirm_publish", publish_kombu, True, QUEUE),
        ("dramatiq", "dramatiq send (defaults)", publish_dramatiq, False, DRAMATIQ_QUEUE),
        (
            "dramatiq-confirm",
            "dramatiq send, confirm_delivery",
            publish_dramatiq,
            True,
            DRAMATIQ_QUEUE,
        ),
    ]
    for key, name, publish, confirm, queue in ways:
        with fresh_vhost(key) as url:
            seconds = publish(url, count, confirm)
            # dramatiq's warm-up send is in the queue too.
            expect_depth(url, queue, count + (queue == DRAMATIQ_QUEUE))
        figures[key] = results.add(Figure("publish", name, count / seconds, rate))

    for key, name in (("delay", ".delay() (defaults)"), ("send-many", "send_many")):
        with fresh_vhost(key) as url, tempfile.TemporaryDirectory(dir=work) as data:
            answer = run_child(
                key, child_env(url, Path(data)), str(count), timeout_s=60 + count
            )
            expect_depth(url, "hr_queue", count + 1)  # and the warm-up one
        figures[key] = results.add(
            Figure("publish", name, count / answer["seconds"], rate, ours=True)
        )

    baselines = {
        "pika confirm/msg": figures["pika-confirm"],
        "dramatiq send": figures["dramatiq"],
        "pika unconfirmed": figures["pika"],
    }
    for figure in figures.values():
        figure.versus = dict(baselines)
    return figures


# -- Consuming ----------------------------------------------------------------


def drain_pika(url: str, count: int) -> float:
    """Seconds for a pika consumer (manual ack, prefetch 100) to empty the queue."""
    import pika

    persistent = pika.BasicProperties(delivery_mode=pika.DeliveryMode.Persistent)
    connection, channel = pika_channel(url, confirm=False)
    try:
        for body in texts(count):
            channel.basic_publish("", QUEUE, body.encode(), persistent)
        channel.queue_declare(QUEUE, passive=True)
        channel.basic_qos(prefetch_count=100)
        acked = 0

        def on_message(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            nonlocal acked
            ch.basic_ack(method.delivery_tag)
            acked += 1

        start = time.perf_counter()
        channel.basic_consume(QUEUE, on_message)
        deadline = time.monotonic() + 60 + count / 100
        while acked < count and time.monotonic() < deadline:
            connection.process_data_events(time_limit=1)
        # Returns once the broker has processed every ack before it.
        left = channel.queue_declare(QUEUE, passive=True).method.message_count
        seconds = time.perf_counter() - start
        if acked != count or left:
            raise RuntimeError(f"pika consumed {acked} of {count}; {left} left")
        return seconds
    finally:
        connection.close()


@dataclass
class Drained:
    rate_per_s: float
    rss_bytes: int
    seconds: float
    #: CPU the workers spent per message while draining: user, system.
    cpu_us: tuple[float, float] = (0.0, 0.0)


def drain_by(
    commands: list[list[str]],
    env: dict[str, str],
    url: str,
    queue: str,
    sink_path: Path,
    expected: int,
    log: Path,
) -> Drained:
    """Start workers on a filled queue and time them until the sink has every message.

    The clock starts when the broker lists every worker as a consumer of
    ``queue`` (so start-up is not counted) and stops at the last message's
    sink timestamp, written by the consumer as it handled it.
    """
    timeout_s = 120 + expected * 0.2
    with contextlib.ExitStack() as stack:
        workers = [
            stack.enter_context(running(command, env, log.with_suffix(f".{n}.log")))
            for n, command in enumerate(commands)
        ]
        watch = stack.enter_context(watching(url))
        start = watch.wait(
            queue, lambda _, consumers: consumers >= len(commands), 120, "consumer"
        )
        pids = [w.process.pid for w in workers if w.process]
        cpu_before = tree_cpu_s(pids)
        deadline = time.monotonic() + timeout_s
        while sink.count(sink_path) < expected:
            for worker in workers:
                worker.check_alive()
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{sink.count(sink_path)} of {expected} handled in {timeout_s:g} s; "
                    f"see {log}"
                )
            time.sleep(0.05)
        cpu_after = tree_cpu_s(pids)
        rss = sum(tree_rss_bytes(pid) for pid in pids)
        watch.wait(queue, lambda messages, _: messages == 0, 30, "empty queue")
    rows = sink.read(sink_path)
    if len({message_id for _, message_id in rows}) != expected:
        raise RuntimeError(f"{len(rows)} recorded, not {expected} distinct messages")
    seconds = max(stamp for stamp, _ in rows) - start
    user_us, system_us = (
        (after - before) / expected * 1e6
        for before, after in zip(cpu_before, cpu_after, strict=True)
    )
    return Drained(expected / seconds, rss, seconds, (user_us, system_us))


def cpu_split(drained: Drained) -> str:
    user_us, system_us = drained.cpu_us
    return f"{user_us:.0f} µs user + {system_us:.0f} µs system"


def fill_with_send_many(url: str, data: Path, count: int) -> None:
    # The warm-up notification of the child is one more to drain.
    run_child("send-many", child_env(url, data), str(count - 1), timeout_s=60 + count)


def filled_for_noop_worker(url: str, data: Path, count: int) -> dict[str, str]:
    """Queue ``count`` notifications for hr; the env of a worker that records them.

    The worker delivers through the benchmark sink (``data / "sink"``), so
    its figures are its own cost, no target's.
    """
    fill_with_send_many(url, data / "sender", count)
    return child_env(
        url,
        data / "worker",
        NOTIFICATIONS_DELIVERY="benchmarks.sink:TimestampDelivery",
        BENCH_SINK=str(data / "sink"),
    )


def measure_consuming(
    results: Results, count: int, work: Path
) -> tuple[dict[str, Figure], dict[str, Drained]]:
    print("Draining", count, "queued messages, each way in a fresh vhost:")
    rate = "msg/s"
    figures: dict[str, Figure] = {}
    with fresh_vhost("drain-pika") as url:
        figures["pika"] = results.add(
            Figure(
                "drain",
                "pika consumer, prefetch 100",
                count / drain_pika(url, count),
                rate,
            )
        )

    dramatiq: dict[int, Drained] = {}
    for processes in (1, 2):
        key = f"drain-dramatiq-{processes}"
        with fresh_vhost(key) as url, tempfile.TemporaryDirectory(dir=work) as folder:
            broker, actor = dramatiq_broker(url)
            try:
                for n in range(count):
                    actor.send(f"d{n}")
            finally:
                broker.close()
            env = child_env(
                url, Path(folder), BENCH_BROKER_URL=url, BENCH_SINK=f"{folder}/sink"
            )
            dramatiq[processes] = drain_by(
                [dramatiq_worker(processes)],
                env,
                url,
                DRAMATIQ_QUEUE,
                Path(folder) / "sink",
                count,
                work / f"{key}.log",
            )
        figures[key] = results.add(
            Figure(
                "drain",
                f"dramatiq, {processes} process(es) × {THREADS} threads",
                dramatiq[processes].rate_per_s,
                rate,
            )
        )

    # The same processes and threads as dramatiq: N worker processes of
    # THREADS threads each on the queue (Celery runs one pool per process).
    # Then one worker at its defaults, as the README starts it.
    ours: dict[str, Drained] = {}
    setups = [
        ("1", f"this worker, 1 process × {THREADS} threads", [celery_worker(THREADS)]),
        (
            "2",
            f"this worker, 2 processes × {THREADS} threads",
            [celery_worker(THREADS), celery_worker(THREADS)],
        ),
        (
            "default",
            f"this worker at its defaults ({DEFAULT_THREADS} threads)",
            [celery_worker()],
        ),
        # As `notifications worker` and docker-compose.yml run it: one log
        # line per notification.
        (
            "info",
            f"this worker at its defaults ({DEFAULT_THREADS} threads), --loglevel INFO",
            [[*celery_worker(), "--loglevel", "INFO"]],
        ),
    ]
    for key, name, commands in setups:
        with (
            fresh_vhost(f"drain-worker-{key}") as url,
            tempfile.TemporaryDirectory(dir=work) as folder,
        ):
            data = Path(folder)
            env = filled_for_noop_worker(url, data, count)
            ours[key] = drain_by(
                commands,
                env,
                url,
                "hr_queue",
                data / "sink",
                count,
                work / f"drain-worker-{key}.log",
            )
        baseline = figures["drain-dramatiq-2" if key == "2" else "drain-dramatiq-1"]
        figures[f"drain-worker-{key}"] = results.add(
            Figure(
                "drain",
                f"{name}, no-op delivery",
                ours[key].rate_per_s,
                rate,
                versus={"dramatiq, same processes": baseline},
                ours=True,
            )
        )
    # CPU per message says where a throughput ratio comes from: the
    # workers share two cores with RabbitMQ, so one that spends twice the
    # CPU per message drains at about half the rate.
    cpu_unit = "µs CPU/msg"
    dramatiq_cpu: dict[int, Figure] = {}
    for processes in (1, 2):
        dramatiq_cpu[processes] = results.add(
            Figure(
                "cpu",
                f"dramatiq, {processes} process(es) × {THREADS} threads",
                sum(dramatiq[processes].cpu_us),
                cpu_unit,
                note=cpu_split(dramatiq[processes]),
            )
        )
    for key, name, _ in setups:
        results.add(
            Figure(
                "cpu",
                name,
                sum(ours[key].cpu_us),
                cpu_unit,
                versus={"dramatiq, same processes": dramatiq_cpu[2 if key == "2" else 1]},
                note=cpu_split(ours[key]),
                ours=True,
            )
        )

    mib = 1024 * 1024
    dramatiq_rss_1: Figure | None = None
    for processes in (1, 2):
        dramatiq_rss = results.add(
            Figure(
                "memory",
                f"dramatiq worker, {processes} process(es), after draining",
                dramatiq[processes].rss_bytes / mib,
                "MiB",
            )
        )
        results.add(
            Figure(
                "memory",
                f"this worker, {processes} process(es) × {THREADS} threads, "
                "after draining",
                ours[str(processes)].rss_bytes / mib,
                "MiB",
                versus={"dramatiq, same processes": dramatiq_rss},
                ours=True,
            )
        )
        dramatiq_rss_1 = dramatiq_rss_1 or dramatiq_rss
    if dramatiq_rss_1 is None:
        raise RuntimeError("dramatiq's memory was not measured")
    results.add(
        Figure(
            "memory",
            f"this worker at its defaults ({DEFAULT_THREADS} threads), after draining",
            ours["default"].rss_bytes / mib,
            "MiB",
            versus={"dramatiq, same processes": dramatiq_rss_1},
            ours=True,
        )
    )
    results.add(
        Figure(
            "memory",
            "this worker at its defaults, serving hr, marketing and support, idle",
            idle_worker_rss(work, ["hr_queue", "marketing_queue", "support_queue"]) / mib,
            "MiB",
            versus={"dramatiq, same processes": dramatiq_rss_1},
            ours=True,
        )
    )
    return figures, ours


def idle_worker_rss(work: Path, queues: list[str]) -> int:
    """Resident memory of one default worker consuming ``queues``, once it is ready."""
    command = celery_worker()
    command[command.index("hr_queue")] = ",".join(queues)
    with fresh_vhost("memory") as url, tempfile.TemporaryDirectory(dir=work) as folder:
        env = child_env(url, Path(folder))
        with running(command, env, work / "memory-worker.log") as worker:
            with watching(url) as watch:
                for queue in queues:
                    watch.wait(queue, lambda _, c: c > 0, 120, "consumer")
            time.sleep(1.0)  # let start-up settle
            worker.check_alive()
            return tree_rss_bytes(worker.process.pid) if worker.process else 0


# -- Delivery to a slow HTTP endpoint -------------------------------------------


class SlowEndpoint(ThreadingHTTPServer):
    """Answers every POST with 200 after ``delay_s``; remembers when."""

    daemon_threads = True
    request_queue_size = 256

    def __init__(self, delay_s: float) -> None:
        super().__init__((HOST, 0), _SlowHandler)
        self.delay_s = delay_s
        self.answered: list[float] = []
        self.lock = threading.Lock()


class _SlowHandler(BaseHTTPRequestHandler):
    server: SlowEndpoint
    # Keeps a connection open between requests, as Slack and most webhook
    # endpoints do; BaseHTTPRequestHandler closes it after each by default.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.server.delay_s:
            time.sleep(self.server.delay_s)
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()
        with self.server.lock:
            self.server.answered.append(time.time())

    def log_message(self, format: str, *args: Any) -> None:
        pass  # one line per request would swamp the terminal


def deliver_over_http(count: int, work: Path, delay_s: float) -> float:
    """Deliveries per second of the default worker through Apprise to an endpoint."""
    server = SlowEndpoint(delay_s)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with fresh_vhost("http") as url, tempfile.TemporaryDirectory(dir=work) as folder:
            data = Path(folder)
            subscribers = data / "subscribers.txt"
            subscribers.write_text(f"hr=json://{HOST}:{server.server_port}/\n")
            fill_with_send_many(url, data / "sender", count)
            env = child_env(
                url, data / "worker", NOTIFICATIONS_SUBSCRIBERS=str(subscribers)
            )
            log = work / f"http-worker-{delay_s * 1000:g}ms.log"
            with running(celery_worker(), env, log) as worker, watching(url) as watch:
                start = watch.wait("hr_queue", lambda _, c: c > 0, 120, "consumer")
                deadline = time.monotonic() + 120 + count * max(delay_s, 0.01) * 4
                while len(server.answered) < count:
                    worker.check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{len(server.answered)} of {count} delivered")
                    time.sleep(0.05)
            return count / (max(server.answered) - start)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


def measure_http(results: Results, count: int, work: Path, noop: Figure) -> None:
    print(f"Delivering {count} notifications through Apprise to a local endpoint:")
    instant = results.add(
        Figure(
            "http",
            "this worker at its defaults, endpoint answering at once",
            deliver_over_http(count, work, 0.0),
            "deliveries/s",
            versus={"same worker, no-op": noop},
            ours=True,
        )
    )
    results.add(
        Figure(
            "http",
            "this worker at its defaults, endpoint answering in "
            f"{HTTP_DELAY_S * 1000:g} ms",
            deliver_over_http(count, work, HTTP_DELAY_S),
            "deliveries/s",
            versus={"same worker, no-op": noop, "endpoint answering at once": instant},
            note=f"{DEFAULT_THREADS} threads wait on up to {DEFAULT_THREADS} "
            f"requests at once: at most {DEFAULT_THREADS / HTTP_DELAY_S:g}/s from "
            "waiting alone",
            ours=True,
        )
    )


# -- Latency ------------------------------------------------------------------


def measure_latency(
    results: Results, seconds: float, work: Path, noop: Figure
) -> list[str]:
    # Below saturation: at most half of what the same worker drained.
    rate = min(LATENCY_RATE_PER_S, noop.value / 2)
    print(f"Latency of .delay() to delivered at {rate:.0f}/s for {seconds:g} s:")
    with fresh_vhost("latency") as url, tempfile.TemporaryDirectory(dir=work) as folder:
        data = Path(folder)
        sink_path = data / "sink"
        env = child_env(
            url,
            data / "worker",
            NOTIFICATIONS_DELIVERY="benchmarks.sink:TimestampDelivery",
            BENCH_SINK=str(sink_path),
        )
        with running(celery_worker(), env, work / "latency-worker.log") as worker:
            with watching(url) as watch:
                watch.wait("hr_queue", lambda _, c: c > 0, 120, "consumer")
            sent_path = data / "sent.json"
            run_child(
                "paced",
                child_env(url, data / "sender"),
                str(rate),
                str(seconds),
                str(sent_path),
                timeout_s=120 + seconds * 3,
            )
            sent: dict[str, float] = json.loads(sent_path.read_text())
            deadline = time.monotonic() + 120
            while not set(sent) <= {i for _, i in sink.read(sink_path)}:
                worker.check_alive()
                if time.monotonic() > deadline:
                    raise TimeoutError("not every paced notification was delivered")
                time.sleep(0.05)
        delivered = {i: stamp for stamp, i in sink.read(sink_path) if i in sent}
    latencies_ms = sorted((delivered[i] - sent[i]) * 1000 for i in sent)
    cuts = statistics.quantiles(latencies_ms, n=100, method="inclusive")
    for name, value in (("p50", cuts[49]), ("p99", cuts[98])):
        results.add(
            Figure(
                "latency",
                f".delay() to delivered, {name}, default worker at {rate:.0f}/s",
                value,
                "ms",
            )
        )
    return [
        f"latency: {len(sent)} notifications, one .delay() every {1000 / rate:.0f} ms"
    ]


# -- Child processes ------------------------------------------------------------


def child(mode: str, args: Sequence[str]) -> None:
    """Runs in a child process with the measurement's environment."""
    from notifications import send_notification
    from notifications.bulk import send_many

    if mode == "delay":
        count = int(args[0])
        send_notification.delay("hr", "warm-up")  # connects, declares the queue
        bodies = texts(count)
        start = time.perf_counter()
        for text in bodies:
            send_notification.delay("hr", text)
        print(json.dumps({"seconds": time.perf_counter() - start}))
    elif mode == "send-many":
        count = int(args[0])
        send_many("hr", ["warm-up"])
        bodies = texts(count)
        start = time.perf_counter()
        ids = send_many("hr", bodies)
        seconds = time.perf_counter() - start
        if len(ids) != count:
            raise RuntimeError(f"send_many returned {len(ids)} ids for {count} texts")
        print(json.dumps({"seconds": seconds}))
    elif mode == "paced":
        rate, duration, out = float(args[0]), float(args[1]), Path(args[2])
        send_notification.delay("hr", "warm-up")
        sent: dict[str, float] = {}
        start = time.monotonic()
        for n in range(int(rate * duration)):
            # A fixed schedule, not a fixed pause: a slow call does not
            # lower the rate of the ones after it.
            with contextlib.suppress(ValueError):
                time.sleep(start + n / rate - time.monotonic())
            stamp = time.time()
            sent[send_notification.delay("hr", f"Paced {n}").id] = stamp
        out.write_text(json.dumps(sent))
        print(json.dumps({"sent": len(sent)}))
    elif mode == "profile":
        import cProfile
        import pstats

        count = int(args[0])
        send_notification.delay("hr", "warm-up")
        profiler = cProfile.Profile()
        profiler.enable()
        for text in texts(count):
            send_notification.delay("hr", text)
        profiler.disable()
        stats = pstats.Stats(profiler, stream=sys.stderr)
        stats.sort_stats("cumulative").print_stats(40)
        stats.sort_stats("tottime").print_stats(25)
        print(json.dumps({"profiled": count}))
    else:
        raise SystemExit(f"unknown child mode {mode!r}")


def profile_delay(count: int) -> None:
    with fresh_vhost("profile") as url, tempfile.TemporaryDirectory() as data:
        env = child_env(url, Path(data))
        result = subprocess.run(
            [
                sys.executable,
                str(Path(__file__).resolve()),
                "--child",
                "profile",
                str(count),
            ],
            env=env,
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120 + count,
            check=False,
        )
    print(result.stderr)
    if result.returncode != 0:
        raise SystemExit(result.returncode)


#: Layers a sampled stack belongs to wherever in it they appear: what
#: they call (socket writes, SQL) counts as theirs.
WORKER_CALLERS = [
    ("Channel.basic_ack", "acknowledgement (py-amqp writing basic.ack)"),
    ("notifications/store.py", "store of delivered ids (SQLite)"),
    ("benchmarks/sink.py", "benchmark sink (the no-op delivery)"),
]
#: Otherwise, the first frame from the leaf that names one of these
#: (file fragment, layer).
WORKER_LAYERS = [
    ("notifications/", "this project's checks, delivery and logging"),
    ("json/", "JSON decoding of the body"),
    ("amqp/serialization.py", "py-amqp: decoding method and header frames"),
    ("celery/app/trace.py", "Celery: tracer (task context, signals, result)"),
    ("celery/app/task.py", "Celery: tracer (task context, signals, result)"),
    ("kombu/message.py", "Kombu: message object, acknowledgement"),
    ("amqp/channel.py", "py-amqp: channel methods (deliver, ack)"),
    ("amqp/", "py-amqp: reading frames from the socket"),
    ("concurrent/futures", "thread pool: hand-off and wake-ups"),
    ("celery/concurrency", "thread pool: hand-off and wake-ups"),
    ("celery/worker/request.py", "Celery: Request object"),
    ("celery/worker/", "Celery: consumer and strategy"),
    ("kombu/", "Kombu: event loop and consumer"),
    ("vine/", "Kombu: event loop and consumer"),
]


def worker_layer(frames: list[str]) -> str:
    for marker, layer in WORKER_CALLERS:
        if any(marker in frame for frame in frames):
            return layer
    for frame in reversed(frames):
        for fragment, layer in WORKER_LAYERS:
            if fragment in frame:
                return layer
    return "other"


def profile_worker(count: int, out: Path) -> None:
    """Sample a draining worker with py-spy; print its time by layer.

    The worker runs as in the side-by-side drain (one process, THREADS
    threads, a no-op delivery). py-spy samples only the thread holding the
    GIL, so the shares are of the interpreter's time; the CPU the process
    spends outside it (system calls, waking threads) is printed apart.
    """
    py_spy = shutil.which("py-spy")
    if py_spy is None:
        raise SystemExit("py-spy is not on PATH: pip install py-spy")
    out.mkdir(parents=True, exist_ok=True)
    raw = out / "worker-profile.txt"
    with (
        fresh_vhost("profile-worker") as url,
        tempfile.TemporaryDirectory(prefix="notifications-bench-") as folder,
    ):
        data = Path(folder)
        env = filled_for_noop_worker(url, data, count)
        log = data / "worker.log"
        with running(celery_worker(THREADS), env, log) as worker, watching(url) as watch:
            watch.wait("hr_queue", lambda _, c: c > 0, 120, "consumer")
            if worker.process is None:
                raise RuntimeError("the worker did not start")
            pid = worker.process.pid
            cpu_before, handled_before = tree_cpu_s([pid]), sink.count(data / "sink")
            # Sampling slows the worker to about 1,000 a second: the queue
            # must not run dry while it is sampled.
            duration_s = max(2, int(count / 1500))
            subprocess.run(
                [py_spy, "record", "--gil", "--rate", "400",
                 "--duration", str(duration_s), "--format", "raw",
                 "--output", str(raw), "--pid", str(pid)],
                check=True, capture_output=True, timeout=duration_s + 60,
            )  # fmt: skip
            cpu_after, handled_after = tree_cpu_s([pid]), sink.count(data / "sink")

    handled = max(1, handled_after - handled_before)
    user_us, system_us = (
        (b - a) / handled * 1e6 for a, b in zip(cpu_before, cpu_after, strict=True)
    )
    layers: dict[str, int] = {}
    threads = {"main thread": 0, "pool threads": 0}
    for line in raw.read_text(encoding="utf-8").splitlines():
        stack, _, samples = line.rpartition(" ")
        frames = stack.split(";")
        layer = worker_layer(frames)
        layers[layer] = layers.get(layer, 0) + int(samples)
        pool = any("Thread._bootstrap" in frame for frame in frames[:2])
        threads["pool threads" if pool else "main thread"] += int(samples)
    total = sum(layers.values()) or 1
    print(f"Worker, 1 process × {THREADS} threads, no-op delivery: {handled} "
          f"notifications in {duration_s} s under py-spy (which slows it).")  # fmt: skip
    print(f"CPU per notification: {user_us:.0f} µs user + {system_us:.0f} µs system.")
    print("\n| where the GIL was held | share |\n| --- | --- |")
    for layer, samples in sorted(layers.items(), key=lambda item: -item[1]):
        print(f"| {layer} | {samples / total:.0%} |")
    for name, samples in threads.items():
        print(f"| ({name}) | {samples / total:.0%} |")
    print(f"\nStacks: {raw}")


# -- Main -----------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--count", type=int, default=5000, help="messages per measurement"
    )
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    parser.add_argument("--smoke", action="store_true", help="tiny counts, for CI")
    parser.add_argument(
        "--profile", type=int, metavar="N", help="profile N .delay() calls"
    )
    parser.add_argument(
        "--profile-worker",
        type=int,
        metavar="N",
        help="sample a worker draining N notifications with py-spy",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("child_args", nargs="*", help=argparse.SUPPRESS)
    options = parser.parse_args(argv)

    if options.child:
        child(options.child, options.child_args)
        return 0
    if options.profile:
        profile_delay(options.profile)
        return 0
    if options.profile_worker:
        profile_worker(options.profile_worker, options.out)
        return 0

    count = 200 if options.smoke else options.count
    http_count = max(100, count // 5)
    latency_s = 2.0 if options.smoke else 5.0
    results = Results()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="notifications-bench-") as scratch:
        work = Path(scratch)
        try:
            measure_publishing(results, count, work)
            drains, _ = measure_consuming(results, count, work)
            noop = drains["drain-worker-default"]
            measure_http(results, http_count, work, noop)
            notes = measure_latency(results, latency_s, work, noop)
        except (RuntimeError, TimeoutError, subprocess.SubprocessError):
            # The worker logs go with the scratch folder: show the end of each.
            for log in sorted(work.glob("*.log")):
                print(f"--- {log.name}\n{log.read_text(errors='replace')[-1500:]}")
            raise

    notes += [
        f"http: {http_count} notifications; "
        + next(f.note for f in results.figures if f.section == "http" and f.note),
        "drain: clock from the broker listing the first consumer to the last "
        "message's sink timestamp; worker start-up is not counted.",
        "cpu: user and system CPU time of the workers' processes (all threads) "
        "from the clock's start to the last message, per message: "
        + "; ".join(f"{f.name}: {f.note}" for f in results.figures if f.section == "cpu"),
        "memory: summed VmRSS of the worker and its children once drained; pages "
        "shared after fork count once per process, for both frameworks.",
        "the machine may run other work meanwhile: compare ratios within one run.",
    ]
    print()
    print(table(results))
    print()
    print(targets_table(results))
    write_report(results, options.out, count, notes)
    print(f"\nWrote {options.out / 'results.md'} and results.png "
          f"in {time.monotonic() - started:.0f} s.")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
