"""maxage: a JSON API server and cache server with a declared, enforced, measured consistency contract."""

__version__ = "0.1.0"
