"""``pashq spool ...``: the driver's own commands, found through ``pashq.commands``."""

from __future__ import annotations

import json

import click

from pashq import PashqError
from pashq.cli import connection_options, load_connection
from pashq_example_driver.spool import SpoolDriver

__all__ = ["spool"]


@click.group()
def spool() -> None:
    """Commands of the spool driver (pashq-example-driver)."""


@spool.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def info(connection: str, config: str | None, imports: tuple[str, ...], as_json: bool) -> None:
    """Show a connection's spool directory and the message counts of each queue in it."""
    try:
        conn = load_connection(connection, config, imports)
        driver = conn.driver
        if not isinstance(driver, SpoolDriver):
            raise click.ClickException(
                f"connection {connection!r} uses driver {conn.config.type!r}, not 'spool'"
            )
        counts = {name: conn.stats(name) for name in driver.queues()}
    except PashqError as exc:
        raise click.ClickException(str(exc)) from exc
    if as_json:
        rows = {
            name: {
                "ready": s.ready,
                "delayed": s.delayed,
                "in_flight": s.in_flight,
                "failed": s.failed,
            }
            for name, s in counts.items()
        }
        click.echo(json.dumps({"path": str(driver.root), "queues": rows}))
        return
    click.echo(f"spool directory: {driver.root}")
    for name, s in counts.items():
        click.echo(
            f"  {name}: {s.ready} ready, {s.delayed} delayed, {s.in_flight} in flight, "
            f"{s.failed} failed"
        )
