"""Tests of ``pashq work --processes``: the supervisor and its children, as real processes."""
