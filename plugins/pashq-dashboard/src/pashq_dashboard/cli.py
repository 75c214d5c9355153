"""``pashq dashboard``: serve the dashboard with uvicorn (``pashq.commands`` entry point)."""

from __future__ import annotations

import click

from pashq.cli import cli_errors
from pashq.commands.options import config_option
from pashq_dashboard.security import LOOPBACK_HOSTS, MIN_TOKEN_LENGTH, is_loopback

__all__ = ["dashboard"]


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port."
)
@click.option("--read-only", is_flag=True, help="Hide and refuse every action.")
@click.option(
    "--token",
    envvar="PASHQ_DASHBOARD_TOKEN",
    metavar="TOKEN",
    help="Require this token on every request (default: $PASHQ_DASHBOARD_TOKEN); "
    "needed for a host other than loopback.",
)
@config_option
@click.option(
    "--refresh",
    default=5,
    show_default=True,
    type=click.IntRange(min=1),
    help="Seconds between the overview's refreshes.",
)
@click.option(
    "--root-path",
    default="",
    metavar="PATH",
    help="The path prefix a reverse proxy serves the dashboard under (e.g. /ops/queues).",
)
@cli_errors
def dashboard(
    host: str,
    port: int,
    read_only: bool,
    token: str | None,
    config: str | None,
    refresh: int,
    root_path: str,
) -> None:
    """Serve the web dashboard: queues, counts, dead letters, retry and purge."""
    import uvicorn

    from pashq_dashboard.app import create_app

    token = token or None
    if not is_loopback(host) and token is None:
        raise click.ClickException(
            f"refusing to serve the dashboard on {host!r} without a token: anyone who can "
            "reach it could retry and purge messages; set --token or PASHQ_DASHBOARD_TOKEN "
            "(or bind 127.0.0.1)"
        )
    if token is not None and len(token) < MIN_TOKEN_LENGTH:
        raise click.ClickException(
            f"the dashboard token must have at least {MIN_TOKEN_LENGTH} characters "
            "(python -c 'import secrets; print(secrets.token_urlsafe(24))')"
        )
    ctx = click.get_current_context()
    group_config = ctx.find_root().params.get("config")
    given_here = ctx.get_parameter_source("config") == click.core.ParameterSource.COMMANDLINE
    if group_config is not None and not given_here:
        config = str(group_config)
    # Without a token, a loopback dashboard answers only to loopback names (DNS rebinding).
    allowed = LOOPBACK_HOSTS if token is None else None
    app = create_app(
        config, read_only=read_only, token=token, refresh=refresh, allowed_hosts=allowed
    )
    shown = f"[{host}]" if ":" in host else host
    click.echo(
        f"pashq dashboard on http://{shown}:{port}/"
        + (" (open it once with ?token=<your token>)" if token else "")
        + (" read-only" if read_only else ""),
        err=True,
    )
    uvicorn.run(
        app,
        host=host,
        port=port,
        root_path=root_path.rstrip("/"),
        log_level="warning",
        server_header=False,
    )
