"""Shared test helpers (real PostgreSQL and Redis service fixtures)."""
