"""``pashq database``: create, drop, print or migrate the tables of the database driver.

Registered in the ``pashq.commands`` entry-point group, so the ``pashq`` command shows it
as ``pashq database ...`` once this distribution is installed.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import click
import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql, sqlite

from pashq.cli import cli_errors, connection_options, load_driver
from pashq_database.driver import DatabaseDriver
from pashq_database.migration import CREATE_MESSAGE, UPGRADE_MESSAGE, render_revision
from pashq_database.upgrade import describe

__all__ = ["database"]

_DIALECTS: dict[str, Callable[[], sa.Dialect]] = {
    "postgresql": postgresql.dialect,
    "mysql": mysql.dialect,
    "mariadb": lambda: mysql.dialect(is_mariadb=True),
    "sqlite": sqlite.dialect,
}


def _driver(connection: str, config: str | None, imports: tuple[str, ...]) -> DatabaseDriver:
    return load_driver(DatabaseDriver, connection, config, imports)


@click.group()
def database() -> None:
    """Manage the tables of the database driver (create, drop, sql, migration)."""


@database.command()
@connection_options
@cli_errors
def create(connection: str, config: str | None, imports: tuple[str, ...]) -> None:
    """Create the driver's tables and indexes (those that are missing), and add what tables
    of an older release lack (the priority columns)."""
    driver = _driver(connection, config, imports)
    with driver.engine.connect() as conn:
        missing = driver.schema.missing(conn)
    steps = driver.outdated()
    driver.create_tables()
    if missing:
        click.echo(f"created {', '.join(missing)} in {driver.safe_url}")
    if steps:
        click.echo(f"added {describe(steps)} in {driver.safe_url}")
    if not missing and not steps:
        click.echo(f"tables already exist in {driver.safe_url}")


@database.command()
@connection_options
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@cli_errors
def drop(connection: str, config: str | None, imports: tuple[str, ...], yes: bool) -> None:
    """Drop the driver's tables, with every message and dead letter in them."""
    driver = _driver(connection, config, imports)
    names = ", ".join(t.name for t in driver.schema.tables)
    if not yes:
        click.confirm(f"drop {names} in {driver.safe_url} and every message in them?", abort=True)
    driver.drop_tables()
    click.echo(f"dropped {names} in {driver.safe_url}")


@database.command()
@connection_options
@click.option(
    "--dialect",
    type=click.Choice(sorted(_DIALECTS)),
    help="Print for this dialect instead of the configured database's.",
)
@cli_errors
def sql(connection: str, config: str | None, imports: tuple[str, ...], dialect: str | None) -> None:
    """Print the CREATE statements (DDL) for the configured dialect."""
    driver = _driver(connection, config, imports)
    target = _DIALECTS[dialect]() if dialect else driver.engine.dialect
    for statement in driver.schema.ddl(target):
        click.echo(f"{statement};\n")


@database.command()
@connection_options
@click.option(
    "--directory",
    "-d",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("."),
    show_default=True,
    help="Alembic versions directory to write the revision into.",
)
@click.option(
    "--message",
    "-m",
    help=f"Revision message (default: {CREATE_MESSAGE!r}; with --upgrade: {UPGRADE_MESSAGE!r}).",
)
@click.option(
    "--upgrade",
    is_flag=True,
    help="Write the revision that adds what tables of pashq-database 0.1 lack (the "
    "priority columns and the claim index) instead of the one that creates the tables.",
)
@click.option("--rev-id", help="Revision id (default: random, as Alembic makes them).")
@click.option("--down-revision", help="The revision this one follows (your current head).")
@cli_errors
def migration(
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    directory: Path,
    message: str | None,
    upgrade: bool,
    rev_id: str | None,
    down_revision: str | None,
) -> None:
    """Write an Alembic revision file that creates the driver's tables (or, with
    --upgrade, adds what tables of an older release lack)."""
    driver = _driver(connection, config, imports)
    try:
        dist_version = version("pashq-database")
    except PackageNotFoundError:  # pragma: no cover - running from a source tree
        dist_version = "0.0.0"
    revision, text = render_revision(
        driver.schema.prefix,
        revision=rev_id,
        down_revision=down_revision,
        message=message,
        version=dist_version,
        upgrade=upgrade,
    )
    message = message or (UPGRADE_MESSAGE if upgrade else CREATE_MESSAGE)
    slug = re.sub(r"[^a-z0-9]+", "_", message.lower()).strip("_")[:40] or "pashq"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"{revision}_{slug}.py"
    if path.exists():
        raise click.ClickException(f"{path} exists; pick another --rev-id")
    path.write_text(text, encoding="utf-8")
    click.echo(str(path))
