"""Shared test helpers: real PostgreSQL and Redis (services), the one server launcher (launcher)."""
