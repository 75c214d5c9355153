"""pashq-example-driver: the ``spool`` driver, queues kept as files in a directory.

Installed, it registers ``spool`` in the ``pashq.drivers`` entry-point group, so a
configuration selects it with ``type = "spool"``::

    [queues.default]
    type = "spool"
    path = "var/spool"

and ``pashq spool info`` in ``pashq.commands``. See :mod:`pashq_example_driver.spool`.
"""

from __future__ import annotations

from pashq_example_driver.spool import SpoolDriver, SpoolOptions

__all__ = ["SpoolDriver", "SpoolOptions"]
