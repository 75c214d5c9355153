"""pashq-database: the ``database`` driver for pashq (SQLite, PostgreSQL, MySQL/MariaDB).

Configure a connection with ``type = "database"`` and a SQLAlchemy ``url``; see
:mod:`pashq_database.driver` for the options and guarantees.
"""

from __future__ import annotations

from pashq_database.driver import DatabaseDriver
from pashq_database.options import DEFAULT_URL, DatabaseOptions
from pashq_database.schema import Schema
from pashq_database.upgrade import OutdatedTablesError

__all__ = ["DEFAULT_URL", "DatabaseDriver", "DatabaseOptions", "OutdatedTablesError", "Schema"]
