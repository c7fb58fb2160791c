"""HTTP connections that outlive one delivery.

Apprise sends through requests' module functions (``requests.post`` and
the like), and each of those opens a session of its own, connects, sends
one request and closes: a new TCP connection, and for Slack or any
``https://`` webhook a new TLS handshake, for every notification. A
worker sends many notifications a second to the same few hosts, so
:func:`reuse_connections` makes those functions send through one session
per thread, whose connections stay open between deliveries.

Nothing else about a request changes: the settings requests takes from
the environment (``HTTP_PROXY``, ``HTTPS_PROXY``, ``NO_PROXY``,
``REQUESTS_CA_BUNDLE``) still apply, and the sessions keep no cookies, so
no request carries anything an earlier one was sent. The environment is
read once per host and thread, not per request: requests scans every
environment variable twice for each request to find the proxies, about a
fifth of a delivery's CPU. A worker picks up a changed proxy variable when
it restarts, as it does any other setting.

An endpoint closes idle connections after a while; urllib3 notices a
closed one before reusing it and connects again. One closed just as a
request goes out fails that send as a connection error, which the worker
retries like any other.
"""

from __future__ import annotations

import functools
import http.cookiejar
import threading
import urllib.request
from typing import Any

_local = threading.local()
_installed = False


class _NoCookies(http.cookiejar.DefaultCookiePolicy):
    """A cookie policy that stores nothing and sends nothing."""

    def set_ok(
        self, cookie: http.cookiejar.Cookie, request: urllib.request.Request
    ) -> bool:
        return False

    def return_ok(
        self, cookie: http.cookiejar.Cookie, request: urllib.request.Request
    ) -> bool:
        return False


@functools.cache
def _session_class() -> type:
    import requests

    class Session(requests.Session):
        """A session that reads the environment once per host."""

        def __init__(self) -> None:
            super().__init__()
            self.cookies.set_policy(_NoCookies())
            self._environment: dict[tuple[Any, ...], dict[str, Any]] = {}

        def merge_environment_settings(
            self, url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
        ) -> dict[str, Any]:
            key = _environment_key(url, proxies, stream, verify, cert)
            if key is None:
                return super().merge_environment_settings(
                    url, proxies, stream, verify, cert
                )
            settings = self._environment.get(key)
            if settings is None:
                settings = self._environment[key] = super().merge_environment_settings(
                    url, proxies, stream, verify, cert
                )
            return {**settings, "proxies": dict(settings["proxies"])}

    return Session


def _environment_key(
    url: Any, proxies: Any, stream: Any, verify: Any, cert: Any
) -> tuple[Any, ...] | None:
    """What the environment's settings for a request depend on, if it can be kept.

    ``None`` for a request with proxies of its own (merged as requests
    does it) or with a ``cert`` or ``verify`` that cannot be a key.
    """
    if proxies or not isinstance(url, str):
        return None
    scheme, _, rest = url.partition("://")
    # The proxy (and NO_PROXY) depend on the scheme and host only.
    key = (scheme, rest.split("/", 1)[0], stream, verify, cert)
    try:
        hash(key)
    except TypeError:  # a cert given as a list
        return None
    return key


def session() -> Any:
    """This thread's session, made on first use."""
    current = getattr(_local, "session", None)
    if current is None:
        current = _local.session = _session_class()()
    return current


def request(method: str, url: str, **kwargs: Any) -> Any:
    """``requests.request``, through this thread's session."""
    return session().request(method=method, url=url, **kwargs)


def reuse_connections() -> None:
    """Make requests' module functions keep connections open, per thread.

    ``requests.get``, ``requests.post`` and the others call
    ``requests.api.request``; ``requests.request`` is a name of its own.
    Both are replaced, once per process.
    """
    global _installed
    if _installed:
        return
    import requests
    import requests.api

    # Same call, same result; the stubs only spell the keywords out.
    requests.api.request = request  # type: ignore[assignment]
    requests.request = request  # type: ignore[assignment]
    _installed = True


__all__ = ["request", "reuse_connections", "session"]
