"""``pashq database``: create, drop, print or migrate the driver's tables."""
from __future__ import annotations

import click

__all__ = ["database"]


@click.group()
def database() -> None:
    """Manage the tables of the database driver."""
