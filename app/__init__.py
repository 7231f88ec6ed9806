"""Switchboard: the integrations desk of a school."""

__version__ = "0.1.0"
