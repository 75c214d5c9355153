"""The dashboard's ASGI application: routes, pages and the actions behind them.

Pages (GET): ``/`` the overview, ``/queue?c=&q=[&page=]`` a queue's dead letters,
``/dead-letter?c=&q=&id=`` one dead letter. Actions (POST): ``/action``, answered with a
confirmation page, then, with ``confirmed=yes``, done and redirected to the queue page.
Connection and queue names travel in the query string, so any name works in a URL.
"""

from __future__ import annotations

import logging
import urllib.parse
from collections.abc import Callable, Sequence
from importlib import resources
from typing import Any

from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Route

import pashq
from pashq.connection import Connection
from pashq.errors import PashqError
from pashq_dashboard.actions import BadAction, parse_action
from pashq_dashboard.inspection import (
    Inspector,
    NotFound,
    pretty_body,
    safe_error,
    type_of,
)
from pashq_dashboard.pages import environment
from pashq_dashboard.samples import Sampler
from pashq_dashboard.security import (
    CSRF_COOKIE,
    MIN_TOKEN_LENGTH,
    Csrf,
    CsrfMiddleware,
    TokenGuard,
)

__all__ = ["create_app"]

log = logging.getLogger(__name__)

#: The most bytes a POST body may have.
MAX_FORM_BYTES = 256 * 1024
_DONE = {
    "retry": "Moved {n} dead letter(s) back onto the queue.",
    "purge": "Deleted {n} dead letter(s).",
    "purge-queue": "Deleted {n} waiting message(s).",
}


def create_app(
    config: str | None = None,
    *,
    read_only: bool = False,
    token: str | None = None,
    refresh: int = 5,
    page_size: int = 50,
    connections: Sequence[str] | None = None,
    open_connection: Callable[[str], Connection] | None = None,
    secret: bytes | None = None,
    allowed_hosts: Sequence[str] | None = None,
) -> Starlette:
    """Build the dashboard application.

    :param config: a pashq config file to load with :func:`pashq.configure`; ``None`` uses
        the process's configuration (what your application already configured).
    :param read_only: hide and refuse every action.
    :param token: when set, every request must carry it (``Authorization: Bearer``, or
        ``?token=`` once, which sets a cookie); at least 16 characters.
    :param refresh: seconds between the overview's refreshes.
    :param page_size: dead letters per page.
    :param connections: the connection names to show (default: every configured one).
    :param open_connection: returns the connection of a name (default :func:`pashq.queue`).
    :param secret: the key of the CSRF tokens (default: random per app).
    :param allowed_hosts: answer only requests whose ``Host`` is one of these (any port);
        ``pashq dashboard`` passes the loopback names when it serves without a token,
        against DNS rebinding. Default: any host (your application or proxy decides).
    :raises ValueError: a token shorter than 16 characters, or bad numbers.
    """
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise ValueError(f"the dashboard token must have at least {MIN_TOKEN_LENGTH} characters")
    if refresh < 1 or page_size < 1:
        raise ValueError("refresh and page_size must be >= 1")
    if config is not None:
        pashq.configure(config)
    names: Callable[[], Sequence[str]] = (
        (lambda: list(connections))
        if connections is not None
        else (lambda: list(pashq.settings().connections))
    )
    dashboard = _Dashboard(
        Inspector(names, open_connection or pashq.queue),
        read_only=read_only,
        refresh=refresh,
        page_size=page_size,
        csrf=Csrf(secret),
    )
    middleware = [Middleware(CsrfMiddleware, csrf=dashboard.csrf)]
    if allowed_hosts is not None:
        middleware.append(Middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts)))
    if token is not None:
        middleware.append(Middleware(TokenGuard, token=token, refuse=dashboard.unauthorized))
    app = Starlette(
        routes=[
            Route("/", dashboard.overview),
            Route("/queue", dashboard.queue),
            Route("/dead-letter", dashboard.dead_letter),
            Route("/action", dashboard.action, methods=["POST"]),
            Route("/static/dashboard.css", dashboard.stylesheet),
        ],
        middleware=middleware,
        exception_handlers={
            HTTPException: dashboard.http_error,
            Exception: dashboard.server_error,
        },
    )
    app.state.dashboard = dashboard
    return app


class _Dashboard:
    """The route handlers and what they share."""

    def __init__(
        self, inspector: Inspector, *, read_only: bool, refresh: int, page_size: int, csrf: Csrf
    ) -> None:
        self.inspector = inspector
        self.read_only = read_only
        self.refresh = refresh
        self.page_size = page_size
        self.csrf = csrf
        self.sampler = Sampler(min_interval=max(1.0, refresh / 2))
        self.env = environment()

    # -- rendering -----------------------------------------------------------------------

    def _render(
        self, request: Request, template: str, status_code: int = 200, **context: Any
    ) -> HTMLResponse:
        nonce = request.scope.get("state", {}).get("csrf_nonce", "")
        context.setdefault("refresh", None)
        html = self.env.get_template(template).render(
            base=request.scope.get("root_path", ""),
            read_only=self.read_only,
            csrf=self.csrf.field_for(nonce) if nonce else "",
            **context,
        )
        return HTMLResponse(html, status_code=status_code)

    def _error(self, request: Request, status: int, title: str, detail: str) -> HTMLResponse:
        return self._render(
            request, "error.html", status, status=status, title=title, detail=detail
        )

    async def http_error(self, request: Request, exc: Exception) -> Response:
        """Every HTTP error (404 for unknown paths, 405...) as a page."""
        assert isinstance(exc, HTTPException)
        titles = {404: "Not found", 405: "Method not allowed"}
        return self._error(request, exc.status_code, titles.get(exc.status_code, "Error"), "")

    async def server_error(self, request: Request, exc: Exception) -> Response:
        """An unexpected failure: logged, shown without details."""
        log.error("dashboard request %s failed", request.url.path, exc_info=exc)
        return self._error(request, 500, "Server error", "The error was logged by the dashboard.")

    async def unauthorized(self, scope: Any, receive: Any, send: Any) -> None:
        """The answer to a request without the token."""
        request = Request(scope, receive)
        response = self._error(
            request,
            401,
            "Token required",
            "This dashboard needs its token: open it once with ?token=<token>, or send "
            "Authorization: Bearer <token>.",
        )
        await response(scope, receive, send)

    @staticmethod
    def _param(request: Request, name: str) -> str:
        value = request.query_params.get(name)
        if not value:
            raise NotFound(f"missing ?{name}=")
        return value

    # -- pages ---------------------------------------------------------------------------

    async def overview(self, request: Request) -> Response:
        """Every connection and queue with its counts."""
        views = await run_in_threadpool(self.inspector.overview)
        charts = {}
        for view in views:
            for row in view.rows:
                if row.stats is not None:
                    self.sampler.record(view.name, row.queue, row.waiting)
                charts[(view.name, row.queue)] = self.sampler.chart(view.name, row.queue)
        return self._render(
            request, "overview.html", connections=views, charts=charts, refresh=self.refresh
        )

    async def queue(self, request: Request) -> Response:
        """A queue's counts and dead letters, one page at a time."""
        try:
            connection, queue = self._param(request, "c"), self._param(request, "q")
            page = _page(request.query_params.get("page"))
            dead, has_next = await run_in_threadpool(
                self.inspector.dead_letters, connection, queue, page, self.page_size
            )
            conn = await run_in_threadpool(self.inspector.connection, connection)
        except NotFound as exc:
            return self._error(request, 404, "Not found", str(exc))
        stats = None
        if conn.capabilities.stats:
            try:
                stats = await run_in_threadpool(conn.stats, queue)
            except PashqError as exc:
                log.info("stats of %r failed: %s", queue, safe_error(exc))
        return self._render(
            request,
            "queue.html",
            connection=connection,
            queue=queue,
            page=page,
            dead=dead,
            types=[type_of(d.body) for d in dead],
            has_next=has_next,
            stats=stats,
            done=_done(request),
            dead_letters_supported=conn.capabilities.dead_letters,
            can_purge=conn.capabilities.purge,
        )

    async def dead_letter(self, request: Request) -> Response:
        """One dead letter: its facts, traceback and pretty-printed body."""
        try:
            connection, queue = self._param(request, "c"), self._param(request, "q")
            message_id = self._param(request, "id")
            dead = await run_in_threadpool(
                self.inspector.dead_letter, connection, queue, message_id
            )
        except NotFound as exc:
            return self._error(request, 404, "Not found", str(exc))
        return self._render(
            request,
            "dead_letter.html",
            connection=connection,
            queue=queue,
            dead=dead,
            type_name=type_of(dead.body),
            body=pretty_body(dead.body),
        )

    async def stylesheet(self, request: Request) -> Response:
        """The one stylesheet, from the package."""
        css = resources.files("pashq_dashboard").joinpath("static/dashboard.css").read_text()
        return Response(css, media_type="text/css")

    # -- actions -------------------------------------------------------------------------

    async def action(self, request: Request) -> Response:
        """Confirm, then do, one action (see :mod:`pashq_dashboard.actions`)."""
        if self.read_only:
            return self._error(request, 403, "Read-only", "This dashboard is read-only.")
        fields = await _form(request)
        if fields is None:
            return self._error(request, 400, "Bad request", "The form could not be read.")
        nonce = request.cookies.get(CSRF_COOKIE)
        if not self.csrf.check(nonce, (fields.get("csrf") or [""])[-1]):
            return self._error(
                request,
                403,
                "Invalid CSRF token",
                "The form is stale or came from another site: reload the page and try again.",
            )
        connection = (fields.get("c") or [""])[-1]
        queue = (fields.get("q") or [""])[-1]
        try:
            action = parse_action(fields)
            conn = await run_in_threadpool(self.inspector.queue, connection, queue)
        except BadAction as exc:
            return self._error(request, 400, "Bad request", str(exc))
        except NotFound as exc:
            return self._error(request, 404, "Not found", str(exc))
        back = _queue_link(request, connection, queue)
        if (fields.get("confirmed") or [""])[-1] != "yes":
            return self._render(
                request,
                "confirm.html",
                question=action.question(connection, queue),
                action=action,
                connection=connection,
                queue=queue,
                back=back,
            )
        try:
            count = await run_in_threadpool(action.perform, conn, queue)
        except PashqError as exc:
            return self._error(request, 502, "The backend refused", safe_error(exc))
        log.info(
            "dashboard: %s on queue %r of connection %r: %d message(s)",
            action.value,
            queue,
            connection,
            count,
        )
        return RedirectResponse(f"{back}&done={action.kind}&n={count}", status_code=303)


def _page(value: str | None) -> int:
    if value is None:
        return 1
    if not value.isdigit() or not 1 <= int(value) <= 100_000:
        raise NotFound(f"no page {value[:20]!r}")
    return int(value)


def _done(request: Request) -> str | None:
    kind, count = request.query_params.get("done"), request.query_params.get("n", "")
    if kind not in _DONE or not count.isdigit():
        return None
    return _DONE[kind].format(n=int(count))


def _queue_link(request: Request, connection: str, queue: str) -> str:
    query = urllib.parse.urlencode({"c": connection, "q": queue})
    return f"{request.scope.get('root_path', '')}/queue?{query}"


async def _form(request: Request) -> dict[str, list[str]] | None:
    """The urlencoded POST body (no multipart: the forms never upload)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        return None
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_FORM_BYTES:
            return None
    try:
        return urllib.parse.parse_qs(
            body.decode("utf-8"), keep_blank_values=True, max_num_fields=2000
        )
    except (UnicodeDecodeError, ValueError):
        return None
