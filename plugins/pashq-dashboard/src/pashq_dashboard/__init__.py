"""pashq-dashboard: a web dashboard for pashq queues and dead letters.

:func:`create_app` returns a Starlette (ASGI) application to serve with uvicorn or mount
in your own; ``pashq dashboard`` serves it on 127.0.0.1:8000.
"""

from __future__ import annotations

from pashq_dashboard.app import create_app

__all__ = ["create_app"]
