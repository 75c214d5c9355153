"""The dashboard's security: the access token, CSRF tokens and the response headers.

- A token (``--token`` / ``PASHQ_DASHBOARD_TOKEN``) is required on every request when set:
  ``Authorization: Bearer <token>``, or ``?token=<token>`` once, which sets an HttpOnly,
  SameSite=Strict cookie and redirects to the same page without it.
- Every POST carries a CSRF field: an HMAC, under a secret of the app, of a random value
  kept in a SameSite=Strict cookie. A page of another site can neither read the field nor
  forge it.
- Bound to loopback without a token, only requests naming a loopback host
  (``Host: 127.0.0.1:8000``, ``localhost``) are served: a site that rebinds its own DNS
  name to 127.0.0.1 gets 400, never a page or a CSRF field.
- Every response forbids scripts, framing and other sites' resources
  (Content-Security-Policy) and is never cached.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import secrets
import urllib.parse
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

__all__ = [
    "CSRF_COOKIE",
    "LOOPBACK_HOSTS",
    "MIN_TOKEN_LENGTH",
    "SECURITY_HEADERS",
    "TOKEN_COOKIE",
    "Csrf",
    "CsrfMiddleware",
    "TokenGuard",
    "is_loopback",
]

#: The Host names a dashboard bound to loopback answers to (any port).
LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1", "[::1]")
TOKEN_COOKIE = "pashq_dashboard_token"
CSRF_COOKIE = "pashq_dashboard_csrf"
MIN_TOKEN_LENGTH = 16
SECURITY_HEADERS = {
    "content-security-policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "frame-ancestors 'none'; base-uri 'none'"
    ),
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` keeps the dashboard on this machine."""
    if host.strip().lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def _cookies(scope: Scope) -> dict[str, str]:
    found: dict[str, str] = {}
    for name, value in scope.get("headers", ()):
        if name == b"cookie":
            for part in value.decode("latin-1").split(";"):
                key, eq, val = part.strip().partition("=")
                if eq:
                    found.setdefault(key, val)
    return found


def _header(scope: Scope, wanted: bytes) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == wanted:
            return str(value.decode("latin-1"))
    return None


def _cookie_path(scope: Scope) -> str:
    return scope.get("root_path", "") or "/"


def _secure(scope: Scope) -> str:
    return "; Secure" if scope.get("scheme") == "https" else ""


class Csrf:
    """CSRF tokens bound to a browser's cookie and to the app's secret."""

    def __init__(self, secret: bytes | None = None) -> None:
        self._secret = secret or secrets.token_bytes(32)

    def field_for(self, nonce: str) -> str:
        """The form field that goes with the cookie value ``nonce``."""
        return hmac.new(self._secret, nonce.encode(), hashlib.sha256).hexdigest()

    def check(self, nonce: str | None, field: str | None) -> bool:
        """Whether a POST's field matches its cookie."""
        if not nonce or not field:
            return False
        return hmac.compare_digest(self.field_for(nonce), field)


class CsrfMiddleware:
    """ASGI middleware: give each browser a CSRF cookie (``scope["state"]["csrf_nonce"]``)
    and add the security headers to every response."""

    def __init__(self, app: ASGIApp, csrf: Csrf) -> None:
        self.app = app
        self.csrf = csrf

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Set the nonce, pass the request on, add headers (and the cookie) to the answer."""
        app = self.app
        if scope["type"] != "http":
            await app(scope, receive, send)
            return
        nonce = _cookies(scope).get(CSRF_COOKIE)
        fresh = not nonce or len(nonce) != 32 or not nonce.isalnum()
        if fresh:
            nonce = secrets.token_hex(16)
        scope.setdefault("state", {})["csrf_nonce"] = nonce

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {k.lower() for k, _ in headers}
                for key, value in SECURITY_HEADERS.items():
                    if key.encode() not in present:
                        headers.append((key.encode(), value.encode()))
                if fresh:
                    cookie = (
                        f"{CSRF_COOKIE}={nonce}; Path={_cookie_path(scope)}; HttpOnly; "
                        f"SameSite=Strict{_secure(scope)}"
                    )
                    headers.append((b"set-cookie", cookie.encode()))
                message["headers"] = headers
            await send(message)

        await app(scope, receive, send_with_headers)


class TokenGuard:
    """ASGI middleware: every request must carry the token (see the module docstring)."""

    def __init__(self, app: ASGIApp, token: str, refuse: ASGIApp) -> None:
        """:param refuse: the app that answers a request without the token (a 401 page)."""
        self.app = app
        self.token = token
        self.refuse = refuse

    def _given(self, scope: Scope) -> str | None:
        auth = _header(scope, b"authorization")
        if auth and auth.lower().startswith("bearer "):
            return auth[7:].strip()
        cookie = _cookies(scope).get(TOKEN_COOKIE)
        return urllib.parse.unquote(cookie) if cookie is not None else None

    def _matches(self, value: str | None) -> bool:
        return value is not None and hmac.compare_digest(value.encode(), self.token.encode())

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on, or set the cookie from ``?token=``, or refuse it."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if self._matches(self._given(scope)):
            await self.app(scope, receive, send)
            return
        query = urllib.parse.parse_qsl(scope.get("query_string", b"").decode("latin-1"))
        given = [v for k, v in query if k == "token"]
        if given and self._matches(given[-1]) and scope.get("method") == "GET":
            rest = urllib.parse.urlencode([(k, v) for k, v in query if k != "token"])
            # One leading slash: "//host/..." would send the browser to another site.
            path = "/" + (scope.get("root_path", "") + scope.get("path", "/")).lstrip("/")
            location = path + (f"?{rest}" if rest else "")
            cookie = (
                f"{TOKEN_COOKIE}={urllib.parse.quote(self.token, safe='')}; "
                f"Path={_cookie_path(scope)}; HttpOnly; SameSite=Strict{_secure(scope)}"
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 303,
                    "headers": [
                        (b"location", location.encode("latin-1", "replace")),
                        (b"set-cookie", cookie.encode("latin-1")),
                        *((k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": b""})
            return
        await self.refuse(scope, receive, send)
