"""The core's own drivers: ``memory``, ``sync``, ``async`` and ``logger``.

They register through the core's ``pashq.drivers`` entry points, exactly as a third
party's driver would.
"""
