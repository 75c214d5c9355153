"""``python -m pashq``: the same as the ``pashq`` command."""

from pashq.cli import main

main()
