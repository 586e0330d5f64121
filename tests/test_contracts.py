"""Config parsing (every invalid config names file, collection and field; `maxage serve`
exits 2). The JSON Schema validator itself: tests/test_schema.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maxage.contracts import ConfigError, ReadMode, load_config, parse_duration

GOOD = """
[collections.things]
max_staleness = "2s"
write_policy = "write-through"
[collections.things.schema]
type = "object"
required = ["name"]
[collections.things.schema.properties.name]
type = "string"
"""

BAD = [
    ('[collections.things]\nmax_staleness = "2 parsecs"\nschema = {type="object"}\n',
     "things", "max_staleness"),
    ("[collections.things]\nschema = {type='object'}\n", "things", "max_staleness"),
    ('[collections.things]\nmax_staleness = "1s"\nread_modes = ["eventual"]\nschema = {type="object"}\n',
     "things", "read_modes"),
    ('[collections.things]\nmax_staleness = "0s"\nread_modes = ["bounded"]\nschema = {type="object"}\n',
     "things", "read_modes"),
    ('[collections.things]\nmax_staleness = "1s"\nwrite_policy = "write-behind"\nschema = {type="object"}\n',
     "things", "write_policy"),
    ('[collections.things]\nmax_staleness = "1s"\nflush_interval = "1s"\nschema = {type="object"}\n',
     "things", "flush_interval"),
    ('[collections.things]\nmax_staleness = "1s"\nwrite_policy = "write-back"\nflush_interval = "0s"\n'
     'schema = {type="object"}\n', "things", "flush_interval"),
    ('[collections.things]\nmax_staleness = "1s"\nwrite_policy = "write-back"\nflush_interval = "2m"\n'
     'schema = {type="object"}\n', "things", "flush_interval"),
    ('[collections.things]\nmax_staleness = "1s"\nwrite_policy = "write-back"\nrequire_if_match = true\n'
     'schema = {type="object"}\n', "things", "require_if_match"),
    ('[collections.things]\nmax_staleness = "1s"\nttl = "0s"\nschema = {type="object"}\n', "things", "ttl"),
    ('[collections.things]\nmax_staleness = "1s"\ncolour = 1\nschema = {type="object"}\n', "things", "colour"),
    ('[collections.things]\nmax_staleness = "1s"\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema_file = "missing.json"\n', "things", "schema_file"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", oneOf=[]}\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="array"}\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", properties={a={pattern="("}}}\n',
     "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nstrict = "yes"\nschema = {type="object"}\n', "things", "strict"),
    ('[collections.things]\nmax_staleness = "1s"\nstrict = true\nschema = {type="object", additionalProperties=true}\n',
     "things", "strict"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", properties={a={minLenght=1}}}\n',
     "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", properties={a={"$ref"="#/$defs/nope"}}}\n',
     "things", "schema"),
    ('[collections.Bad-Name]\nmax_staleness = "1s"\nschema = {type="object"}\n', "Bad-Name", None),
    ("[other]\n", None, "other"),
]  # fmt: skip


def test_good_config(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(GOOD)
    spec = load_config(f).collections["things"]
    assert spec.max_staleness == 2.0
    assert spec.read_modes == {ReadMode.BOUNDED, ReadMode.STRONG, ReadMode.SESSION}
    assert spec.default_mode is ReadMode.BOUNDED
    assert spec.validate({"name": "x"}) == []
    # Standard JSON Schema: other properties are allowed unless the schema or strict says no.
    assert spec.validate({"name": 1, "extra": 2}) == [("/name", "must be of type string")]
    f.write_text(GOOD.replace('write_policy = "write-through"', "strict = true"))
    strict = load_config(f).collections["things"]
    assert strict.validate({"name": 1, "extra": 2}) == [
        ("/extra", "is not an allowed property"),
        ("/name", "must be of type string"),
    ]


@pytest.mark.parametrize(("text", "collection", "field"), BAD)
def test_bad_config_names_file_collection_field(tmp_path: Path, text: str,
                                                collection: str | None, field: str | None) -> None:  # fmt: skip
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError) as info:
        load_config(f)
    message = str(info.value)
    assert str(f) in message
    if collection:
        assert collection in message
    if field:
        assert field in message


def test_serve_with_bad_config_exits_2(tmp_path: Path) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(BAD[0][0])
    r = subprocess.run([sys.executable, "-m", "maxage", "serve", "--config", str(f), "--port", "0",
                        "--db", f"sqlite:///{tmp_path}/db.sqlite"],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2
    assert str(f) in r.stderr and "things" in r.stderr and "max_staleness" in r.stderr
    assert "Traceback" not in r.stderr
    r = subprocess.run([sys.executable, "-m", "maxage", "serve", "--config", str(tmp_path / "no.toml")],
                       capture_output=True, text=True, timeout=30)  # fmt: skip
    assert r.returncode == 2 and "no.toml" in r.stderr


@pytest.mark.parametrize(
    ("text", "seconds"), [("250ms", 0.25), ("30s", 30), ("5m", 300), ("1h", 3600), (2, 2.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["", "5", "-1s", "1d", True, None, "inf s"])
def test_bad_durations(text: object) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


_INDEXED = """
[collections.posts]
max_staleness = "1s"
indexes = {indexes}
[collections.posts.schema.properties]
title = {{ type = "string" }}
rank = {{ type = ["integer", "null"] }}
score = {{ type = ["integer", "number"] }}
tags = {{ type = "array" }}
any = {{ }}
author = {{ "$ref" = "#/$defs/author" }}
[collections.posts.schema."$defs".author.properties]
id = {{ type = "string" }}
"""


def test_indexes_take_their_type_from_the_schema(tmp_path: Path) -> None:
    p = tmp_path / "c.toml"
    p.write_text(_INDEXED.format(indexes='["title", "rank", "score", "/author/id"]'))
    spec = load_config(p).collections["posts"]
    assert [(i.name, i.path, i.type) for i in spec.indexes] == [
        ("title", ("title",), "string"),
        ("rank", ("rank",), "integer"),
        ("score", ("score",), "number"),
        ("author.id", ("author", "id"), "string"),
    ]


@pytest.mark.parametrize(
    ("indexes", "message"),
    [
        ('["nope"]', "'nope': the schema must declare it"),
        ('["tags"]', "'tags': the schema must declare it under 'properties' with one type"),
        ('["any"]', "'any': the schema must declare it"),
        ('["/author/name"]', "'/author/name': the schema must declare it"),
        ('["title", "title"]', "'title' is listed twice"),
        ('["sort"]', "reserved query parameter"),
        ('["a.b"]', "not an indexable field name"),
        ('"title"', "must be a list"),
        ("[" + ", ".join(['"title"'] * 17) + "]", "at most 16 indexes"),
    ],
)
def test_bad_indexes_are_refused_at_load(tmp_path: Path, indexes: str, message: str) -> None:
    p = tmp_path / "c.toml"
    p.write_text(_INDEXED.format(indexes=indexes))
    with pytest.raises(ConfigError) as err:
        load_config(p)
    assert "collection 'posts', field 'indexes'" in str(err.value)
    assert message in str(err.value), str(err.value)
