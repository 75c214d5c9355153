"""The ``pashq`` command line.

``pashq work``, ``drivers``, ``stats``, ``queues``, ``failed list|retry|purge`` and
``purge``; drivers add their own groups through the ``pashq.commands`` entry-point group
(``pashq database ...``).
Every read command takes ``--json``. ``work`` shows a live status line on a terminal and
writes plain (or, with ``--json``, JSON-lines) logs when piped.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import attrs
import click

from pashq import __version__, scheduler_cli
from pashq.capabilities import Capabilities
from pashq.commands.move import move
from pashq.commands.options import cli_errors, config_option
from pashq.connection import Connection
from pashq.discovery import COMMAND_GROUP, DRIVER_GROUP, installed
from pashq.errors import PashqError
from pashq.facade import close, configure, import_messages, queue, settings
from pashq.logs import JsonFormatter, MessageLog
from pashq.worker import Worker, WorkerStats
from pashq.worker.prometheus import serve_metrics
from pashq.worker.signals import StartupSignals
from pashq.worker.supervisor import ChildSpec, MetricsSpec, ProcessSupervisor

__all__ = ["cli_errors", "connection_options", "load_connection", "load_driver", "main"]

D = TypeVar("D")

F = TypeVar("F", bound=Callable[..., Any])


def _iso_utc(value: datetime | None) -> str | None:
    """ISO 8601 in UTC with a ``Z`` (``2026-12-01T18:00:00.000000Z``); naive means UTC."""
    if value is None:
        return None
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="microseconds") + "Z"


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return _iso_utc(value)
    return str(value)


def _echo_json(value: Any) -> None:
    click.echo(json.dumps(value, default=_json_default, ensure_ascii=False))


def load_connection(
    connection: str, config: str | None, imports: tuple[str, ...] = ()
) -> Connection:
    """Configure pashq from ``config`` (or the usual search), import message modules and
    return the named connection. For drivers' own CLI groups."""
    ctx = click.get_current_context(silent=True)
    if ctx is not None:
        config = _config_option(ctx, config)
    configure(config)
    if ctx is not None:
        # Close the driver when the command ends, so asynchronous settlements (acks handed
        # to an I/O thread) reach the backend before the process exits.
        ctx.call_on_close(close)
    # The driver (and the client library it imports) loads from site-packages before the
    # current directory joins sys.path, so a stray pika.py or boto3/ in it never runs.
    conn = queue(connection)
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # as celery and rq do: the app lives in the cwd
    import_messages(list(settings().imports) + list(imports))
    return conn


def _config_option(ctx: click.Context, config: str | None) -> str | None:
    """The command's ``--config``, else ``pashq --config FILE``, else ``$PASHQ_CONFIG``."""
    given_here = ctx.get_parameter_source("config") == click.core.ParameterSource.COMMANDLINE
    group_config = ctx.find_root().params.get("config")
    if given_here or group_config is None:
        return config
    return str(group_config)


def load_driver(
    driver_class: type[D], connection: str, config: str | None, imports: tuple[str, ...] = ()
) -> D:
    """Like :func:`load_connection`, for a driver's own commands: return the connection's
    driver, or fail with a CLI error when the connection uses another driver."""
    conn = load_connection(connection, config, imports)
    driver = conn.driver
    if not isinstance(driver, driver_class):
        name = getattr(driver_class, "name", driver_class.__name__)
        raise click.ClickException(
            f"connection {conn.name!r} uses driver {conn.config.type!r}, not {name!r} "
            "(pick another with --connection NAME)"
        )
    return driver


def connection_options(func: F) -> F:
    """Add ``--connection``, ``--config`` and ``--import`` to a command."""
    func = click.option(
        "--import",
        "-i",
        "imports",
        multiple=True,
        metavar="MODULE",
        help="Import MODULE (defines message classes); repeatable.",
    )(func)
    func = config_option(func)
    func = click.option(
        "--connection",
        "-c",
        "connection",
        default="default",
        show_default=True,
        metavar="NAME",
        help="Connection name ([queues.NAME] in the config).",
    )(func)
    return func


class _Group(click.Group):
    """The root group: built-in commands plus those of installed drivers."""

    def _plugin_commands(self) -> dict[str, Any]:
        try:
            return installed(COMMAND_GROUP)
        except PashqError:
            return {}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(self._plugin_commands()))

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is not None:
            return command
        found = self._plugin_commands().get(name)
        if found is None:
            return None
        try:
            loaded = found.load_checked()
        except PashqError as exc:
            return _broken_command(name, str(exc))
        if not isinstance(loaded, click.Command):
            return _broken_command(
                name,
                f"{COMMAND_GROUP} entry point {name!r} of {found.distribution} is "
                f"{type(loaded).__name__}, not a click command",
            )
        return loaded


def _broken_command(name: str, problem: str) -> click.Command:
    def fail() -> None:
        raise click.ClickException(problem)

    return click.Command(name, callback=fail, help=f"(cannot be loaded: {problem})")


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="pashq")
@click.option(
    "--config",
    "config",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Config file for every command (a command's own --config wins).",
)
def main(config: str | None) -> None:
    """pashq: typed message queues. Run `pashq work QUEUE` to process messages."""


# -- work ------------------------------------------------------------------------------------


def _is_pashq_logger(name: str) -> bool:
    """pashq's loggers and its plugins': ``pashq``, ``pashq.*``, ``pashq_*``."""
    return name == "pashq" or name.startswith(("pashq.", "pashq_"))


class _QuietThirdParty(logging.Filter):
    """Drop other libraries' records below WARNING (``-vv`` shows them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= logging.WARNING or _is_pashq_logger(record.name)


def _setup_logging(as_json: bool, interactive: bool, verbose: int) -> None:
    level = (
        logging.DEBUG
        if verbose > 1
        else logging.INFO
        if verbose or not interactive
        else (logging.WARNING)
    )
    handler: logging.Handler
    if interactive and not as_json:
        from rich.logging import RichHandler

        handler = RichHandler(show_path=False, rich_tracebacks=False)
    else:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(
            JsonFormatter()
            if as_json
            else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
        )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Client libraries (pika, botocore, sqlalchemy...) log every connection step at INFO:
    # only pashq's own INFO lines are shown, the others from -vv.
    if verbose < 2:
        handler.addFilter(_QuietThirdParty())


def _status_line(stats: WorkerStats, queues: list[str]) -> str:
    from rich.markup import escape

    elapsed = max(time.monotonic() - stats.started_at, 1e-9)
    state = "consuming" if stats.consuming else "NOT consuming (see last error)"
    line = (
        f"[bold]pashq work[/] {escape(', '.join(queues))}  {state}  acked {stats.acked}  "
        f"retried {stats.retried}  dead {stats.dead_lettered}  "
        f"{stats.handled / elapsed:,.0f} msg/s"
    )
    if stats.last_error and not stats.consuming:
        line += f"\n[red]last error:[/] {escape(stats.last_error)}"  # the error is data
    return line


@main.command()
@click.argument("queues", nargs=-1, required=True)
@connection_options
@click.option(
    "--concurrency",
    "-n",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Handlers in flight (threads for sync handlers, tasks for async ones).",
)
@click.option("--until-empty", is_flag=True, help="Stop when the queues are drained.")
@click.option("--max-messages", type=click.IntRange(min=1), help="Stop after N messages.")
@click.option("--batch-size", type=click.IntRange(min=1), help="Most messages per pull.")
@click.option(
    "--prefetch",
    type=click.IntRange(min=1),
    help="Most messages held at once (default: adapts to how fast handlers finish).",
)
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True),
    help="Seconds a handler may run (message classes with their own time_limit keep it).",
)
@click.option(
    "--fail-fast",
    is_flag=True,
    help="Exit 1 when the backend is down at start instead of waiting for it.",
)
@click.option(
    "--poll-timeout",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds a pull waits for messages.",
)
@click.option(
    "--shutdown-timeout",
    default=30.0,
    show_default=True,
    type=click.FloatRange(min=0),
    help="Seconds in-flight work may take on SIGTERM.",
)
@click.option(
    "--schedule",
    "run_schedules",
    is_flag=True,
    help="Also run the scheduler: dispatch due slots of the config's schedules.",
)
@click.option(
    "--processes",
    "-p",
    default=1,
    show_default=True,
    type=click.IntRange(min=1),
    help="Worker processes under one supervisor (for CPU-bound handlers).",
)
@click.option(
    "--max-messages-per-child",
    type=click.IntRange(min=1),
    help="Replace a worker process after it handled N messages (runs under a supervisor).",
)
@click.option(
    "--max-memory-per-child",
    type=click.IntRange(min=1),
    metavar="MB",
    help="Replace a worker process once its resident memory passes MB megabytes.",
)
@click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="A JSON summary on stdout at the end (and JSON logs unless --log-format text).",
)
@click.option(
    "--log-format",
    type=click.Choice(["text", "json"]),
    help="json: one JSON object per line, one per message handled (default: text).",
)
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    metavar="PORT",
    help="Serve Prometheus metrics on http://HOST:PORT/metrics (needs pashq[prometheus]).",
)
@click.option(
    "--metrics-host",
    default="127.0.0.1",
    show_default=True,
    metavar="HOST",
    help="Address the metrics server listens on.",
)
@click.option(
    "--metrics-interval",
    default=15.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    metavar="SECONDS",
    help="Seconds between two samples of the queue depths for the metrics.",
)
@click.option("--verbose", "-v", count=True, help="More logging (-vv for debug).")
@cli_errors
def work(
    queues: tuple[str, ...],
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    concurrency: int,
    until_empty: bool,
    max_messages: int | None,
    batch_size: int | None,
    prefetch: int | None,
    time_limit: float | None,
    fail_fast: bool,
    poll_timeout: float,
    shutdown_timeout: float,
    processes: int,
    max_messages_per_child: int | None,
    max_memory_per_child: int | None,
    as_json: bool,
    log_format: str | None,
    metrics_port: int | None,
    metrics_host: str,
    metrics_interval: float,
    verbose: int,
    run_schedules: bool = False,
) -> None:
    """Process messages from QUEUES until stopped (SIGTERM/SIGINT: graceful)."""
    startup = StartupSignals()  # a signal before the worker runs: see its docstring
    startup.install()
    click.get_current_context().call_on_close(startup.restore)
    interactive = sys.stderr.isatty()
    json_logs = log_format == "json" or (log_format is None and as_json)
    _setup_logging(json_logs, interactive, verbose)
    conn = load_connection(connection, config, imports)
    scheduler = None
    if run_schedules:
        from pashq.scheduler_cli import start_in_thread
        from pashq.schedules import load_schedules

        current = settings()
        scheduler = start_in_thread(load_schedules(current.schedules, current.source))
    names = list(queues)
    supervised = bool(processes > 1 or max_messages_per_child or max_memory_per_child)
    if supervised and max_messages is not None:
        raise click.UsageError(
            "--max-messages counts one process's messages; with --processes or recycling "
            "use --max-messages-per-child"
        )
    if supervised and metrics_port == 0:
        raise click.UsageError(
            "--metrics-port 0 picks a free port per process, which no scrape config can find; "
            "with --processes give a PORT: child i serves on PORT + i"
        )
    metrics = None
    metrics_spec = None
    if metrics_port is not None and supervised:
        metrics_spec = MetricsSpec(metrics_port, metrics_host, metrics_interval)
    elif metrics_port is not None:
        metrics = serve_metrics(
            conn, names, port=metrics_port, host=metrics_host, interval=metrics_interval
        )
        logging.getLogger("pashq.cli").info(
            "serving metrics on %s", metrics.url, extra={"event": "metrics.serving"}
        )
    # One record per message only when asked for: `--json` alone keeps the run's own lines.
    message_log = log_format == "json"
    if message_log and not supervised:
        conn.plugin_manager.register(MessageLog(), name="pashq.logs.messages")
    live = None
    on_progress: Callable[[WorkerStats], None] | None = None
    if interactive and not json_logs and not as_json:
        from rich.console import Console
        from rich.live import Live

        live = Live("", console=Console(stderr=True), refresh_per_second=4, transient=False)
        live.start()

        def on_progress(stats: WorkerStats) -> None:
            live.update(_status_line(stats, names))

    options: dict[str, Any] = {
        "concurrency": concurrency,
        "batch_size": batch_size,
        "prefetch": prefetch,
        "time_limit": time_limit,
        "fail_fast": fail_fast,
        "poll_timeout": poll_timeout,
        "shutdown_timeout": shutdown_timeout,
    }
    runner: Worker | ProcessSupervisor
    if supervised:
        if not conn.capabilities.consume:
            Worker(names, connection=conn).run()  # refuses with the reason
        spec = ChildSpec(
            tuple(names),
            conn.name,
            _config_option(click.get_current_context(), config),
            imports,
            options,
            until_empty,
            max_messages_per_child,
            None if max_memory_per_child is None else max_memory_per_child * 2**20,
            functools.partial(_setup_logging, json_logs, interactive, verbose),
            message_log=message_log,
            metrics=metrics_spec,
        )
        runner = ProcessSupervisor(
            spec, processes, shutdown_timeout=shutdown_timeout, on_progress=on_progress
        )
    else:
        runner = Worker(
            names, connection=conn, max_messages=max_messages, on_progress=on_progress, **options
        )
    startup.hand_to(runner)
    if conn.capabilities.consume:  # else run() refuses at once: no "started" line before it
        logging.getLogger("pashq.cli").info(
            "worker started: connection=%s driver=%s queues=%s concurrency=%d%s",
            conn.name,
            conn.config.type,
            ",".join(names),
            concurrency,
            f" processes={processes}" if supervised else "",
            extra={"event": "worker.started"},
        )
    try:
        if isinstance(runner, ProcessSupervisor):
            stats = runner.run()
        else:
            stats = runner.run(until_empty=until_empty)
    finally:
        if scheduler is not None:
            scheduler.stop()
        if live is not None:
            live.stop()
        if metrics is not None:
            metrics.close()
    summary = {"queues": names, "connection": conn.name, **stats.as_dict()}
    if isinstance(runner, ProcessSupervisor):
        summary.update(processes=processes, restarts=runner.restarts, recycled=runner.recycled)
    if as_json:
        _echo_json(summary)
    else:
        logging.getLogger("pashq.cli").info(
            "worker stopped: acked=%d retried=%d dead_lettered=%d released=%d errors=%d",
            stats.acked,
            stats.retried,
            stats.dead_lettered,
            stats.released,
            stats.errors,
            extra={"event": "worker.stopped"},
        )
    if stats.interrupted:
        sys.exit(1)


main.add_command(scheduler_cli.scheduler)
main.add_command(scheduler_cli.schedules)


# -- drivers, stats, purge, failed --------------------------------------------------------------


def _capability_names(caps: Capabilities) -> list[str]:
    names = []
    for field in attrs.fields(Capabilities):
        value = getattr(caps, field.name)
        if value is True:
            names.append(field.name)
        elif field.name in ("max_delay", "batch_size") and value is not None:
            names.append(f"{field.name}={value:g}")
    return names


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def drivers(as_json: bool) -> None:
    """List installed drivers: name, distribution, version, capabilities."""
    rows: list[dict[str, Any]] = []
    for name, found in sorted(installed(DRIVER_GROUP).items()):
        try:
            caps = found.load().capabilities
            capabilities = _capability_names(caps)
        except Exception as exc:  # a broken driver must not hide the others
            capabilities = [f"<cannot load: {type(exc).__name__}: {exc}>"]
        rows.append(
            {
                "name": name,
                "distribution": found.distribution,
                "version": found.version,
                "capabilities": capabilities,
            }
        )
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table

    table = Table("driver", "distribution", "version", "capabilities")
    for row in rows:
        table.add_row(
            row["name"], row["distribution"], row["version"], ", ".join(row["capabilities"])
        )
    Console(width=max(120, Console().width)).print(table)


@main.command()
@click.argument("queues", nargs=-1, required=True)
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def stats(
    queues: tuple[str, ...],
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    as_json: bool,
) -> None:
    """Show ready / delayed / in-flight / failed counts of QUEUES."""
    conn = load_connection(connection, config, imports)
    rows = [attrs.asdict(conn.stats(name)) for name in queues]
    if as_json:
        _echo_json(rows)
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("queue", "ready", "delayed", "in flight", "failed")
    for row in rows:
        table.add_row(
            Text(row["queue"]),
            *(
                str("-" if row[k] is None else row[k])
                for k in ("ready", "delayed", "in_flight", "failed")
            ),
        )
    Console().print(table)


@main.command("queues")
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def queues_command(
    connection: str, config: str | None, imports: tuple[str, ...], as_json: bool
) -> None:
    """List the queues of a connection (the driver's and those in `queues = [...]`)."""
    conn = load_connection(connection, config, imports)
    names = conn.queues()
    if as_json:
        _echo_json(names)
        return
    for name in names:
        click.echo(name)


@main.command()
@click.argument("queue_name", metavar="QUEUE")
@connection_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def purge(
    queue_name: str,
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    yes: bool,
    as_json: bool,
) -> None:
    """Delete every waiting message of QUEUE (dead letters are kept)."""
    conn = load_connection(connection, config, imports)
    if not yes:
        click.confirm(
            f"Delete every waiting message of {queue_name!r} on {conn.name!r}?", abort=True
        )
    count = conn.purge(queue_name)
    _echo_json({"queue": queue_name, "purged": count}) if as_json else click.echo(
        f"purged {count} message(s) from {queue_name}"
    )


@main.group()
def failed() -> None:
    """Dead letters: list, retry, purge."""


@failed.command("list")
@click.argument("queue_name", metavar="QUEUE")
@connection_options
@click.option("--limit", default=50, show_default=True, type=click.IntRange(min=1))
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with bodies).")
@cli_errors
def failed_list(
    queue_name: str,
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    limit: int,
    as_json: bool,
) -> None:
    """List dead letters of QUEUE, oldest first."""
    conn = load_connection(connection, config, imports)
    dead = conn.failed(queue_name, limit)
    if as_json:
        _echo_json(
            [
                {
                    "id": d.id,
                    "queue": d.queue,
                    "reason": d.reason,
                    "attempts": d.attempts,
                    "failed_at": d.failed_at,
                    "traceback": d.traceback,
                    "body": d.body.decode("utf-8", "replace"),
                }
                for d in dead
            ]
        )
        return
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    table = Table("id", "attempts", "failed at", "reason")
    # Ids are pasted into --id: never cut or wrapped; the reason column wraps instead.
    table.columns[0].no_wrap = True
    table.columns[0].min_width = max((len(d.id) for d in dead), default=2)
    for d in dead:
        # Text(), not markup: a reason is message data and may hold "[/bold]" or "[blink]".
        table.add_row(Text(d.id), str(d.attempts), _iso_utc(d.failed_at) or "-", Text(d.reason))
    Console().print(table)


@failed.command("retry")
@click.argument("queue_name", metavar="QUEUE")
@connection_options
@click.option("--id", "ids", multiple=True, help="Retry only this message id; repeatable.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def failed_retry(
    queue_name: str,
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    ids: tuple[str, ...],
    as_json: bool,
) -> None:
    """Move dead letters of QUEUE back onto it (all, or --id ...)."""
    conn = load_connection(connection, config, imports)
    count = conn.retry_failed(queue_name, list(ids) or None)
    _echo_json({"queue": queue_name, "retried": count}) if as_json else click.echo(
        f"moved {count} dead letter(s) back to {queue_name}"
    )


@failed.command("purge")
@click.argument("queue_name", metavar="QUEUE")
@connection_options
@click.option("--id", "ids", multiple=True, help="Delete only this message id; repeatable.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def failed_purge(
    queue_name: str,
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    ids: tuple[str, ...],
    yes: bool,
    as_json: bool,
) -> None:
    """Delete dead letters of QUEUE for good (all, or --id ...)."""
    conn = load_connection(connection, config, imports)
    if not yes:
        click.confirm(f"Delete dead letters of {queue_name!r} for good?", abort=True)
    count = conn.purge_failed(queue_name, list(ids) or None)
    _echo_json({"queue": queue_name, "purged": count}) if as_json else click.echo(
        f"deleted {count} dead letter(s) of {queue_name}"
    )


main.add_command(move)  # its own module: pashq.commands.move
