"""Tests of the core distribution (pashq)."""
