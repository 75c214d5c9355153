"""Options that several commands share, for pashq's own commands and plugins' commands."""

from __future__ import annotations

import click

__all__ = ["config_option"]

#: ``--config FILE`` (also ``$PASHQ_CONFIG``): the configuration file a command reads.
config_option = click.option(
    "--config",
    "config",
    envvar="PASHQ_CONFIG",
    metavar="FILE",
    type=click.Path(dir_okay=False),
    help="Config file (default: $PASHQ_CONFIG, ./pashq.toml, [tool.pashq] in pyproject.toml).",
)
