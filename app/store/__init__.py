"""Persistence: SQLAlchemy 2 models, the Database (engines, sessions, migrations)."""
