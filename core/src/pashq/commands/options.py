"""What several commands share, for pashq's own commands and plugins' commands: the
``--config`` option and the translation of pashq errors into one-line CLI errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import click

from pashq.errors import PashqError

__all__ = ["cli_errors", "config_option"]

F = TypeVar("F", bound=Callable[..., Any])

#: ``--config FILE`` (also ``$PASHQ_CONFIG``): the configuration file a command reads.
config_option = click.option(
    "--config",
    "config",
    envvar="PASHQ_CONFIG",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Config file (default: $PASHQ_CONFIG, ./pashq.toml, [tool.pashq] in pyproject.toml).",
)


def cli_errors(func: F) -> F:
    """Turn :class:`~pashq.errors.PashqError` into a one-line CLI error (exit 1)."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except PashqError as exc:
            raise click.ClickException(str(exc)) from exc

    return wrapper  # type: ignore[return-value]
