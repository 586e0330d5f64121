"""JSON Schema (Draft 2020-12) for collection documents: the one compiler, the one error
shape, the merge-patch schema and the OpenAPI form, all derived from the same schema.

* :func:`compile_schema` checks a schema once (the 2020-12 meta-schema, then the rules
  below) and returns a validator giving *all* errors as ``(json_pointer, detail)`` pairs,
  sorted; pointers are RFC 6901 (``""`` is the document). Validation is jsonschema-rs
  (docs/adr/0005-json-schema-library.md) with ``format`` asserted.
* :func:`patch_schema` derives the schema of an RFC 7396 merge patch (docs/schemas.md).
* :func:`openapi_schema` is the same schema as published in ``/openapi.json``: only the
  ``$ref`` strings differ, rewritten so that they resolve inside the OpenAPI document.
* :func:`make_strict` is the collection option ``strict = true``.

Rules on top of the standard, each refused at start-up with the spot named:
unknown keywords (a typo would otherwise be ignored, as the standard says; ``x-*`` and
OpenAPI's ``example`` are allowed); ``$ref`` other than ``#/$defs/…``; ``$anchor``,
``$dynamicRef``, ``$dynamicAnchor``, ``$vocabulary``; ``$schema``/``$id`` below the top.
A top-level ``$schema``/``$id`` is dropped: a schema is always read as Draft 2020-12.

Standard library and jsonschema-rs only.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any
from urllib.parse import unquote

import jsonschema_rs

DIALECT = "https://json-schema.org/draft/2020-12/schema"

SchemaErrors = list[tuple[str, str]]
Validator = Callable[[object], SchemaErrors]


class SchemaError(ValueError):
    """The schema itself is invalid; the message starts with the spot (``#/properties/a``)."""

    def __init__(self, pointer: str, message: str) -> None:
        super().__init__(f"#{pointer}: {message}")
        self.pointer = pointer


# -- the keywords ---------------------------------------------------------------------------

# Keywords whose value is a map of schemas, a schema, a list of schemas (2020-12 applicators).
_SCHEMA_MAP = ("properties", "patternProperties", "$defs", "dependentSchemas")
_SCHEMA_ONE = ("items", "additionalProperties", "unevaluatedProperties", "unevaluatedItems",
               "contains", "propertyNames", "not", "if", "then", "else", "contentSchema")  # fmt: skip
_SCHEMA_LIST = ("prefixItems", "allOf", "anyOf", "oneOf")
_OTHER = {
    "$schema", "$id", "$ref", "$comment",
    "type", "const", "enum", "multipleOf", "maximum", "exclusiveMaximum", "minimum",
    "exclusiveMinimum", "maxLength", "minLength", "pattern", "maxItems", "minItems",
    "uniqueItems", "maxContains", "minContains", "maxProperties", "minProperties", "required",
    "dependentRequired", "format", "contentEncoding", "contentMediaType",
    "title", "description", "default", "deprecated", "readOnly", "writeOnly", "examples",
    "example",  # OpenAPI's (deprecated) single example: an annotation
}  # fmt: skip
KEYWORDS = frozenset(_OTHER | set(_SCHEMA_MAP) | set(_SCHEMA_ONE) | set(_SCHEMA_LIST))
_REFUSED = {
    "$anchor": "plain-name fragments are not supported; use $defs and '#/$defs/NAME'",
    "$dynamicRef": "dynamic references are not supported; use '#/$defs/NAME'",
    "$dynamicAnchor": "dynamic references are not supported; use '#/$defs/NAME'",
    "$vocabulary": "a document schema cannot declare vocabularies",
}
_DEFS_REF = "#/$defs/"
_TYPES = "array, boolean, integer, null, number, object, string"
# Keywords that constrain every type (a null too): ``type`` cannot simply gain "null".
_ANY_TYPE = {"const", "enum", "not", "allOf", "anyOf", "oneOf", "$ref", "if", "then", "else"}


def escape(token: str) -> str:
    """One RFC 6901 reference token."""
    return token.replace("~", "~0").replace("/", "~1")


def _pointer(path: Sequence[str | int]) -> str:
    return "".join(f"/{escape(str(p))}" for p in path)


def walk(schema: object, pointer: str = "") -> Iterator[tuple[str, dict[str, Any]]]:
    """Every subschema that is an object, with its pointer (not into enum/const/default…)."""
    if not isinstance(schema, dict):
        return
    yield pointer, schema
    for key in _SCHEMA_MAP:
        sub = schema.get(key)
        if isinstance(sub, dict):
            for name, s in sub.items():
                yield from walk(s, f"{pointer}/{escape(key)}/{escape(name)}")
    for key in _SCHEMA_ONE:
        if key in schema:
            yield from walk(schema[key], f"{pointer}/{key}")
    for key in _SCHEMA_LIST:
        sub = schema.get(key)
        if isinstance(sub, list):
            for i, s in enumerate(sub):
                yield from walk(s, f"{pointer}/{key}/{i}")


# -- checking and compiling -----------------------------------------------------------------


def prepare(schema: object) -> dict[str, Any]:
    """The schema as enforced (a copy without a top-level ``$schema``/``$id``), checked
    against the 2020-12 meta-schema and the rules above. Raises :class:`SchemaError`."""
    if not isinstance(schema, dict):
        raise SchemaError("", "a schema must be a JSON object")
    prepared = copy.deepcopy(schema)
    prepared.pop("$schema", None)
    prepared.pop("$id", None)
    try:
        jsonschema_rs.meta.validate({"$schema": DIALECT, **prepared})
    except jsonschema_rs.ValidationError as exc:
        where = _pointer(exc.instance_path)
        parent = exc.instance_path[-2] if len(exc.instance_path) > 1 else None
        if exc.instance_path[-1:] == ["type"] and parent not in _SCHEMA_MAP:
            raise SchemaError(where, f"must be one of {_TYPES} or a list of them") from None
        raise SchemaError(where, exc.message) from None
    except jsonschema_rs.ReferencingError as exc:  # pragma: no cover - $schema is fixed
        raise SchemaError("", str(exc)) from None
    for where, node in walk(prepared):
        unknown = sorted(k for k in node if k not in KEYWORDS and not k.startswith("x-"))
        refused = sorted(k for k in node if k in _REFUSED)
        if refused:
            raise SchemaError(where, f"{refused[0]}: {_REFUSED[refused[0]]}")
        if unknown:
            raise SchemaError(
                where, f"unknown keyword(s) {unknown} (Draft 2020-12; extensions start with x-)"
            )
        if where and ("$schema" in node or "$id" in node):
            raise SchemaError(where, "$schema and $id are allowed only at the top of the schema")
        ref = node.get("$ref")
        if ref is not None and not (isinstance(ref, str) and ref.startswith(_DEFS_REF)):
            raise SchemaError(
                f"{where}/$ref", f"{ref!r}: only local references '#/$defs/NAME' are supported"
            )
        if ref is not None and resolve(prepared, ref) is None:
            raise SchemaError(f"{where}/$ref", f"{ref!r} refers to nothing in this schema")
    return prepared


def resolve(root: object, ref: str) -> object | None:
    """The node a local ``#/…`` reference names in ``root`` (None when there is none)."""
    node = root
    for token in ref[2:].split("/"):
        token = unquote(token).replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict) and token in node:
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return None
    return node


def _no_retrieval(uri: str) -> Any:
    raise ValueError(f"remote references are not supported: {uri}")


def _compile(prepared: dict[str, Any]) -> jsonschema_rs.Validator:
    try:
        return jsonschema_rs.Draft202012Validator(
            prepared, validate_formats=True, retriever=_no_retrieval
        )
    except jsonschema_rs.ValidationError as exc:  # e.g. a pattern that is not a regex
        raise SchemaError(_pointer(exc.instance_path), exc.message) from None
    except (jsonschema_rs.ReferencingError, ValueError) as exc:  # e.g. '#/$defs/missing'
        raise SchemaError("", str(exc).splitlines()[0]) from None


def compile_schema(schema: object) -> Validator:
    """Check ``schema`` once and return ``validate(instance) -> sorted [(pointer, detail)]``
    with every error (``[]`` when valid). Raises :class:`SchemaError` naming the spot."""
    compiled = _compile(prepare(schema))
    is_valid, iter_errors = compiled.is_valid, compiled.iter_errors

    def validate(instance: object) -> SchemaErrors:
        try:
            if is_valid(instance):
                return []
            found: set[tuple[str, str]] = set()
            for error in iter_errors(instance):
                found.update(_describe(error))
        except UnicodeEncodeError:  # a lone surrogate (JSON decoders refuse them already)
            return [("", "contains a string that is not valid Unicode")]
        return sorted(found)

    return validate


# -- error details ---------------------------------------------------------------------------

_K = jsonschema_rs.ValidationErrorKind
_LONG = 200


def _num(x: object) -> str:
    if isinstance(x, float) and x.is_integer() and abs(x) < 2**53:
        return str(int(x))
    return str(x)


def _shown(value: object) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= _LONG else text[: _LONG - 1] + "…"


def _describe(error: jsonschema_rs.ValidationError) -> list[tuple[str, str]]:
    """One error as ``(pointer, detail)`` pairs; a detail never repeats the value sent.

    (Long: one short English phrase per 2020-12 keyword, in the wording the hand-written
    validator used, so clients that showed them keep reading the same sentences.)
    """
    at = _pointer(error.instance_path)
    kind = error.kind
    match kind:
        case _K.Required(property=name):
            return [(f"{at}/{escape(name)}", "is required")]
        case _K.AdditionalProperties(unexpected=names) | _K.UnevaluatedProperties(unexpected=names):
            return [(f"{at}/{escape(n)}", "is not an allowed property") for n in names]
        case _K.Type(types=["null"]) if error.schema_path[-2:-1] == ["additionalProperties"]:
            # A merge patch may name a property the document does not allow only to remove it.
            return [(at, "is not an allowed property (only null, to remove it)")]
        case _K.Type(types=types):
            return [(at, "must be of type " + " or ".join(types))]
        case _K.Enum(options=[]):
            return [(at, "matches no value (the enum is empty)")]
        case _K.Enum(options=options):
            shown = ", ".join(json.dumps(o, ensure_ascii=False) for o in options)
            return [
                (at, "must be one of " + (shown if len(shown) <= _LONG else shown[:_LONG] + "…"))
            ]
        case _K.Constant(expected_value=expected):
            return [(at, "must be " + _shown(expected))]
        case _K.Minimum(limit=n):
            return [(at, f"must be >= {_num(n)}")]
        case _K.Maximum(limit=n):
            return [(at, f"must be <= {_num(n)}")]
        case _K.ExclusiveMinimum(limit=n):
            return [(at, f"must be > {_num(n)}")]
        case _K.ExclusiveMaximum(limit=n):
            return [(at, f"must be < {_num(n)}")]
        case _K.MultipleOf(multiple_of=n):
            return [(at, f"must be a multiple of {_num(n)}")]
        case _K.MinLength(limit=n):
            return [(at, f"must be at least {n} characters long")]
        case _K.MaxLength(limit=n):
            return [(at, f"must be at most {n} characters long")]
        case _K.MinItems(limit=n):
            return [(at, f"must have at least {n} items")]
        case _K.MaxItems(limit=n):
            return [(at, f"must have at most {n} items")]
        case _K.MinProperties(limit=n):
            return [(at, f"must have at least {n} properties")]
        case _K.MaxProperties(limit=n):
            return [(at, f"must have at most {n} properties")]
        case _K.Pattern(pattern=pattern):
            return [(at, f"must match pattern {pattern!r}")]
        case _K.Format(format=fmt):
            return [(at, f"must be a valid {fmt}")]
        case _K.UniqueItems():
            return [(at, "must not contain duplicate items")]
        case _K.OneOfNotValid():
            return [(at, "must match exactly one schema in oneOf (it matches none)")]
        case _K.OneOfMultipleValid():
            return [(at, "must match exactly one schema in oneOf (it matches more than one)")]
        case _K.AnyOf(context=branches):
            # "null or X" (a merge patch's property): X's own errors say more.
            other = [b for b in branches if not _only_not_null(b, error.instance_path)]
            if len(other) == 1 and len(branches) == 2 and other[0]:
                return [pair for e in other[0] for pair in _describe(e)]
            return [(at, "must match at least one schema in anyOf")]
        case _K.Not():
            return [(at, "must not match the schema in not")]
        case _K.FalseSchema():
            return [(at, "is not allowed here")]
        case _K.Contains():
            return [(at, "must contain the required number of items matching contains")]
        case _K.UnevaluatedItems() | _K.AdditionalItems():
            return [(at, "has more items than the schema allows")]
        case _K.PropertyNames(error=inner):
            return [(at, "has a property name that is not allowed: " + inner.message[:_LONG])]
    return [(at, error.message[:_LONG])]


def _only_not_null(errors: list[jsonschema_rs.ValidationError], at: list[str | int]) -> bool:
    return (
        len(errors) == 1
        and isinstance(errors[0].kind, _K.Type)
        and errors[0].kind.types == ["null"]
        and errors[0].instance_path == at
    )


# -- strict ------------------------------------------------------------------------------------

_COMPOSITE = ("$ref", "allOf", "anyOf", "oneOf", "if", "then", "else", "dependentSchemas")


def make_strict(schema: Mapping[str, Any]) -> dict[str, Any]:
    """``strict = true``: the top-level object allows no property the schema does not name.

    ``additionalProperties: false`` when the top level declares its properties itself; when
    it composes them (``$ref``, ``allOf``, ``oneOf``…, where ``additionalProperties`` would
    not see the composed ones) ``unevaluatedProperties: false``. Nested objects are left as
    the schema says. A schema that already allows other properties contradicts ``strict``."""
    out = dict(schema)
    extra, unevaluated = out.get("additionalProperties"), out.get("unevaluatedProperties")
    if extra is False or unevaluated is False:
        return out
    for key, value in (("additionalProperties", extra), ("unevaluatedProperties", unevaluated)):
        if value is not None:
            raise SchemaError(
                f"/{key}", "strict = true contradicts a schema that allows other properties"
            )
    if any(k in out for k in _COMPOSITE):
        out["unevaluatedProperties"] = False
    else:
        out["additionalProperties"] = False
    return out


# -- OpenAPI -------------------------------------------------------------------------------------


def openapi_schema(
    schema: Mapping[str, Any], component: str, drop_defs: bool = False
) -> dict[str, Any]:
    """``schema`` as published: a copy whose ``#/$defs/…`` references point into the
    component ``#/components/schemas/<component>`` that holds the ``$defs``. A patch
    schema's copy of the document's ``$defs`` is left out (``drop_defs``): its references
    point into the data component's."""
    out = copy.deepcopy(dict(schema))
    out.pop("$schema", None)
    out.pop("$id", None)
    if drop_defs:
        out.pop("$defs", None)
    base = f"#/components/schemas/{component}/$defs/"
    for _, node in walk(out):
        ref = node.get("$ref")
        if isinstance(ref, str) and ref.startswith(_DEFS_REF):
            node["$ref"] = base + ref[len(_DEFS_REF) :]
    return out


# -- merge patch ---------------------------------------------------------------------------------

_MAX_DEPTH = 32
_MAX_OBJECTS = 2000


def patch_schema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """The schema of an RFC 7396 merge patch of documents valid under ``schema`` (prepared).

    Sound, not complete: a patch it refuses fails re-validation whatever document it is
    applied to; one it accepts may still fail then (the merged document is validated).

    * The patch is an object; every property may be left out. A property the document
      schema names takes ``null`` (remove it) unless it is required in every case, or a
      value: as in the schema when the schema admits no object (the value replaces), and
      when it does, a merge patch of that object, derived the same way.
    * The names are those reachable through ``$ref``/``allOf``/``anyOf``/``oneOf``/
      ``if``-``then``-``else``/``dependentSchemas``; constraints from ``allOf``/``$ref``
      all hold; a name under ``anyOf``/``oneOf``/``then``/``else`` is constrained only when
      every branch constrains it (then by any branch's); ``dependentSchemas`` constrain none.
    * Properties the document schema does not allow (``additionalProperties: false``, or
      ``unevaluatedProperties: false`` with nothing that evaluates other names) may only
      be ``null`` (removing an absent property is harmless).
    * A recursive ``$ref`` met again, nesting beyond 32 levels and objects beyond the
      2000th derived constrain nothing.
    """
    root = dict(schema)
    out = _Patches(root).object_patch(root, (), 0)
    if "$defs" in root:
        out["$defs"] = root["$defs"]  # what unchanged subschemas refer to
    return out


class _Patches:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root
        self.budget = _MAX_OBJECTS  # object patches derived; then values are unconstrained

    def resolve(self, ref: str) -> object:
        node = resolve(self.root, ref)
        return True if node is None else node

    def conjuncts(self, schema: object, refs: list[str]) -> list[dict[str, Any]]:
        """The object schemas that all hold wherever ``schema`` does (itself, its ``$ref``
        targets and ``allOf`` members, recursively); ``refs`` collects the refs followed."""
        out: list[dict[str, Any]] = []
        stack = [schema]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict):
                continue  # true: no constraint; false: nothing is valid, left to re-validation
            out.append(node)
            ref = node.get("$ref")
            if isinstance(ref, str) and ref not in refs:
                refs.append(ref)
                stack.append(self.resolve(ref))
            stack.extend(node.get("allOf", []))
        return out

    def value_patch(self, schema: object, seen: tuple[str, ...], depth: int) -> Any:
        """The schema of a non-null patch value where the document has ``schema``."""
        if not isinstance(schema, dict) or not schema:
            return schema
        refs: list[str] = []
        parts = self.conjuncts(schema, refs)
        if any(r in seen for r in refs) or depth >= _MAX_DEPTH or self.budget <= 0:
            return {}
        if not self.may_be_object(parts):
            return schema  # the value replaces: exactly the schema
        patch = self.object_patch(schema, (*seen, *refs), depth + 1)
        if self.only_object(parts):
            return patch
        return {"anyOf": [patch, schema]}

    def object_patch(
        self, schema: dict[str, Any], seen: tuple[str, ...], depth: int
    ) -> dict[str, Any]:
        """The schema of a merge patch (an object) where the document has ``schema``.

        (Long: it gathers names, constraints and requirements from conjuncts, then from
        each group of alternatives, then settles what other names may be; see patch_schema.)
        """
        self.budget -= 1
        parts = self.conjuncts(schema, [])
        constraints: dict[str, list[Any]] = {}
        required: set[str] = set()
        names: list[str] = []

        def name(n: str) -> None:
            if n not in constraints:
                constraints[n] = []
                names.append(n)

        groups: list[list[object]] = []
        for part in parts:
            for n, sub in (part.get("properties") or {}).items():
                name(n)
                constraints[n].append(sub)
            required.update(r for r in part.get("required", []) if isinstance(r, str))
            for key in ("anyOf", "oneOf"):
                if isinstance(part.get(key), list):
                    groups.append(part[key])
            if "then" in part or "else" in part:
                groups.append([part.get("then", True), part.get("else", True)])
            for sub in (part.get("dependentSchemas") or {}).values():
                groups.append([sub, True])
        for group in groups:
            branches = []
            for branch in group:
                props: dict[str, list[Any]] = {}
                needed: set[str] = set()
                for part in self.conjuncts(branch, []):
                    for n, sub in (part.get("properties") or {}).items():
                        props.setdefault(n, []).append(sub)
                    needed.update(r for r in part.get("required", []) if isinstance(r, str))
                branches.append((props, needed))
            for props, _ in branches:
                for n in props:
                    name(n)
            for n in {n for props, _ in branches for n in props}:
                if all(n in props for props, _ in branches):
                    alternatives = [_all_of(props[n]) for props, _ in branches]
                    constraints[n].append(_any_of(alternatives))
            required.update(set.intersection(*(needed for _, needed in branches)))
        for n in self.reachable(schema):
            name(n)

        extra = schema.get("additionalProperties")
        own = schema.get("properties") or {}
        patterns = schema.get("patternProperties") or {}
        closed = False
        for n in list(names):
            if n in own or any(_matches(p, n) for p in patterns):
                continue
            if extra is False:  # never allowed: left to additionalProperties (null only)
                names.remove(n)
            elif isinstance(extra, dict):
                constraints[n].append(extra)
        out: dict[str, Any] = {"type": "object"}
        properties = {}
        for n in names:
            value = self.value_patch(_all_of(constraints[n]), seen, depth)
            properties[n] = value if n in required else _nullable(value)
        if properties:
            out["properties"] = properties
        if patterns:
            out["patternProperties"] = {
                p: _nullable(self.value_patch(sub, seen, depth)) for p, sub in patterns.items()
            }
        if extra is False:
            closed = True
        elif isinstance(extra, dict):
            out["additionalProperties"] = _nullable(self.value_patch(extra, seen, depth))
        elif extra is None and schema.get("unevaluatedProperties") is False:
            closed = not self.opens(schema)
        if closed:
            out["additionalProperties"] = {"type": "null"}
        return out

    def may_be_object(self, parts: list[dict[str, Any]], depth: int = 0) -> bool:
        """False when no object can be valid where all of ``parts`` hold (as far as seen)."""
        if depth > 8:
            return True
        for part in parts:
            kinds = part.get("type")
            if kinds is not None and "object" not in ([kinds] if isinstance(kinds, str) else kinds):
                return False
            if "const" in part and not isinstance(part["const"], dict):
                return False
            values = part.get("enum")
            if isinstance(values, list) and not any(isinstance(v, dict) for v in values):
                return False
            for key in ("anyOf", "oneOf"):
                branches = part.get(key)
                if isinstance(branches, list) and not any(
                    self.may_be_object(self.conjuncts(b, []), depth + 1) for b in branches
                ):
                    return False
        return True

    def only_object(self, parts: list[dict[str, Any]], depth: int = 0) -> bool:
        """True when only objects can be valid where all of ``parts`` hold (as far as seen)."""
        if depth > 8:
            return False
        for part in parts:
            if part.get("type") in ("object", ["object"]):
                return True
            for key in ("anyOf", "oneOf"):
                branches = part.get(key)
                if isinstance(branches, list) and all(
                    self.only_object(self.conjuncts(b, []), depth + 1) for b in branches
                ):
                    return True
        return False

    def _reach(self, schema: object) -> Iterator[dict[str, Any]]:
        """The object schemas reachable without entering a property or an item."""
        seen: set[int] = set()
        stack = [schema]
        while stack:
            node = stack.pop()
            if not isinstance(node, dict) or id(node) in seen:
                continue
            seen.add(id(node))
            yield node
            if isinstance(node.get("$ref"), str):
                stack.append(self.resolve(node["$ref"]))
            for key in ("allOf", "anyOf", "oneOf"):
                stack.extend(node.get(key, []))
            stack.extend(node.get(k) for k in ("if", "then", "else"))
            stack.extend((node.get("dependentSchemas") or {}).values())

    def reachable(self, schema: object) -> list[str]:
        return [n for node in self._reach(schema) for n in node.get("properties") or {}]

    def opens(self, schema: dict[str, Any]) -> bool:
        """Whether something reachable evaluates names it does not list."""
        for node in self._reach(schema):
            if node.get("patternProperties"):
                return True
            if node.get("additionalProperties", False) is not False:
                return True
            if node is not schema and node.get("unevaluatedProperties", False) is not False:
                return True
        return False


def _matches(pattern: str, name: str) -> bool:
    try:
        return re.search(pattern, name) is not None
    except re.error:  # an ECMA-262 pattern Python cannot read: assume it may match
        return True


def _all_of(schemas: list[Any]) -> Any:
    kept = []
    for s in schemas:
        if s is True or s == {}:
            continue
        if s not in kept:
            kept.append(s)
    if not kept:
        return {}
    return kept[0] if len(kept) == 1 else {"allOf": kept}


def _any_of(schemas: list[Any]) -> Any:
    if any(s is True or s == {} for s in schemas):
        return {}
    kept: list[Any] = []
    for s in schemas:
        if s not in kept:
            kept.append(s)
    return kept[0] if len(kept) == 1 else {"anyOf": kept}


def _nullable(schema: Any) -> Any:
    """``schema`` or ``null``, as plainly as possible (``type: [T, "null"]`` where it can)."""
    if schema is True or schema == {}:
        return schema
    if schema is False:
        return {"type": "null"}
    if not isinstance(schema, dict):
        return schema
    if "type" not in schema and not _ANY_TYPE & schema.keys():
        return schema  # constrains other types only: null already passes
    if "type" in schema and not (_ANY_TYPE - {"enum"}) & schema.keys():
        out = dict(schema)
        kinds = out["type"]
        kinds = [kinds] if isinstance(kinds, str) else list(kinds)
        if "null" not in kinds:
            out["type"] = [*kinds, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]
        return out
    if isinstance(schema.get("anyOf"), list) and len(schema) == 1:
        branches = schema["anyOf"]
        return schema if {"type": "null"} in branches else {"anyOf": [{"type": "null"}, *branches]}
    return {"anyOf": [{"type": "null"}, schema]}


# -- examples ------------------------------------------------------------------------------------

_FORMAT_EXAMPLES = {
    "date-time": "2026-01-31T12:00:00Z",
    "date": "2026-01-31",
    "time": "12:00:00Z",
    "duration": "P1D",
    "email": "ada@example.com",
    "idn-email": "ada@example.com",
    "hostname": "example.com",
    "idn-hostname": "example.com",
    "ipv4": "192.0.2.1",
    "ipv6": "2001:db8::1",
    "uri": "https://example.com/",
    "uri-reference": "/example",
    "iri": "https://example.com/",
    "iri-reference": "/example",
    "uuid": "123e4567-e89b-42d3-a456-426614174000",
    "json-pointer": "/a/b",
    "regex": "^a+$",
}
_EXAMPLE_DEPTH = 12


def example(schema: Mapping[str, Any]) -> tuple[bool, Any]:
    """A plausible instance of ``schema`` (prepared: local ``$ref`` only), made from its
    ``examples``, ``default``, ``const``, ``enum``, types, formats and bounds, for the
    OpenAPI document. ``(False, None)`` when none is found: the caller validates what it
    gets and leaves it out when invalid (patterns, ``not`` and the like are not solved)."""
    return _example(schema, schema, 0)


def _example(root: Mapping[str, Any], node: object, depth: int) -> tuple[bool, Any]:
    if node is True or node == {}:
        return True, "example"
    if not isinstance(node, Mapping) or depth > _EXAMPLE_DEPTH:
        return False, None
    for key in ("examples",):
        if isinstance(node.get(key), list) and node[key]:
            return True, copy.deepcopy(node[key][0])
    for key in ("const", "default"):
        if key in node:
            return True, copy.deepcopy(node[key])
    if isinstance(node.get("enum"), list) and node["enum"]:
        return True, copy.deepcopy(node["enum"][0])
    ref = node.get("$ref")
    if isinstance(ref, str):
        return _example(root, resolve(root, ref), depth + 1)
    for key in ("oneOf", "anyOf"):
        if isinstance(node.get(key), list) and node[key]:
            return _example(root, node[key][0], depth + 1)
    if isinstance(node.get("allOf"), list):
        merged: dict[str, Any] = {}
        for part in node["allOf"]:
            ok, value = _example(root, part, depth + 1)
            if ok and isinstance(value, dict):
                merged.update(value)
        own = {k: v for k, v in node.items() if k != "allOf"}
        ok, value = _example(root, own, depth + 1) if set(own) & _TYPED else (True, {})
        if ok and isinstance(value, dict):
            merged.update(value)
        return True, merged
    kind = node.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind is None:
        kind = next((k for k, words in _TYPE_WORDS.items() if set(node) & words), None)
    if kind == "object":
        return True, _object_example(root, node, depth)
    if kind == "array":
        ok, item = _example(root, node.get("items", {}), depth + 1)
        count = max(1, int(node.get("minItems", 1)))
        return True, [copy.deepcopy(item) for _ in range(count)] if ok else []
    if kind == "string":
        return True, _string_example(node)
    if kind in ("integer", "number"):
        return True, _number_example(node, kind == "integer")
    if kind == "boolean":
        return True, True
    if kind == "null":
        return True, None
    return False, None


_TYPE_WORDS = {
    "object": {"properties", "required", "additionalProperties", "patternProperties"},
    "array": {"items", "prefixItems", "minItems", "maxItems", "uniqueItems"},
    "string": {"minLength", "maxLength", "pattern", "format"},
    "number": {"minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum", "multipleOf"},
}
_TYPED = {"type", *(w for words in _TYPE_WORDS.values() for w in words)}


def _object_example(root: Mapping[str, Any], node: Mapping[str, Any], depth: int) -> dict[str, Any]:
    """Every property whose example is found (required ones first, in schema order)."""
    props = node.get("properties", {})
    required = [k for k in node.get("required", []) if isinstance(k, str)]
    out: dict[str, Any] = {}
    for name in [*required, *(k for k in props if k not in required)]:
        ok, value = _example(root, props.get(name, {}), depth + 1)
        if ok:
            out[name] = value
    return out


def _string_example(node: Mapping[str, Any]) -> str:
    fmt = node.get("format")
    text = _FORMAT_EXAMPLES.get(fmt, "example") if isinstance(fmt, str) else "example"
    low = int(node.get("minLength", 0))
    high = node.get("maxLength")
    if len(text) < low:
        text += "x" * (low - len(text))
    if isinstance(high, int) and len(text) > high:
        text = text[:high]
    return text


def _number_example(node: Mapping[str, Any], integer: bool) -> float:
    value: float = 1 if integer else 9.5
    low, high = node.get("minimum"), node.get("maximum")
    xlow, xhigh = node.get("exclusiveMinimum"), node.get("exclusiveMaximum")
    if isinstance(low, int | float) and value < low:
        value = low
    if isinstance(xlow, int | float) and value <= xlow:
        value = xlow + 1
    if isinstance(high, int | float) and value > high:
        value = high
    if isinstance(xhigh, int | float) and value >= xhigh:
        value = xhigh - 1
    step = node.get("multipleOf")
    if isinstance(step, int | float) and step > 0:
        value = round(value / step) * step
        if isinstance(low, int | float) and value < low:
            value += step
    if integer:
        return int(value)
    return value
