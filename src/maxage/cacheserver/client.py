"""The cache server's client, where it has always been imported from: it lives in the
light ``maxage-client`` distribution (``maxage_client.cache``, only httpx as a dependency;
docs/adr/0008-client-distribution.md) and is re-exported here unchanged."""

from maxage_client.cache import *  # noqa: F403
from maxage_client.cache import __all__ as __all__
