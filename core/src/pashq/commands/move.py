"""``pashq move SOURCE DEST``: move messages between configured connections.

The engine is :mod:`pashq.move`; this module parses the arguments, opens both connections,
draws the progress bar on a terminal and prints the summary (or, with ``--json``, one JSON
object).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import click

from pashq.commands.options import cli_errors, config_option
from pashq.errors import MoveError
from pashq.facade import close, configure, queue
from pashq.move import FailedAs, Move, MoveReport, parse_endpoint

__all__ = ["move"]


def _summary(report: MoveReport) -> list[str]:
    what = "would move" if report.dry_run else "moved"
    lines = [
        f"{what} {report.moved} message(s) from {report.source} to {report.destination}"
        + (f", {report.delayed} not yet due" if report.delayed else "")
        + (
            ""
            if report.dry_run
            else f" in {report.seconds:.2f}s ({report.batches} "
            f"batch{'' if report.batches == 1 else 'es'})"
        )
    ]
    if report.dead_letters:
        lines.append(f"{what} {report.dead_letters} dead letter(s) with their reasons")
    if report.dead_as_waiting:
        lines.append(f"{what} {report.dead_as_waiting} dead letter(s) as waiting messages")
    if report.kept:
        lines.append("kept: " + ", ".join(k.replace("_", " ") for k in report.kept))
    lines.extend(f"note: {note}" for note in report.notes)
    left = {
        "ready": report.left_ready,
        "delayed": report.left_delayed,
        "in flight": report.left_in_flight,
        "failed": report.left_failed,
    }
    if not report.dry_run and any(v is not None for v in left.values()):
        lines.append(
            f"left at {report.source}: "
            + ", ".join(f"{k} {'-' if v is None else v}" for k, v in left.items())
        )
    return lines


@click.command()
@click.argument("source", metavar="SOURCE")
@click.argument("destination", metavar="DEST")
@config_option
@click.option("--failed", is_flag=True, help="Move the source queue's dead letters too.")
@click.option(
    "--failed-as",
    type=click.Choice(["auto", "dead", "waiting"]),
    default="auto",
    show_default=True,
    help="Dead letters become dead letters at DEST (dead), waiting messages (waiting), or "
    "dead letters where DEST keeps them and waiting messages elsewhere (auto).",
)
@click.option("--limit", type=click.IntRange(min=1), help="Move at most N messages.")
@click.option("--dry-run", is_flag=True, help="Count what would move; move nothing.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Messages per confirmed batch.")
@click.option(
    "--wait-leased",
    default=60.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds to wait for messages leased at SOURCE (a worker's, or a move's that "
    "died) to come back.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
@click.option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
@cli_errors
def move(
    source: str,
    destination: str,
    config: str | None,
    failed: bool,
    failed_as: FailedAs,
    limit: int | None,
    dry_run: bool,
    batch_size: int | None,
    wait_leased: float,
    as_json: bool,
    verbose: int,
) -> None:
    """Move waiting messages from SOURCE to DEST, each CONNECTION:QUEUE.

    Each batch is confirmed by DEST before it is removed from SOURCE: a move that is
    stopped (or dies) loses nothing, and running it again finishes it.
    """
    # pashq.cli imports this module to register the command: its helpers are taken here.
    from pashq.cli import _config_option, _echo_json, _setup_logging

    src, dst = parse_endpoint(source, "SOURCE"), parse_endpoint(destination, "DEST")
    interactive = sys.stderr.isatty()
    _setup_logging(as_json, interactive, verbose)
    ctx = click.get_current_context()
    configure(_config_option(ctx, config))
    ctx.call_on_close(close)
    source_connection = queue(src.connection)
    destination_connection = queue(dst.connection)
    if not dry_run and not destination_connection.capabilities.persistent:
        raise MoveError(
            f"DEST connection {dst.connection!r} (driver "
            f"{destination_connection.config.type!r}) keeps messages only in this process's "
            "memory: they would be lost when `pashq move` exits"
        )
    progress: Any = None
    on_progress: Callable[[MoveReport], None] | None = None
    if interactive and not as_json and not dry_run:
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn

        progress = Progress(
            "[bold]pashq move[/]",
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            console=Console(stderr=True),
            transient=True,
        )
        task = progress.add_task("move", total=None)

        def on_progress(report: MoveReport) -> None:
            progress.update(task, total=report.total, completed=report.done)

    mover = Move(
        source_connection,
        src.queue,
        destination_connection,
        dst.queue,
        failed=failed,
        failed_as=failed_as,
        limit=limit,
        batch_size=batch_size,
        wait_leased=wait_leased,
        on_progress=on_progress,
    )
    if dry_run:
        report = mover.count()
    else:
        if progress is not None:
            progress.start()
        try:
            report = mover.run()
        finally:
            if progress is not None:
                progress.stop()
    if as_json:
        _echo_json(report.as_dict())
    else:
        for line in _summary(report):
            click.echo(line)
    if not report.complete:
        click.echo(
            f"not finished: {report.left_in_flight} message(s) are still leased at "
            f"{report.source}; run the same command again once they are back",
            err=True,
        )
        sys.exit(1)
