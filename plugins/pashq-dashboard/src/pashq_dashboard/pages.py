"""The Jinja2 environment of the dashboard's pages: autoescaped, with the page helpers.

Every template is escaped by default (``autoescape=True`` for every file), so message
data (bodies, reasons, tracebacks, ids, queue names) always shows as text.
"""

from __future__ import annotations

import urllib.parse
from datetime import UTC, datetime
from typing import Any

import jinja2

__all__ = ["environment"]


def _count(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _when(value: datetime | None) -> str:
    if value is None:
        return "-"
    if value.tzinfo is not None:
        value = value.astimezone(UTC)
    return value.strftime("%Y-%m-%d %H:%M:%S UTC")


def _link(base: str, path: str, **params: Any) -> str:
    """``base + path`` with the non-None ``params`` as a query string."""
    query = urllib.parse.urlencode({k: v for k, v in params.items() if v is not None})
    return f"{base}{path}" + (f"?{query}" if query else "")


def _short(text: str, limit: int = 160) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def environment() -> jinja2.Environment:
    """Build the environment that renders the package's templates."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("pashq_dashboard", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["count"] = _count
    env.filters["when"] = _when
    env.filters["short"] = _short
    env.globals["link"] = _link
    return env
