"""The embedded broker: queues kept as files in a per-user folder.

It is Kombu's filesystem transport with two changes that matter when
several processes share the folder:

* a message is written under a temporary name and renamed into place, so
  a consumer never reads a half-written file;
* a consumer claims a message by renaming it into the ``claimed`` folder
  under its process id, which exactly one consumer can win, so no message
  is delivered twice; the claimed file stays until the message is
  acknowledged, and a consumer starting up moves the claims of dead
  processes back into their queues, marked redelivered, so a worker killed
  mid-delivery loses nothing.

Use it with the broker URL ``embedded://``.
"""

from __future__ import annotations

import contextlib
import os
import time
import uuid
from pathlib import Path
from typing import Any, ClassVar

from kombu.transport import TRANSPORT_ALIASES, filesystem, virtual
from kombu.transport.virtual import Empty
from kombu.utils.json import dumps, loads

SCHEME = "embedded"


def transport_options(folder: Path) -> dict[str, Any]:
    """Kombu transport options that keep every file under ``folder``."""
    return {
        "data_folder_in": str(folder / "queues"),
        "data_folder_out": str(folder / "queues"),
        "control_folder": str(folder / "bindings"),
        "claimed_folder": str(folder / "claimed"),
        # The transport polls for new files; a tenth of a second keeps the
        # demo snappy at a negligible cost for an idle laptop.
        "polling_interval": 0.1,
    }


class Channel(filesystem.Channel):
    """Filesystem channel with atomic publish and claim."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._claims: dict[str, str] = {}
        for folder in (
            self.data_folder_out,
            self.claimed_folder,
            str(self.control_folder),
        ):
            os.makedirs(folder, exist_ok=True)
        self._recover_claims_of_dead_processes()

    @property
    def claimed_folder(self) -> str:
        return str(self.transport_options.get("claimed_folder", "claimed"))

    # Kombu's own base classes name the second parameter differently
    # (message / payload), so no signature satisfies both.
    def _put(self, queue: str, message: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Wall-clock nanoseconds keep the files in publish order across
        # processes and reboots; the uuid keeps the names unique.
        name = f"{time.time_ns():020d}_{uuid.uuid4().hex}.{queue}.msg"
        # The temporary name has no '.', so no consumer ever matches it.
        tmp = os.path.join(self.data_folder_out, f"tmp_{uuid.uuid4().hex}")
        with open(tmp, "wb") as f:
            f.write(dumps(message).encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, os.path.join(self.data_folder_out, name))

    def _get(self, queue: str, timeout: Any = None) -> Any:
        wanted = f"{queue}.msg"
        for name in sorted(os.listdir(self.data_folder_in)):
            if name.partition(".")[2] != wanted:
                continue
            claimed = os.path.join(self.claimed_folder, f"{os.getpid()}-{name}")
            try:
                os.rename(os.path.join(self.data_folder_in, name), claimed)
            except FileNotFoundError:
                # Another consumer claimed it first.
                continue
            payload = _read(claimed)
            properties = payload.setdefault("properties", {})
            if payload.get("redelivered"):
                # Kombu keeps the flag outside delivery_info, where Celery
                # looks for it.
                properties.setdefault("delivery_info", {})["redelivered"] = True
            tag = properties.get("delivery_tag")
            if tag is not None:
                self._claims[str(tag)] = claimed
            return payload
        raise Empty()

    def _release_claim(self, delivery_tag: Any) -> None:
        claimed = self._claims.pop(str(delivery_tag), None)
        if claimed is not None:
            with contextlib.suppress(FileNotFoundError):
                os.remove(claimed)

    def basic_ack(self, delivery_tag: Any, multiple: bool = False) -> None:
        super().basic_ack(delivery_tag, multiple)
        self._release_claim(delivery_tag)

    def basic_reject(self, delivery_tag: Any, requeue: bool = False) -> None:
        super().basic_reject(delivery_tag, requeue=requeue)
        self._release_claim(delivery_tag)

    def _restore(self, message: Any) -> None:
        # Put back (a new file, marked redelivered), then drop the claim.
        super()._restore(message)
        self._release_claim(message.delivery_tag)

    def _recover_claims_of_dead_processes(self) -> None:
        for name in os.listdir(self.claimed_folder):
            pid, _, original = name.partition("-")
            if not pid.isdigit() or _alive(int(pid)) or not original:
                continue
            # Take the dead claim over first: of several consumers starting
            # at once, only one wins the rename, so it is put back once.
            mine = os.path.join(self.claimed_folder, f"{os.getpid()}-{original}")
            try:
                os.rename(os.path.join(self.claimed_folder, name), mine)
            except FileNotFoundError:
                continue
            claimed = mine
            payload = _read(claimed)
            payload["redelivered"] = True
            self._put(original.partition(".")[2].rpartition(".msg")[0], payload)
            with contextlib.suppress(FileNotFoundError):
                os.remove(claimed)


def _read(path: str) -> Any:
    with open(path, "rb") as f:
        return loads(f.read().decode("utf-8"))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Transport(filesystem.Transport):
    Channel = Channel
    driver_type = SCHEME
    driver_name = SCHEME

    #: Kombu keeps one binding cache for all filesystem connections of a
    #: process, so a second folder would never get its binding files.
    #: Keep one cache per folder instead.
    _states: ClassVar[dict[str, virtual.BrokerState]] = {}

    def __init__(self, client: Any, **kwargs: Any) -> None:
        super().__init__(client, **kwargs)
        folder = str(client.transport_options.get("control_folder", "control"))
        self.state = self._states.setdefault(folder, virtual.BrokerState())


def register() -> None:
    """Make ``embedded://`` URLs resolve to this transport."""
    TRANSPORT_ALIASES.setdefault(SCHEME, f"{__name__}:Transport")
