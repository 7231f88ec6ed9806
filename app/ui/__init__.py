"""Reusable widgets, the main window shell, tray, theme and the Qt bridge to the engine."""
