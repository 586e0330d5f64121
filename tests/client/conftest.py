"""Black-box fixtures for the clients: real ``maxage serve`` processes (tests.support.launcher)
with a small blog config of the tests' own, talked to only through ``maxage_client``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.launcher import ServerProcess, launch

CONFIG = """
[collections.posts]
max_staleness = "30s"
read_modes = ["bounded", "strong", "session"]
write_policy = "write-through"
indexes = ["tag"]
[collections.posts.schema]
type = "object"
required = ["title"]
properties = { title = { type = "string", minLength = 1 }, tag = { type = "string" } }

[collections.stock]
max_staleness = "0s"
read_modes = ["strong"]
write_policy = "write-around"
[collections.stock.schema]
type = "object"

[collections.counters]
max_staleness = "5s"
write_policy = "write-back"
flush_interval = "100ms"
[collections.counters.schema]
type = "object"

[collections.limited]
max_staleness = "5s"
[collections.limited.schema]
type = "object"

[rate_limits]
default = "1000/s"
burst = 1000

[[rate_limits.override]]
collection = "limited"
method = "GET"
rate = "1/s"
burst = 1
"""


def serve(
    work: Path, *args: str, env: dict[str, str] | None = None, name: str | None = None
) -> ServerProcess:
    """``maxage serve`` on ``work``'s config and SQLite file (several may share them)."""
    config = work / "blog.toml"
    if not config.exists():
        config.write_text(CONFIG)
    return launch("serve", "--port", "0", "--config", str(config),
                  "--db", f"sqlite:///{work}/db.sqlite", *args,
                  workdir=work, env=env, name=name)  # fmt: skip


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    s = serve(tmp_path_factory.mktemp("client"))
    try:
        yield s
        assert s.stop() == 0, s.stderr()
    finally:
        s.kill()
