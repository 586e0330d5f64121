"""Collection specs: schema, consistency contract and write policy (pure data + parsing).

A config file is TOML with one ``[collections.NAME]`` table per collection::

    [collections.products]
    max_staleness = "30s"          # "250ms", "30s", "5m"; "0s" = strong only
    read_modes = ["bounded", "strong", "session"]
    write_policy = "write-through" # or "write-around", or "write-back"
    flush_interval = "250ms"       # write-back only: the most a buffered write waits
    consumer_lag_limit = "1h"      # named consumers further behind are reported
    ttl = "60s"                    # optional; may exceed max_staleness (TTL is not the bound)
    schema_file = "products.schema.json"   # or an inline [collections.products.schema] table
    strict = true                  # optional; refuse properties the schema does not name
    indexes = ["post_id", "/author/id"]    # optional; the fields list queries may filter/sort on

Every problem is a :class:`ConfigError` naming the file, the collection and the field.
The document schema is standard JSON Schema (Draft 2020-12, :mod:`maxage.schema`),
compiled once into a validator that returns every error as a ``(json_pointer, detail)``
pair; ``strict = true`` refuses properties the schema does not name.
"""

from __future__ import annotations

import enum
import json
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from maxage import schema as schema_lib
from maxage import units

COLLECTION_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
# Operations in one batch write (``--max-batch-operations``): the default, and the most a
# server may allow (every store holds that many in one transaction).
DEFAULT_BATCH_OPERATIONS = 100
MAX_BATCH_OPERATIONS = 1000


class ConfigError(Exception):
    """An invalid config: the message names the file, the collection and the field."""

    def __init__(self, file: str, collection: str | None, field_name: str | None, message: str):
        where = file
        if collection:
            where += f": collection {collection!r}"
        if field_name:
            where += f", field {field_name!r}"
        super().__init__(f"{where}: {message}")
        self.file = file
        self.collection = collection
        self.field = field_name


class ReadMode(enum.Enum):
    BOUNDED = "bounded"
    SESSION = "session"
    STRONG = "strong"


class WritePolicy(enum.Enum):
    WRITE_THROUGH = "write-through"
    WRITE_AROUND = "write-around"
    # Acknowledged from the process's buffer, flushed to the primary within flush_interval
    # (service/writeback.py); only commuting operations (merge patch, increment).
    WRITE_BACK = "write-back"


# Strongest first: the default for a collection that does not allow bounded reads.
_STRENGTH = (ReadMode.STRONG, ReadMode.SESSION, ReadMode.BOUNDED)


def parse_duration(value: object) -> float:
    """A config duration → seconds: a TOML number of seconds, or a string in the one
    duration grammar (:func:`maxage.units.parse_duration`: ``"250ms"``, ``"30s"``, ``"5m"``,
    ``"1h"``) that names its unit. A quoted bare number (``"5"``) is refused in a config
    file: write ``5`` or ``"5s"``."""
    if isinstance(value, bool):
        raise ValueError("expected a duration like '30s', got a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
        if seconds < 0 or not math.isfinite(seconds):
            raise ValueError(f"duration must be finite and >= 0, got {value!r}")
        return seconds
    if not isinstance(value, str):
        raise ValueError(f"expected a duration like '30s', got {type(value).__name__}")
    seconds = units.parse_duration(value)
    if not units.has_unit(value):
        raise ValueError(f"a duration string needs a unit (ms, s, m or h), got {value!r}")
    return seconds


# -- schema ----------------------------------------------------------------------------

# The document schema is standard JSON Schema (Draft 2020-12): maxage.schema compiles it.
SchemaErrors = schema_lib.SchemaErrors
Validator = schema_lib.Validator
SchemaError = schema_lib.SchemaError


# -- indexes ---------------------------------------------------------------------------

# Names list queries use for themselves; an index cannot take one of them.
RESERVED_PARAMETERS = frozenset(
    {"page_size", "page_token", "sort", "fields", "count", "consistency", "min_version"}
)
# One segment of an indexed field: inlined into SQL (index expressions, JSON paths), so
# it is kept to a plain identifier.
_SEGMENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
MAX_INDEXES = 16
INDEX_TYPES = ("string", "integer", "number", "boolean")


@dataclass(frozen=True)
class IndexSpec:
    """A field list queries may filter and sort on, with the primary index behind it.

    ``name`` is how queries call it: the top-level field, or the segments of a JSON
    pointer joined by ``.`` (``/author/id`` -> ``author.id``); ``path`` is the segments;
    ``type`` is the schema's (string, integer, number, boolean), which decides how query
    values are parsed and compared. A document whose value at ``path`` is missing or of
    another type has no value for the index (it never matches a filter on it, and sorts
    last in ascending order)."""

    name: str
    path: tuple[str, ...]
    type: str


def _field_type(schema: Mapping[str, Any], path: tuple[str, ...]) -> str | None:
    """The one scalar type the schema gives the value at ``path`` (None when it gives none,
    several, or a non-scalar one). Local ``$ref``s are followed; ``null`` may be allowed."""
    node: object = schema
    for segment in (*path, None):
        for _ in range(32):  # $ref chains; a cycle is refused by the schema compiler
            if not isinstance(node, dict) or "$ref" not in node:
                break
            node = schema_lib.resolve(schema, node["$ref"])
        if not isinstance(node, dict):
            return None
        if segment is None:
            break
        props = node.get("properties")
        if not isinstance(props, dict) or segment not in props:
            return None
        node = props[segment]
    assert isinstance(node, dict)
    declared = node.get("type")
    types = {declared} if isinstance(declared, str) else set(declared or ())
    types.discard("null")
    if types == {"integer", "number"}:
        types = {"number"}
    if len(types) != 1:
        return None
    (only,) = types
    return only if only in INDEX_TYPES else None


def parse_indexes(raw: object, schema: Mapping[str, Any]) -> tuple[IndexSpec, ...]:
    """``indexes = [...]`` of a collection; raises ValueError with the entry named."""
    if not isinstance(raw, list) or not all(isinstance(x, str) for x in raw):
        raise ValueError(
            'must be a list of field names or JSON pointers, e.g. ["status", "/author/id"]'
        )
    if len(raw) > MAX_INDEXES:
        raise ValueError(f"at most {MAX_INDEXES} indexes per collection, got {len(raw)}")
    out: list[IndexSpec] = []
    for entry in raw:
        path = tuple(entry[1:].split("/")) if entry.startswith("/") else (entry,)
        bad = [s for s in path if not _SEGMENT.match(s)]
        if bad:
            raise ValueError(
                f"{entry!r}: {bad[0]!r} is not an indexable field name (letters, digits and"
                " '_', starting with a letter or '_', at most 63)"
            )
        name = ".".join(path)
        if name in RESERVED_PARAMETERS:
            raise ValueError(f"{entry!r}: {name!r} is a reserved query parameter of list reads")
        if any(i.name == name for i in out):
            raise ValueError(f"{entry!r} is listed twice")
        type_ = _field_type(schema, path)
        if type_ is None:
            raise ValueError(
                f"{entry!r}: the schema must declare it under 'properties' with one type of"
                f" {', '.join(INDEX_TYPES)} (null may be allowed too)"
            )
        out.append(IndexSpec(name, path, type_))
    return tuple(out)


# -- collections -----------------------------------------------------------------------


WEBHOOK_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
WEBHOOK_OPERATIONS = frozenset({"put", "delete"})


@dataclass(frozen=True)
class WebhookSpec:
    """``[[collections.NAME.webhooks]]``: where each committed change is POSTed."""

    name: str
    url: str
    operations: frozenset[str]  # of WEBHOOK_OPERATIONS
    secret: bytes = field(repr=False)  # the HMAC key (from the environment: "env:VAR")
    max_attempts: int = 8
    backoff: float = 0.5  # the first retry's delay; doubled each time, with jitter
    max_backoff: float = 30.0
    timeout: float = 10.0


@dataclass(frozen=True)
class CollectionSpec:
    name: str
    max_staleness: float
    read_modes: frozenset[ReadMode]
    write_policy: WritePolicy
    ttl: float | None
    schema: Mapping[str, Any]
    validator: Validator = field(repr=False, compare=False)
    # PATCH and DELETE must carry If-Match (428 otherwise): no blind overwrite.
    require_if_match: bool = False
    # The schema (as given) refuses other top-level properties: maxage.schema.make_strict.
    strict: bool = False
    # The fields list queries may filter and sort on (each backed by a primary index).
    indexes: tuple[IndexSpec, ...] = ()

    # write-back only: the longest a buffered write waits before its flush starts (the
    # loss window of a crash, per process).
    flush_interval: float = 0.0
    # A named consumer (or webhook subscription) further behind the newest commit than
    # this is reported (maxage_consumer_over_limit); it never holds writers up.
    consumer_lag_limit: float = 3600.0
    # Webhook subscriptions: each committed change POSTed to each (service/webhooks.py).
    webhooks: tuple[WebhookSpec, ...] = ()

    def index(self, name: str) -> IndexSpec | None:
        return next((i for i in self.indexes if i.name == name), None)

    @property
    def default_mode(self) -> ReadMode:
        if ReadMode.BOUNDED in self.read_modes:
            return ReadMode.BOUNDED
        return next(m for m in _STRENGTH if m in self.read_modes)

    @property
    def cache_ttl(self) -> float:
        """TTL used for cache entries; when unset, a multiple of the bound (hygiene only)."""
        if self.ttl is not None:
            return self.ttl
        return max(self.max_staleness * 4, 60.0)

    def validate(self, document: object) -> SchemaErrors:
        """Every error of ``document`` (sorted ``(json_pointer, detail)`` pairs; [] = valid)."""
        if not isinstance(document, dict):
            return [("", "the document must be a JSON object")]
        return self.validator(document)

    @cached_property
    def patch_schema(self) -> dict[str, Any]:
        """The merge-patch schema derived from :attr:`schema` (published as is in OpenAPI)."""
        return schema_lib.patch_schema(self.schema)

    @cached_property
    def _patch_validator(self) -> Validator:
        return schema_lib.compile_schema(self.patch_schema)

    def validate_patch(self, patch: object) -> SchemaErrors:
        """Errors a merge patch has whatever the document it is applied to (null = remove)."""
        return self._patch_validator(patch)

    def allowed_modes_text(self) -> str:
        return ", ".join(m.value for m in _STRENGTH[::-1] if m in self.read_modes)


@dataclass(frozen=True)
class RateLimit:
    """A GCRA limit: ``rate`` requests per second on average, ``burst`` at once."""

    name: str  # the policy's name in RateLimit-Policy ("default", "products", "products.POST")
    rate: float
    burst: int

    @property
    def window(self) -> float:
        """Seconds in which a spent burst refills."""
        return self.burst / self.rate


@dataclass(frozen=True)
class RateLimits:
    default: RateLimit | None
    # (collection or None, method or None) -> limit; the most specific match wins.
    overrides: Mapping[tuple[str | None, str | None], RateLimit] = field(default_factory=dict)

    def policy(self, collection: str | None, method: str) -> RateLimit | None:
        o = self.overrides
        if o:
            for k in ((collection, method), (collection, None), (None, method)):
                if k in o:
                    return o[k]
        return self.default


@dataclass(frozen=True)
class Cors:
    allow_origins: frozenset[str]  # exact origins, or {"*"} (never with credentials)
    allow_credentials: bool = False
    max_age: int = 600


@dataclass(frozen=True)
class Config:
    source: str
    collections: Mapping[str, CollectionSpec]
    rate_limits: RateLimits = field(default_factory=lambda: RateLimits(None))
    cors: Cors | None = None


_COLLECTION_KEYS = {
    "max_staleness",
    "read_modes",
    "write_policy",
    "ttl",
    "schema_file",
    "schema",
    "require_if_match",
    "strict",
    "indexes",
    "flush_interval",
    "consumer_lag_limit",
    "webhooks",
}

# write-back's default flush window, and the widest one a config may declare.
DEFAULT_FLUSH_INTERVAL = 0.25
MAX_FLUSH_INTERVAL = 60.0


def load_config(path: str | Path) -> Config:
    p = Path(path)
    name = str(p)
    try:
        raw = p.read_bytes()
    except OSError as exc:
        raise ConfigError(name, None, None, f"cannot read config: {exc.strerror or exc}") from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(name, None, None, f"invalid TOML: {exc}") from None
    return parse_config(data, name, base_dir=p.parent)


def parse_config(data: Mapping[str, Any], source: str, base_dir: Path | None = None) -> Config:
    unknown_top = set(data) - {"collections", "rate_limits", "cors"}
    if unknown_top:
        raise ConfigError(source, None, sorted(unknown_top)[0], "unknown top-level key")
    cols = data.get("collections")
    if not isinstance(cols, dict) or not cols:
        raise ConfigError(
            source, None, "collections", "at least one [collections.NAME] table is required"
        )
    specs = {}
    for cname, table in cols.items():
        specs[cname] = _parse_collection(source, cname, table, base_dir or Path("."))
    limits = _parse_rate_limits(source, data.get("rate_limits"), specs)
    cors = _parse_cors(source, data["cors"]) if "cors" in data else None
    return Config(source, specs, limits, cors)


_RATE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*/\s*(s|m|h|second|minute|hour)\s*$")
_PER = {"s": 1.0, "second": 1.0, "m": 60.0, "minute": 60.0, "h": 3600.0, "hour": 3600.0}
_METHODS = {"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"}


def parse_rate(text: object) -> float:
    """``"100/s"``, ``"6000/m"``, ``"10/h"`` -> requests per second (> 0)."""
    m = _RATE.match(text) if isinstance(text, str) else None
    if not m or float(m.group(1)) <= 0:
        raise ValueError(f"expected a rate like '100/s', '6000/m' or '10/h', got {text!r}")
    return float(m.group(1)) / _PER[m.group(2)]


def _limit(
    source: str, where: str, name: str, table: Mapping[str, Any], rate_key: str
) -> RateLimit:
    try:
        rate = parse_rate(table.get(rate_key))
    except ValueError as exc:
        raise ConfigError(source, None, f"{where}.{rate_key}", str(exc)) from None
    burst = table.get("burst", max(1, round(rate)))
    if isinstance(burst, bool) or not isinstance(burst, int) or not 1 <= burst <= 10**9:
        raise ConfigError(source, None, f"{where}.burst", "must be an integer 1..1000000000")
    return RateLimit(name, rate, burst)


def _parse_rate_limits(
    source: str, table: object, specs: Mapping[str, CollectionSpec]
) -> RateLimits:
    if table is None:
        return RateLimits(None)
    if not isinstance(table, dict):
        raise ConfigError(source, None, "rate_limits", "must be a table")
    unknown = set(table) - {"default", "burst", "override"}
    if unknown:
        raise ConfigError(
            source, None, f"rate_limits.{sorted(unknown)[0]}",
            "unknown field; expected default, burst or [[rate_limits.override]]",
        )  # fmt: skip
    default = (
        _limit(source, "rate_limits", "default", table, "default") if "default" in table else None
    )
    overrides: dict[tuple[str | None, str | None], RateLimit] = {}
    items = table.get("override", [])
    if not isinstance(items, list):
        raise ConfigError(
            source, None, "rate_limits.override", "must be [[rate_limits.override]] tables"
        )
    for i, item in enumerate(items):
        where = f"rate_limits.override[{i}]"
        if not isinstance(item, dict) or set(item) - {"collection", "method", "rate", "burst"}:
            raise ConfigError(source, None, where, "expects collection, method, rate and burst")
        collection, method = item.get("collection"), item.get("method")
        if collection is not None and collection not in specs:
            raise ConfigError(source, None, f"{where}.collection", f"no collection {collection!r}")
        if method is not None and (not isinstance(method, str) or method.upper() not in _METHODS):
            raise ConfigError(source, None, f"{where}.method", f"must be one of {sorted(_METHODS)}")
        method = method.upper() if isinstance(method, str) else None
        if (collection, method) in overrides:
            raise ConfigError(
                source, None, where, "a second override for the same collection and method"
            )
        name = ".".join(x for x in (collection, method) if x) or "any"
        overrides[(collection, method)] = _limit(source, where, name, item, "rate")
    return RateLimits(default, overrides)


def _parse_cors(source: str, table: object) -> Cors:
    if not isinstance(table, dict) or set(table) - {
        "allow_origins",
        "allow_credentials",
        "max_age",
    }:
        raise ConfigError(source, None, "cors", "expects allow_origins, allow_credentials, max_age")
    origins = table.get("allow_origins")
    if not isinstance(origins, list) or not origins or not all(isinstance(o, str) for o in origins):
        raise ConfigError(source, None, "cors.allow_origins", "must be a non-empty list of origins")
    credentials = table.get("allow_credentials", False)
    if not isinstance(credentials, bool):
        raise ConfigError(source, None, "cors.allow_credentials", "must be true or false")
    for o in origins:
        if o == "*":
            if credentials:
                raise ConfigError(
                    source, None, "cors.allow_origins", "'*' is refused with allow_credentials"
                )
        elif not re.match(r"^https?://[A-Za-z0-9.-]+(:\d{1,5})?$", o):
            raise ConfigError(
                source,
                None,
                "cors.allow_origins",
                f"{o!r} is not an origin like https://app.example.com",
            )
    max_age = table.get("max_age", 600)
    if isinstance(max_age, bool) or not isinstance(max_age, int) or not 0 <= max_age <= 86400:
        raise ConfigError(source, None, "cors.max_age", "must be seconds 0..86400")
    return Cors(frozenset(origins), credentials, max_age)


def _parse_collection(source: str, cname: str, table: object, base_dir: Path) -> CollectionSpec:
    def fail(field_name: str | None, message: str) -> ConfigError:
        return ConfigError(source, cname, field_name, message)

    if not COLLECTION_NAME.match(cname):
        raise fail(
            None, "collection names are 1-63 chars of a-z, 0-9, '_' or '-', starting with a letter"
        )
    if not isinstance(table, dict):
        raise fail(None, "must be a table")
    unknown = set(table) - _COLLECTION_KEYS
    if unknown:
        raise fail(sorted(unknown)[0], f"unknown field; expected one of {sorted(_COLLECTION_KEYS)}")
    if "max_staleness" not in table:
        raise fail("max_staleness", "is required (a duration like '30s'; '0s' = strong only)")
    try:
        staleness = parse_duration(table["max_staleness"])
    except ValueError as exc:
        raise fail("max_staleness", str(exc)) from None

    modes_raw = table.get("read_modes")
    if modes_raw is None:
        modes = (
            frozenset({ReadMode.STRONG})
            if staleness == 0
            else frozenset({ReadMode.BOUNDED, ReadMode.STRONG, ReadMode.SESSION})
        )
    else:
        if not isinstance(modes_raw, list) or not modes_raw:
            raise fail("read_modes", "must be a non-empty list of 'bounded', 'strong', 'session'")
        try:
            modes = frozenset(ReadMode(m) for m in modes_raw)
        except ValueError:
            raise fail(
                "read_modes", f"unknown mode in {modes_raw!r}; allowed: bounded, strong, session"
            ) from None
    if staleness == 0 and modes != {ReadMode.STRONG}:
        raise fail(
            "read_modes", "max_staleness '0s' means strong only: read_modes must be ['strong']"
        )

    policy_raw = table.get("write_policy", "write-around")
    try:
        policy = WritePolicy(policy_raw)
    except ValueError:
        raise fail(
            "write_policy",
            f"must be 'write-through', 'write-around' or 'write-back', got {policy_raw!r}",
        ) from None
    flush_interval = 0.0
    if policy is WritePolicy.WRITE_BACK:
        try:
            flush_interval = parse_duration(table.get("flush_interval", DEFAULT_FLUSH_INTERVAL))
        except ValueError as exc:
            raise fail("flush_interval", str(exc)) from None
        if not 0 < flush_interval <= MAX_FLUSH_INTERVAL:
            raise fail(
                "flush_interval",
                f"must be > 0 and at most {MAX_FLUSH_INTERVAL:g}s (the loss window)",
            )
    elif "flush_interval" in table:
        raise fail("flush_interval", "applies only to write_policy = 'write-back'")
    try:
        lag_limit = parse_duration(table.get("consumer_lag_limit", 3600.0))
    except ValueError as exc:
        raise fail("consumer_lag_limit", str(exc)) from None
    if lag_limit <= 0:
        raise fail("consumer_lag_limit", "must be > 0")
    webhooks = _parse_webhooks(table.get("webhooks", []), fail)

    ttl = None
    if "ttl" in table:
        try:
            ttl = parse_duration(table["ttl"])
        except ValueError as exc:
            raise fail("ttl", str(exc)) from None
        if ttl <= 0:
            raise fail("ttl", "must be > 0")

    if "schema" in table and "schema_file" in table:
        raise fail("schema", "give either schema_file or an inline schema table, not both")
    if "schema_file" in table:
        sf = table["schema_file"]
        if not isinstance(sf, str):
            raise fail("schema_file", "must be a path string")
        spath = (base_dir / sf) if not Path(sf).is_absolute() else Path(sf)
        try:
            schema = json.loads(spath.read_text("utf-8"))
        except OSError as exc:
            raise fail("schema_file", f"cannot read {spath}: {exc.strerror or exc}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise fail("schema_file", f"{spath} is not valid JSON: {exc}") from None
        schema_field = "schema_file"
    elif "schema" in table:
        schema = table["schema"]
        schema_field = "schema"
    else:
        raise fail(
            "schema",
            "a schema is required: schema_file = '...' or a [collections.NAME.schema] table",
        )
    if not isinstance(schema, dict):
        raise fail(schema_field, "the schema must be a JSON object")
    if schema.get("type", "object") not in ("object", ["object"]):
        raise fail(schema_field, "a document schema must have type 'object'")
    strict = table.get("strict", False)
    if not isinstance(strict, bool):
        raise fail("strict", "must be true or false")
    try:
        schema = schema_lib.prepare(schema)  # $schema/$id dropped: read as Draft 2020-12
        schema.setdefault("type", "object")
        if strict:
            try:
                schema = schema_lib.make_strict(schema)
            except SchemaError as exc:
                raise fail("strict", f"{exc} (in {schema_field})") from None
        validator = schema_lib.compile_schema(schema)
    except SchemaError as exc:
        raise fail(schema_field, str(exc)) from None
    require_if_match = table.get("require_if_match", False)
    if not isinstance(require_if_match, bool):
        raise fail("require_if_match", "must be true or false")
    try:
        indexes = parse_indexes(table.get("indexes", []), schema)
    except ValueError as exc:
        raise fail("indexes", str(exc)) from None
    if require_if_match and policy is WritePolicy.WRITE_BACK:
        raise fail(
            "require_if_match",
            "cannot be combined with write_policy = 'write-back' (a precondition needs the "
            "primary; write-back acknowledges before it)",
        )
    spec = CollectionSpec(
        cname,
        staleness,
        modes,
        policy,
        ttl,
        schema,
        validator,
        require_if_match,
        strict,
        indexes,
        flush_interval,
        lag_limit,
        webhooks,
    )
    try:
        spec.validate_patch({})  # derive and compile the merge-patch schema now, not at a PATCH
    except SchemaError as exc:  # pragma: no cover - a derived schema is valid by construction
        raise fail(schema_field, f"cannot derive its merge-patch schema: {exc}") from None
    return spec


_WEBHOOK_KEYS = {"name", "url", "operations", "secret", "max_attempts", "backoff", "timeout"}


def _parse_webhooks(raw: object, fail: Any) -> tuple[WebhookSpec, ...]:
    """``[[collections.NAME.webhooks]]`` tables. The URL is the operator's alone (nothing
    from a request or a document ever goes into it); the secret may name an environment
    variable (``"env:VAR"``) so it stays out of the file."""
    if not isinstance(raw, list):
        raise fail("webhooks", "must be [[collections.NAME.webhooks]] tables")
    out: list[WebhookSpec] = []
    for i, item in enumerate(raw):
        where = f"webhooks[{i}]"
        if not isinstance(item, dict):
            raise fail(where, "must be a table")
        unknown = set(item) - _WEBHOOK_KEYS
        if unknown:
            raise fail(
                f"{where}.{sorted(unknown)[0]}", f"unknown field; expected {sorted(_WEBHOOK_KEYS)}"
            )
        name = item.get("name")
        if not isinstance(name, str) or not WEBHOOK_NAME.match(name):
            raise fail(f"{where}.name", "is required: 1-63 of a-z 0-9 _ -, starting with a letter")
        if any(w.name == name for w in out):
            raise fail(f"{where}.name", f"a second webhook named {name!r}")
        url = item.get("url")
        if not isinstance(url, str) or not re.match(r"^https?://[^/\s?#]+(/[^\s]*)?$", url):
            raise fail(f"{where}.url", "is required: an http:// or https:// URL")
        ops = item.get("operations", sorted(WEBHOOK_OPERATIONS))
        if not isinstance(ops, list) or not ops or not set(ops) <= WEBHOOK_OPERATIONS:
            raise fail(f"{where}.operations", "must be a non-empty list of 'put', 'delete'")
        secret = _webhook_secret(item.get("secret"), f"{where}.secret", fail)
        attempts = item.get("max_attempts", 8)
        if isinstance(attempts, bool) or not isinstance(attempts, int) or not 1 <= attempts <= 100:
            raise fail(f"{where}.max_attempts", "must be an integer 1..100")
        durations = {}
        for key, default, top in (("backoff", 0.5, 60.0), ("timeout", 10.0, 120.0)):
            try:
                durations[key] = parse_duration(item.get(key, default))
            except ValueError as exc:
                raise fail(f"{where}.{key}", str(exc)) from None
            if not 0 < durations[key] <= top:
                raise fail(f"{where}.{key}", f"must be > 0 and at most {top:g}s")
        out.append(
            WebhookSpec(
                name, url, frozenset(ops), secret, attempts, durations["backoff"],
                max(30.0, durations["backoff"]), durations["timeout"],
            )
        )  # fmt: skip
    return tuple(out)


def _webhook_secret(raw: object, where: str, fail: Any) -> bytes:
    if not isinstance(raw, str) or not raw:
        raise fail(where, "is required: 'env:VARIABLE' (recommended) or the secret itself")
    if raw.startswith("env:"):
        var = raw[4:]
        value = os.environ.get(var, "")
        if not value:
            raise fail(where, f"the environment variable {var!r} is not set (or empty)")
        raw = value
    if len(raw) < 16:
        raise fail(where, "a signing secret must be at least 16 characters")
    return raw.encode()
