"""Runs, manifests and schema migrations (SQLAlchemy Core: SQLite by default, PostgreSQL)."""
