"""``maxage config check``: every problem of a config at once, its contract table, and the
changes from a deployed config that would break existing clients.

**Every problem at once.** :func:`maxage.contracts.parse_config` stops at the first problem
(what ``maxage serve`` needs). :func:`collect_problems` runs it again and again on a copy of
the config in which each problem found is set aside (the field removed or given a neutral
stand-in), so one run reports all of them, each exactly as ``serve`` would word it. It
stops when the config parses or a problem cannot be set aside.

**Breaking changes** (:func:`compare`): a collection removed; a read mode removed; a looser
staleness bound (a tighter one is fine); ``require_if_match`` turned on; in the schema, a
field removed (or renamed), a field that became required (or a new required field), a
narrowed type, enum, bound, length, item count or pattern, a changed nullability (either
way), other properties no longer allowed. Additions (a collection, a read mode, an
optional field, a wider type or enum) are listed as fine.
"""

from __future__ import annotations

import copy
import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from maxage.contracts import (
    CollectionSpec,
    Config,
    ConfigError,
    ReadMode,
    WritePolicy,
    parse_config,
)

MAX_ROUNDS = 200
# A neutral stand-in for a collection field whose value is wrong (None: remove the field).
_STAND_IN: dict[str, Any] = {
    "max_staleness": "1s",
    "schema": {"type": "object"},
}
# A stand-in collection, so the rest of a config without a valid one is checked too.
_STAND_IN_NAME = "stand-in"
_STAND_IN_TABLE: dict[str, Any] = {"max_staleness": "1s", "schema": {"type": "object"}}


def load_problems(path: str | Path) -> tuple[Config | None, list[ConfigError]]:
    """Read and parse ``path``: ``(config, [])``, or ``(None, every problem found)``."""
    p = Path(path)
    name = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        return None, [ConfigError(name, None, None, f"cannot read config: {exc.strerror or exc}")]
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        return None, [ConfigError(name, None, None, f"invalid TOML: {exc}")]
    return collect_problems(data, name, base_dir=p.parent)


def collect_problems(
    data: Mapping[str, Any], source: str, base_dir: Path | None = None
) -> tuple[Config | None, list[ConfigError]]:
    """Parse ``data`` as :func:`parse_config` does, collecting every problem."""
    work: dict[str, Any] = copy.deepcopy(dict(data))
    problems: list[ConfigError] = []
    seen: set[str] = set()
    dropped: set[str] = set()  # collections set aside: references to them are not problems
    for _ in range(MAX_ROUNDS):
        try:
            config = parse_config(work, source, base_dir=base_dir)
        except ConfigError as exc:
            if str(exc) in seen:  # setting it aside did not help: stop here
                break
            seen.add(str(exc))
            if not _refers_to_dropped(work, exc, dropped):
                problems.append(exc)
            if not _set_aside(work, exc, dropped):
                break
        else:
            return (None if problems else config), problems
    if not problems:  # only references to collections that had problems of their own
        problems.append(ConfigError(source, None, None, "the config has problems"))
    return None, problems


def _refers_to_dropped(work: Mapping[str, Any], exc: ConfigError, dropped: set[str]) -> bool:
    field = exc.field or ""
    if exc.collection is not None or not field.startswith("rate_limits.override["):
        return False
    index = field[len("rate_limits.override[") :].split("]")[0]
    try:
        item = work["rate_limits"]["override"][int(index)]
    except (KeyError, IndexError, ValueError, TypeError):
        return False
    return isinstance(item, dict) and item.get("collection") in dropped


def _set_aside(work: dict[str, Any], exc: ConfigError, dropped: set[str]) -> bool:
    """Change ``work`` so ``exc`` does not come again; False if that is not possible."""
    field = exc.field or ""
    if exc.collection is None:
        top = field.split(".")[0].split("[")[0]
        if top == "collections":  # none at all: check the rest against a stand-in
            if work.get("collections") == {_STAND_IN_NAME: _STAND_IN_TABLE}:
                return False
            work["collections"] = {_STAND_IN_NAME: copy.deepcopy(_STAND_IN_TABLE)}
            return True
        if top and top in work:
            del work[top]  # an unknown key, or the first problem of rate_limits or cors
            return True
        return False
    collections = work.get("collections")
    if not isinstance(collections, dict) or exc.collection not in collections:
        return False
    table = collections[exc.collection]
    if not field or not isinstance(table, dict):  # the name or the table itself
        del collections[exc.collection]
        dropped.add(exc.collection)
        if not collections:
            collections[_STAND_IN_NAME] = copy.deepcopy(_STAND_IN_TABLE)
        return True
    if field in ("schema", "schema_file"):
        table.pop("schema", None)
        table.pop("schema_file", None)
        table["schema"] = _STAND_IN["schema"]
        return True
    if field in _STAND_IN and table.get(field) != _STAND_IN[field]:
        table[field] = _STAND_IN[field]
        return True
    if field in table:
        del table[field]
        return True
    return False


# -- the contract table ----------------------------------------------------------------


def fmt_seconds(seconds: float) -> str:
    """A duration in the config's grammar: 250ms, 30s, 5m, 2h."""
    if seconds == 0:
        return "0s"
    for unit, size in (("h", 3600.0), ("m", 60.0), ("s", 1.0)):
        if seconds >= size and (seconds / size).is_integer():
            return f"{int(seconds / size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _policy(spec: CollectionSpec) -> str:
    """The write policy, with its loss window when write-back."""
    if spec.write_policy is WritePolicy.WRITE_BACK:
        return f"write-back (flush {fmt_seconds(spec.flush_interval)})"
    return str(spec.write_policy.value)


def contract_table(config: Config) -> str:
    """The effective contract of each collection, one row each, then limits and CORS."""
    header = ("collection", "max_staleness", "read modes", "default", "write policy",
              "cache ttl", "if-match", "fields", "other fields")  # fmt: skip
    rows = [header]
    for name, spec in config.collections.items():
        modes = ",".join(m.value for m in (ReadMode.BOUNDED, ReadMode.SESSION, ReadMode.STRONG)
                         if m in spec.read_modes)  # fmt: skip
        ttl = fmt_seconds(spec.cache_ttl) + ("" if spec.ttl is not None else " (default)")
        props = spec.schema.get("properties") or {}
        required = spec.schema.get("required") or []
        fields = f"{len(props)} ({len(required)} required)"
        rows.append((name, fmt_seconds(spec.max_staleness), modes, spec.default_mode.value,
                     _policy(spec), ttl, "required" if spec.require_if_match else "-",
                     fields, "allowed" if _allows_extra(spec.schema) else "refused"))  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip()
             for row in rows]  # fmt: skip
    limits = config.rate_limits
    described = []
    if limits.default is not None:
        described.append(f"default {limits.default.rate:g}/s burst {limits.default.burst}")
    for limit in limits.overrides.values():
        described.append(f"{limit.name} {limit.rate:g}/s burst {limit.burst}")
    lines.append("rate limits: " + ("; ".join(described) or "none"))
    if config.cors is None:
        lines.append("cors: off")
    else:
        origins = ", ".join(sorted(config.cors.allow_origins))
        credentials = " with credentials" if config.cors.allow_credentials else ""
        lines.append(f"cors: {origins}{credentials} (max-age {config.cors.max_age}s)")
    return "\n".join(lines)


# -- what a change breaks ----------------------------------------------------------------


@dataclass(frozen=True)
class Change:
    breaking: bool
    where: str  # "products" or "products.price" or "products.tags[]"
    what: str

    def __str__(self) -> str:
        return f"{'BREAKING' if self.breaking else 'ok':<9} {self.where}: {self.what}"


def compare(old: Config, new: Config) -> list[Change]:
    """Every client-visible change from ``old`` to ``new``, breaking ones flagged."""
    out: list[Change] = []
    for name, before in old.collections.items():
        after = new.collections.get(name)
        if after is None:
            out.append(Change(True, name, "collection removed"))
        else:
            out.extend(_compare_collection(name, before, after))
    for name in new.collections:
        if name not in old.collections:
            out.append(Change(False, name, "collection added"))
    return out


def _compare_collection(name: str, old: CollectionSpec, new: CollectionSpec) -> list[Change]:
    out: list[Change] = []
    removed = sorted(m.value for m in old.read_modes - new.read_modes)
    if removed:
        out.append(Change(True, name, f"read mode(s) removed: {', '.join(removed)}"))
    added = sorted(m.value for m in new.read_modes - old.read_modes)
    if added:
        out.append(Change(False, name, f"read mode(s) added: {', '.join(added)}"))
    if new.max_staleness > old.max_staleness:
        out.append(Change(True, name, f"max_staleness loosened from "
                          f"{fmt_seconds(old.max_staleness)} to {fmt_seconds(new.max_staleness)}: "
                          "clients were promised reads at most "
                          f"{fmt_seconds(old.max_staleness)} stale"))  # fmt: skip
    elif new.max_staleness < old.max_staleness:
        out.append(Change(False, name, f"max_staleness tightened from "
                          f"{fmt_seconds(old.max_staleness)} to {fmt_seconds(new.max_staleness)}"))  # fmt: skip
    if new.require_if_match and not old.require_if_match:
        out.append(Change(True, name, "require_if_match turned on: PATCH and DELETE without "
                          "If-Match now get 428"))  # fmt: skip
    elif old.require_if_match and not new.require_if_match:
        out.append(Change(False, name, "require_if_match turned off"))
    old_ix = {i.name: i for i in old.indexes}
    new_ix = {i.name: i for i in new.indexes}
    for ix in sorted(set(old_ix) - set(new_ix)):
        out.append(Change(True, name, f"index {ix} removed: list reads filtering or sorting "
                          "on it now get 400"))  # fmt: skip
    for ix in sorted(set(new_ix) - set(old_ix)):
        out.append(Change(False, name, f"index {ix} added (built at start-up)"))
    for ix in sorted(set(old_ix) & set(new_ix)):
        if old_ix[ix].type != new_ix[ix].type:
            out.append(Change(True, name, f"index {ix} changed type {old_ix[ix].type} -> "
                              f"{new_ix[ix].type}: query values parse differently and "
                              "page tokens of it are refused"))  # fmt: skip
    back = WritePolicy.WRITE_BACK
    if new.write_policy != old.write_policy and back in (old.write_policy, new.write_policy):
        out.append(Change(new.write_policy is back, name, f"write policy "
                          f"{old.write_policy.value} -> {new.write_policy.value}: acknowledged "
                          "writes may be lost in a crash, and If-Match, If-None-Match and "
                          "Idempotency-Key are refused, while write-back"
                          if new.write_policy is back else f"write policy "
                          f"{old.write_policy.value} -> {new.write_policy.value}: writes are "
                          "committed before they are acknowledged again"))  # fmt: skip
    elif new.write_policy != old.write_policy:
        out.append(Change(False, name, f"write policy {old.write_policy.value} -> "
                          f"{new.write_policy.value} (not visible to clients)"))  # fmt: skip
    elif new.write_policy is back and new.flush_interval > old.flush_interval:
        out.append(Change(True, name, f"flush_interval widened from "
                          f"{fmt_seconds(old.flush_interval)} to "
                          f"{fmt_seconds(new.flush_interval)}: a crash may lose more"))  # fmt: skip
    out.extend(_compare_schema(name, old.schema, new.schema))
    return out


_NUMBER_BOUNDS = (
    ("minimum", 1), ("exclusiveMinimum", 1), ("maximum", -1), ("exclusiveMaximum", -1),
    ("minLength", 1), ("maxLength", -1), ("minItems", 1), ("maxItems", -1),
)  # fmt: skip


def _types(schema: Mapping[str, Any]) -> set[str] | None:
    """The schema's types, or None for any type (``integer`` is also a ``number``)."""
    kinds = schema.get("type")
    if kinds is None:
        return None
    return {kinds} if isinstance(kinds, str) else set(kinds)


def _nullable(schema: Mapping[str, Any]) -> bool:
    kinds = _types(schema)
    allowed = schema.get("enum")
    return (kinds is None or "null" in kinds) and (allowed is None or None in allowed)


def _covered(kind: str, kinds: set[str] | None) -> bool:
    return kinds is None or kind in kinds or (kind == "integer" and "number" in kinds)


def _shown(kinds: set[str] | None) -> str:
    return "any" if kinds is None else " or ".join(sorted(kinds))


def _is_object(schema: Mapping[str, Any]) -> bool:
    kinds = _types(schema)
    return (
        "properties" in schema or "required" in schema or (kinds is not None and "object" in kinds)
    )


def _compare_schema(where: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    """Changes of one (sub)schema: its type, nullability, enum, bounds, pattern, items and,
    for an object, its properties."""
    out: list[Change] = []
    before, after = _types(old), _types(new)
    if before is None:
        lost = after is not None
    else:
        lost = any(not _covered(k, after) for k in before - {"null"})
    if lost:
        out.append(Change(True, where, f"type narrowed from {_shown(before)} to {_shown(after)}"))
    elif before is not None and (
        after is None or any(not _covered(k, before) for k in after - {"null"})
    ):
        out.append(Change(False, where, f"type widened from {_shown(before)} to {_shown(after)}"))
    if _nullable(old) != _nullable(new):
        now = "may now be null" if _nullable(new) else "may no longer be null"
        out.append(Change(True, where, f"nullability changed: {now}"))
    old_enum, new_enum = old.get("enum"), new.get("enum")
    if new_enum is not None:
        old_values = None if old_enum is None else {json.dumps(v, sort_keys=True) for v in old_enum}
        new_values = {json.dumps(v, sort_keys=True) for v in new_enum}
        if old_values is None:
            out.append(Change(True, where, f"enum added: only {', '.join(sorted(new_values))}"))
        elif old_values - new_values:
            gone = ", ".join(sorted(old_values - new_values))
            out.append(Change(True, where, f"enum narrowed: {gone} no longer allowed"))
        elif new_values - old_values:
            more = ", ".join(sorted(new_values - old_values))
            out.append(Change(False, where, f"enum widened: {more} added"))
    elif old_enum is not None:
        out.append(Change(False, where, "enum removed: any value of the type"))
    for key, tighter in _NUMBER_BOUNDS:
        a, b = old.get(key), new.get(key)
        if b is not None and (a is None or (b - a) * tighter > 0):
            out.append(
                Change(True, where, f"{key} narrowed from {a if a is not None else 'none'} to {b}")
            )
        elif a is not None and (b is None or (b - a) * tighter < 0):
            out.append(
                Change(False, where, f"{key} widened from {a} to {b if b is not None else 'none'}")
            )
    if new.get("pattern") is not None and new.get("pattern") != old.get("pattern"):
        out.append(Change(True, where, f"pattern changed to {new['pattern']!r}"))
    if isinstance(old.get("items"), dict) and isinstance(new.get("items"), dict):
        out.extend(_compare_schema(f"{where}[]", old["items"], new["items"]))
    elif isinstance(new.get("items"), dict):
        out.append(Change(True, f"{where}[]", "items schema added"))
    if _is_object(old) or _is_object(new):
        out.extend(_compare_properties(where, old, new))
    for key in sorted((set(old) | set(new)) - _ANALYZED - _ANNOTATIONS):
        if old.get(key) != new.get(key):  # $ref, allOf, format, const...: not analyzed
            out.append(Change(True, where, f"{key} changed (not analyzed: counted as breaking)"))
    return out


# Keywords compared above; annotations that do not change what is valid.
_ANALYZED = {
    "type", "enum", "pattern", "items", "properties", "required", "additionalProperties",
    "unevaluatedProperties", *(key for key, _ in _NUMBER_BOUNDS),
}  # fmt: skip
_ANNOTATIONS = {
    "title", "description", "default", "examples", "$comment", "deprecated", "readOnly",
    "writeOnly", "$schema", "$id",
}  # fmt: skip


def _allows_extra(schema: Mapping[str, Any]) -> bool:
    """Other properties allowed (JSON Schema's default; ``strict = true`` refuses them)."""
    return (
        schema.get("additionalProperties", True) is not False
        and schema.get("unevaluatedProperties", True) is not False
    )


def _compare_properties(where: str, old: Mapping[str, Any], new: Mapping[str, Any]) -> list[Change]:
    out: list[Change] = []
    old_props: Mapping[str, Any] = old.get("properties") or {}
    new_props: Mapping[str, Any] = new.get("properties") or {}
    old_required, new_required = set(old.get("required") or ()), set(new.get("required") or ())
    added = [n for n in new_props if n not in old_props]
    for name, sub in old_props.items():
        if name in new_props:
            continue
        twin = next((n for n in added if new_props[n] == sub), None)
        hint = f" (renamed to {twin!r}?)" if twin else ""
        out.append(Change(True, _join(where, name), f"field removed{hint}: clients reading "
                          "or writing it break"))  # fmt: skip
    for name in added:
        if name in new_required:
            out.append(Change(True, _join(where, name), "required field added: existing "
                              "writers do not send it"))  # fmt: skip
        else:
            out.append(Change(False, _join(where, name), "optional field added"))
    for name in sorted(new_required & set(old_props) - old_required):
        out.append(Change(True, _join(where, name), "field became required"))
    for name in sorted(old_required & set(new_props) - new_required):
        out.append(Change(False, _join(where, name), "field no longer required"))
    for name, sub in old_props.items():
        after = new_props.get(name)
        if isinstance(sub, dict) and isinstance(after, dict):
            out.extend(_compare_schema(_join(where, name), sub, after))
    if _allows_extra(old) and not _allows_extra(new):
        out.append(Change(True, where, "other properties no longer allowed"))
    elif _allows_extra(new) and not _allows_extra(old):
        out.append(Change(False, where, "other properties now allowed"))
    elif isinstance(new.get("additionalProperties"), dict) and not isinstance(
        old.get("additionalProperties"), dict
    ):
        out.append(Change(True, where, "other properties must now match a schema"))
    elif isinstance(old.get("additionalProperties"), dict) and isinstance(
        new.get("additionalProperties"), dict
    ):
        out.extend(_compare_schema(f"{where}.*", old["additionalProperties"],
                                   new["additionalProperties"]))  # fmt: skip
    return out


def _join(where: str, name: str) -> str:
    return f"{where}.{name}"
