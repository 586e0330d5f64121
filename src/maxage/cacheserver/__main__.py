"""``python -m maxage.cacheserver``: the cache server without the ``maxage`` CLI."""

from __future__ import annotations

import argparse
import sys

from .cli import configure_parser, run


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="maxage cache-server", description="maxage standalone HTTP cache server"
    )
    configure_parser(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
