"""``pashq scheduler`` and ``pashq schedules``: run and list the periodic schedules.

``pashq work --schedule`` runs the same :class:`~pashq.schedules.Scheduler` in a thread
beside the worker (see :func:`start_in_thread`).
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from datetime import UTC
from typing import Any

import click

from pashq.facade import close, configure, import_messages, settings
from pashq.message import build_message
from pashq.schedules import Schedule, Scheduler, load_schedules

__all__ = ["load_app_schedules", "scheduler", "schedules", "start_in_thread"]

log = logging.getLogger("pashq.scheduler")


def load_app_schedules(config: str | None, imports: tuple[str, ...]) -> list[Schedule]:
    """Configure pashq, import the message modules and return every schedule, each checked
    (its message type is imported and its body fits the class)."""
    configure(config)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    current = settings()
    import_messages(list(current.imports) + list(imports))
    found = load_schedules(current.schedules, current.source)
    for item in found:
        build_message(item.message_class(), dict(item.body))  # a bad body fails now
    return found


def start_in_thread(found: list[Schedule]) -> Scheduler:
    """Run a scheduler for ``found`` in a daemon thread; ``stop()`` it when done."""
    runner = Scheduler(found)
    threading.Thread(target=runner.run, name="pashq-scheduler", daemon=True).start()
    return runner


def _config(ctx: click.Context, config: str | None) -> str | None:
    from pashq.cli import _config_option

    return _config_option(ctx, config)


@click.command()
@click.option("--config", "config", envvar="PASHQ_CONFIG", metavar="FILE", help="Config file.")
@click.option("--import", "-i", "imports", multiple=True, metavar="MODULE", help="Import MODULE.")
@click.option(
    "--poll",
    type=click.FloatRange(min=0.01),
    default=1.0,
    show_default=True,
    help="Longest pause between looks at the clock (seconds).",
)
@click.option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
@click.pass_context
def scheduler(
    ctx: click.Context, config: str | None, imports: tuple[str, ...], poll: float, verbose: int
) -> None:
    """Dispatch the due slots of every schedule until stopped (SIGTERM/SIGINT).

    Each slot is dispatched once however many schedulers run: run two for availability.
    """
    from pashq.cli import _setup_logging, cli_errors

    _setup_logging(False, False, verbose)

    @cli_errors
    def run() -> None:
        found = load_app_schedules(_config(ctx, config), imports)
        if not found:
            raise click.ClickException(
                "no schedules: add [schedules.<name>] tables to the config or decorate a "
                "message class with @pashq.schedule(...) in an imported module"
            )
        runner = Scheduler(found, poll=poll)
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: runner.stop())
        try:
            runner.run()
        finally:
            close()

    run()


@click.command()
@click.option("--config", "config", envvar="PASHQ_CONFIG", metavar="FILE", help="Config file.")
@click.option("--import", "-i", "imports", multiple=True, metavar="MODULE", help="Import MODULE.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_context
def schedules(
    ctx: click.Context, config: str | None, imports: tuple[str, ...], as_json: bool
) -> None:
    """List the schedules with their next run."""
    from pashq.cli import _echo_json, cli_errors

    @cli_errors
    def run() -> None:
        found = load_app_schedules(_config(ctx, config), imports)
        now = time.time()
        rows: list[dict[str, Any]] = [
            {
                "name": item.name,
                "cron": item.cron,
                "timezone": item.timezone,
                "message": item.message,
                "queue": item.queue or item.message_class().default_queue,
                "next_run": item.next_after(now).astimezone(UTC).isoformat(),
            }
            for item in found
        ]
        if as_json:
            _echo_json(rows)
            return
        if not rows:
            click.echo("no schedules")
            return
        for row in rows:
            click.echo(
                f"{row['name']}  {row['cron']} ({row['timezone']})  {row['message']} -> "
                f"{row['queue']}  next {row['next_run']}"
            )

    run()
