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

import http.cookiejar
import threading
import urllib.request
from typing import Any

_local = threading.local()
_installed = False
_Session: type | None = None


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
            if proxies or not isinstance(url, str):
                # A caller's own proxies are merged as requests does it.
                return super().merge_environment_settings(
                    url, proxies, stream, verify, cert
                )
            scheme, _, rest = url.partition("://")
            # The proxy (and NO_PROXY) depend on the scheme and host only.
            key = (scheme, rest.split("/", 1)[0], stream, verify, cert)
            try:
                settings = self._environment.get(key)
            except TypeError:  # a cert or verify given as a list
                return super().merge_environment_settings(
                    url, proxies, stream, verify, cert
                )
            if settings is None:
                settings = super().merge_environment_settings(
                    url, proxies, stream, verify, cert
                )
                self._environment[key] = settings
            return {**settings, "proxies": dict(settings["proxies"])}

    return Session


def session() -> Any:
    """This thread's session, made on first use."""
    current = getattr(_local, "session", None)
    if current is None:
        global _Session
        if _Session is None:
            _Session = _session_class()
        current = _Session()
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
