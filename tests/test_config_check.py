"""``maxage config check FILE [--against OLD_FILE]`` (src/maxage/config_check.py).

Every problem of a config at once (exit 2), each worded as ``maxage serve`` words the first
one (which still stops at the first); the contract table (exit 0); and ``--against``: each
kind of breaking change exits 1 naming it, additive changes exit 0.
"""

from __future__ import annotations

import contextlib
import io
import os
import subprocess
from pathlib import Path

import pytest

from maxage.cli import main
from maxage.config_check import collect_problems, fmt_seconds
from tests.support.launcher import python_m

THREE_PROBLEMS = """
colour = "blue"                      # 1: unknown top-level key

[collections.products]
max_staleness = "soon"               # 2: not a duration
[collections.products.schema.properties.name]
type = "string"

[collections.orders]
max_staleness = "5s"
write_policy = "write-sideways"      # 3: not a write policy
[collections.orders.schema.properties.total]
type = "number"
"""


def env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MAXAGE_")}


def run(*argv: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(python_m(*argv), capture_output=True, text=True, timeout=30,
                          env=env(), cwd=cwd)  # fmt: skip


def check(*argv: str) -> tuple[int, str, str]:
    """``maxage config check ...`` in process: (exit code, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["config", "check", *argv])
    return code, out.getvalue(), err.getvalue()


def test_three_problems_are_reported_at_once(tmp_path: Path) -> None:
    path = tmp_path / "three.toml"
    path.write_text(THREE_PROBLEMS)
    out = run("config", "check", str(path))
    assert out.returncode == 2, out
    lines = [line for line in out.stderr.splitlines() if line.startswith("maxage config check")]
    assert len(lines) == 4, out.stderr  # three problems and the count
    assert "field 'colour'" in lines[0] and "unknown top-level key" in lines[0]
    assert "collection 'products', field 'max_staleness'" in lines[1]
    assert "collection 'orders', field 'write_policy'" in lines[2]
    assert "3 problem(s)" in lines[3]
    assert all(str(path) in line for line in lines[:3])
    # `serve` is unchanged: it stops at the first, with the same words
    served = run("serve", "--config", str(path), "--port", "0", cwd=tmp_path)
    assert served.returncode == 2
    assert served.stderr.strip() == "maxage serve: " + lines[0].removeprefix(
        "maxage config check: "
    )


def test_three_problems_in_one_collection(tmp_path: Path) -> None:
    path = tmp_path / "one.toml"
    path.write_text("""
[collections.products]
max_staleness = "30s"
read_modes = ["bounded", "eventual"]
ttl = "-1s"
require_if_match = "yes"
[collections.products.schema.properties.name]
type = "string"
""")
    code, _, err = check(str(path))
    assert code == 2
    for field in ("read_modes", "ttl", "require_if_match"):
        assert f"collection 'products', field '{field}'" in err, err
    assert "3 problem(s)" in err


def test_problems_everywhere_are_all_found(tmp_path: Path) -> None:
    path = tmp_path / "many.toml"
    path.write_text("""
[collections.Bad-Name]
max_staleness = "1s"
[collections.ok]
max_staleness = "1s"
mode = "fast"
schema_file = "missing.schema.json"
[rate_limits]
default = "lots"
[cors]
allow_origins = []
""")
    code, _, err = check(str(path))
    assert code == 2
    assert "collection 'Bad-Name'" in err
    assert "field 'mode'" in err
    assert "field 'schema_file'" in err and "missing.schema.json" in err
    assert "rate_limits.default" in err
    assert "cors.allow_origins" in err
    assert "5 problem(s)" in err


def test_a_reference_to_a_broken_collection_is_not_a_second_problem() -> None:
    data = {
        "collections": {
            "a": {"max_staleness": "1s", "schema": {"type": "object"}},
            "b": "not a table",
        },
        "rate_limits": {"override": [{"collection": "b", "rate": "1/s"}]},
    }
    config, problems = collect_problems(data, "c.toml")
    assert config is None
    assert [p.collection for p in problems] == ["b"]


def test_an_unreadable_or_invalid_file_is_one_problem(tmp_path: Path) -> None:
    code, _, err = check(str(tmp_path / "absent.toml"))
    assert code == 2 and "cannot read config" in err
    (tmp_path / "bad.toml").write_text("[collections\n")
    code, _, err = check(str(tmp_path / "bad.toml"))
    assert code == 2 and "invalid TOML" in err


def test_a_valid_config_prints_its_contract_table(tmp_path: Path) -> None:
    out = run(
        "config", "check", str(Path(__file__).parents[1] / "src/maxage/examples/catalog.toml")
    )
    assert out.returncode == 0, out.stderr
    table = out.stdout.splitlines()
    assert "collection" in table[1] and "max_staleness" in table[1]
    rows = {line.split()[0]: line.split() for line in table[2:] if line and line[0] != " "}
    assert rows["products"][1:5] == ["30s", "bounded,session,strong", "bounded", "write-through"]
    assert rows["inventory"][1:4] == ["0s", "strong", "strong"]
    assert any(line.startswith("rate limits:") for line in table)


def test_relative_schema_files_resolve_against_the_config_file(tmp_path: Path) -> None:
    conf = tmp_path / "conf"
    conf.mkdir()
    (conf / "things.schema.json").write_text('{"type": "object"}')
    (conf / "things.toml").write_text(
        '[collections.things]\nmax_staleness = "1s"\nschema_file = "things.schema.json"\n'
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    out = run("config", "check", "../conf/things.toml", cwd=elsewhere)
    assert out.returncode == 0, out.stderr
    assert "things" in out.stdout


def test_durations_are_shown_in_the_config_grammar() -> None:
    assert [fmt_seconds(s) for s in (0, 0.25, 1, 30, 90, 300, 7200, 1.5)] == [
        "0s", "250ms", "1s", "30s", "90s", "5m", "2h", "1.5s",
    ]  # fmt: skip


# -- --against: what breaks existing clients --------------------------------------------

BASE = """
[collections.products]
max_staleness = "30s"
read_modes = ["bounded", "strong", "session"]
[collections.products.schema]
required = ["name"]
[collections.products.schema.properties.name]
type = "string"
[collections.products.schema.properties.price]
type = "number"
[collections.products.schema.properties.colour]
type = "string"
enum = ["red", "green", "blue"]
[collections.products.schema.properties.note]
type = ["string", "null"]

[collections.orders]
max_staleness = "5s"
[collections.orders.schema.properties.total]
type = "number"
"""


def changed(old: str, new: str) -> str:
    text = BASE.replace(old, new)
    assert text != BASE, old
    return text


BREAKING = {
    "field removed": changed('[collections.products.schema.properties.price]\ntype = "number"\n', ""),
    "renamed to 'cost'": changed("properties.price]", "properties.cost]"),
    "type narrowed": changed('properties.price]\ntype = "number"', 'properties.price]\ntype = "integer"'),
    "enum narrowed": changed('["red", "green", "blue"]', '["red", "green"]'),
    "became required": changed('required = ["name"]', 'required = ["name", "price"]'),
    "may no longer be null": changed('type = ["string", "null"]', 'type = "string"'),
    "may now be null": changed('properties.price]\ntype = "number"', 'properties.price]\ntype = ["number", "null"]'),
    "read mode(s) removed: session": changed('["bounded", "strong", "session"]', '["bounded", "strong"]'),
    "collection removed": BASE.split("[collections.orders]")[0],
    "max_staleness loosened from 30s to 1m": changed('"30s"', '"60s"'),
    "required field added": changed('required = ["name"]', 'required = ["name", "sku"]')
    + '[collections.products.schema.properties.sku]\ntype = "string"\n',
    "maxLength narrowed": changed('properties.name]\ntype = "string"', 'properties.name]\ntype = "string"\nmaxLength = 10'),
    "require_if_match turned on": changed('max_staleness = "5s"', 'max_staleness = "5s"\nrequire_if_match = true'),
    "other properties no longer allowed": changed('max_staleness = "5s"', 'max_staleness = "5s"\nstrict = true'),
    "format changed (not analyzed": changed('properties.name]\ntype = "string"', 'properties.name]\ntype = "string"\nformat = "email"'),
}  # fmt: skip

ADDITIVE = {
    "optional field added": changed('[collections.orders]', '[collections.products.schema.properties.sku]\ntype = "string"\n[collections.orders]'),
    "collection added": BASE + '[collections.carts]\nmax_staleness = "1s"\n[collections.carts.schema]\n',
    "read mode(s) added: session": BASE,  # against OLD_WITHOUT_SESSION
    "max_staleness tightened from 30s to 10s": changed('"30s"', '"10s"'),
    "enum widened": changed('["red", "green", "blue"]', '["red", "green", "blue", "black"]'),
    "type widened": changed('properties.price]\ntype = "number"', 'properties.price]\ntype = ["number", "string"]'),
    "field no longer required": changed('required = ["name"]', "required = []"),
}  # fmt: skip


OLD_WITHOUT_SESSION = changed('["bounded", "strong", "session"]', '["bounded", "strong"]')


def write_pair(tmp_path: Path, new: str, old: str = BASE) -> tuple[Path, Path]:
    (tmp_path / "old.toml").write_text(old)
    (tmp_path / "new.toml").write_text(new)
    return tmp_path / "new.toml", tmp_path / "old.toml"


@pytest.mark.parametrize("kind", list(BREAKING))
def test_each_breaking_change_exits_1(kind: str, tmp_path: Path) -> None:
    new, old = write_pair(tmp_path, BREAKING[kind])
    code, out, err = check(str(new), "--against", str(old))
    assert code == 1, out + err
    breaking = [line for line in out.splitlines() if line.strip().startswith("BREAKING")]
    assert any(kind in line for line in breaking), out
    assert "breaking change(s)" in out


@pytest.mark.parametrize("kind", list(ADDITIVE))
def test_additive_changes_exit_0(kind: str, tmp_path: Path) -> None:
    before = OLD_WITHOUT_SESSION if kind.startswith("read mode") else BASE
    new, old = write_pair(tmp_path, ADDITIVE[kind], before)
    code, out, err = check(str(new), "--against", str(old))
    assert code == 0, out + err
    assert any(kind in line and line.strip().startswith("ok") for line in out.splitlines()), out
    assert "BREAKING" not in out
    assert "no breaking change" in out


@pytest.mark.parametrize(
    "text",
    [
        BASE,
        changed('properties.name]\ntype = "string"', 'properties.name]\ntype = "string"\ndescription = "shown"'),
        changed('max_staleness = "5s"', 'max_staleness = "5s"\nwrite_policy = "write-through"\nttl = "1h"'),
    ],
    ids=["same", "annotation", "server-side"],
)  # fmt: skip
def test_no_change_visible_to_clients(text: str, tmp_path: Path) -> None:
    new, old = write_pair(tmp_path, text)
    code, out, _ = check(str(new), "--against", str(old))
    assert code == 0, out
    assert "BREAKING" not in out
    assert "no breaking change" in out


def test_against_black_box_and_a_broken_old_file(tmp_path: Path) -> None:
    new, old = write_pair(tmp_path, BREAKING["field removed"])
    out = run("config", "check", str(new), "--against", str(old))
    assert out.returncode == 1, out.stderr
    assert "BREAKING" in out.stdout and "products.price" in out.stdout
    (tmp_path / "broken.toml").write_text(THREE_PROBLEMS)
    out = run("config", "check", str(new), "--against", str(tmp_path / "broken.toml"))
    assert out.returncode == 2
    assert out.stderr.count("--against ") == 3


INDEXED = """
[collections.posts]
max_staleness = "1s"
indexes = {indexes}
[collections.posts.schema.properties]
status = {{ type = "string" }}
likes = {{ type = {likes} }}
"""


def test_a_removed_or_retyped_index_is_breaking_an_added_one_is_not(tmp_path: Path) -> None:
    old, new = tmp_path / "old.toml", tmp_path / "new.toml"
    old.write_text(INDEXED.format(indexes='["status", "likes"]', likes='"integer"'))
    new.write_text(INDEXED.format(indexes='["status", "likes"]', likes='"number"'))
    code, out, _ = check(str(new), "--against", str(old))
    assert code == 1 and "index likes changed type integer -> number" in out, out
    new.write_text(INDEXED.format(indexes='["likes"]', likes='"integer"'))
    code, out, _ = check(str(new), "--against", str(old))
    assert code == 1 and "index status removed" in out, out
    code, out, _ = check(str(old), "--against", str(new))
    assert code == 0 and "index status added" in out, out
