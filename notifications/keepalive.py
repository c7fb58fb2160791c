"""HTTP connections that outlive one delivery.

Apprise sends through requests' module functions (``requests.post`` and
the like), and each of those opens a session of its own, connects, sends
one request and closes: a new TCP connection, and for Slack or any
``https://`` webhook a new TLS handshake, for every notification. A
worker sends many notifications a second to the same few hosts, so
:func:`reuse_connections` makes those functions send through one session
per thread, whose connections stay open between deliveries.

Nothing else about a request changes: settings from the environment
(proxies, CA bundle) are read per request as before, and the sessions keep
no cookies, so no request carries anything an earlier one was sent.

An endpoint closes idle connections after a while; urllib3 notices a
closed one before reusing it and connects again. One closed just as a
request goes out fails that send as a connection error, which the worker
retries like any other.
"""

from __future__ import annotations

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


def session() -> Any:
    """This thread's session, made on first use."""
    current = getattr(_local, "session", None)
    if current is None:
        import requests

        current = requests.Session()
        current.cookies.set_policy(_NoCookies())
        _local.session = current
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
