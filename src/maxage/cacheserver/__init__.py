"""maxage.cacheserver: the cache engine (``maxage.core``) as a standalone HTTP service.

Layers: ``protocol`` (HTTP/1.1 transport on uvloop + httptools), ``app``
(routing and handlers), ``upstream`` (read-through), ``metrics``, ``problems``
(error catalog), ``openapi``, ``server`` (composition) and ``cli``.
"""

from .cli import configure_parser, run

__all__ = ["configure_parser", "run"]
