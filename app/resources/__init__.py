"""Icons and other files the app ships, read through importlib.resources (works when frozen)."""
