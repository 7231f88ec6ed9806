"""Test helpers that are not fixtures: an in-memory credential store, small async utilities."""
