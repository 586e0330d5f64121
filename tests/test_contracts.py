"""Config parsing (every invalid config names file, collection and field; `maxage serve`
exits 2) and the JSON Schema subset validator."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from maxage.contracts import ConfigError, ReadMode, compile_schema, load_config, parse_duration

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
    ('[collections.things]\nmax_staleness = "1s"\nwrite_policy = "write-back"\nschema = {type="object"}\n',
     "things", "write_policy"),
    ('[collections.things]\nmax_staleness = "1s"\nttl = "0s"\nschema = {type="object"}\n', "things", "ttl"),
    ('[collections.things]\nmax_staleness = "1s"\ncolour = 1\nschema = {type="object"}\n', "things", "colour"),
    ('[collections.things]\nmax_staleness = "1s"\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema_file = "missing.json"\n', "things", "schema_file"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", oneOf=[]}\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="array"}\n', "things", "schema"),
    ('[collections.things]\nmax_staleness = "1s"\nschema = {type="object", properties={a={pattern="("}}}\n',
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
    assert spec.validate({"name": 1, "extra": 2}) == [
        ("/name", "must be of type string"),
        ("/extra", "is not an allowed property"),
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


def check(schema: dict[str, object], value: object) -> list[tuple[str, str]]:
    errors: list[tuple[str, str]] = []
    compile_schema(schema)(value, "", errors)
    return errors


def test_schema_subset() -> None:
    s = {"type": "object", "required": ["n"], "additionalProperties": False, "properties": {
        "n": {"type": "integer", "minimum": 1, "maximum": 3},
        "s": {"type": "string", "minLength": 2, "maxLength": 3, "pattern": "^[a-z]+$"},
        "e": {"enum": ["a", 1, True]},
        "a": {"type": "array", "items": {"type": "number"}, "maxItems": 2},
        "o": {"type": "object", "additionalProperties": {"type": "boolean"}},
        "x/y": {"type": "null"}}}  # fmt: skip
    assert check(s, {"n": 2, "s": "ab", "e": 1, "a": [1.5], "o": {"k": True}, "x/y": None}) == []
    assert check(s, {"n": 2.0}) == []  # integer-valued float is an integer
    assert check(s, {"n": True}) == [("/n", "must be of type integer")]
    assert check(s, {}) == [("/n", "is required")]
    assert check(s, {"n": 0}) == [("/n", "must be >= 1")]
    assert check(s, {"n": 1, "s": "A"}) == [("/s", "must be at least 2 characters long"),
                                            ("/s", "must match pattern '^[a-z]+$'")]  # fmt: skip
    assert check(s, {"n": 1, "e": 1.5})[0][0] == "/e"
    assert check(s, {"n": 1, "e": 1}) == [] and check(s, {"n": 1, "e": True}) == []
    assert check(s, {"n": 1, "a": [1, "x", 3]}) == [("/a", "must have at most 2 items"),
                                                    ("/a/1", "must be of type number")]  # fmt: skip
    assert check(s, {"n": 1, "o": {"k": 1}}) == [("/o/k", "must be of type boolean")]
    assert check(s, {"n": 1, "x/y": 1}) == [("/x~1y", "must be of type null")]
    assert check(s, {"n": 1, "z": 1}) == [("/z", "is not an allowed property")]
    # ECMA-262 semantics: \d is ASCII only.
    assert check({"type": "string", "pattern": "^\\d+$"}, "١٢") != []


@pytest.mark.parametrize("bad", [{"type": "date"}, {"minimum": "1"}, {"oneOf": []},
                                 {"enum": []}, {"minLength": -1}, {"pattern": "("}, []])  # fmt: skip
def test_invalid_schemas_are_rejected(bad: object) -> None:
    with pytest.raises(ValueError):
        compile_schema(bad)
