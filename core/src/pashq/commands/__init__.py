"""Built-in commands that live in their own modules (registered by :mod:`pashq.cli`)."""
