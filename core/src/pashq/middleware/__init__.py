"""Built-in middleware plugins (entry-point group ``pashq.plugins``)."""
