"""Rule kinds: one small class per kind, registered in RULE_KINDS.

A rule compiles its YAML/JSON spec once. For a span signature (see
matchers.SIG_*) it returns a per-span check `span -> reason | None`, or None
when no span with that signature can violate it. The engine caches those
checks per signature, so the static part of every selector is decided once.
Access rules are planned together (forbid overrides permit, default) by the
engine; they only compile here.
"""

from __future__ import annotations

import heapq
from abc import ABC, abstractmethod
from collections.abc import Callable

import jsonschema
from jsonschema.exceptions import best_match

from traces.records import KIND_PRODUCER

from .matchers import (
    MISSING,
    SIG_AGENT,
    SIG_DESTINATION,
    SIG_KIND,
    SIG_OPERATION,
    SIG_ROUTE,
    SIG_STATE_OP,
    SIG_TOOL,
    Names,
    Selector,
    VersionSet,
    as_list,
    url_version,
)

Check = Callable[[object], "str | None"]
CACHE_LIMIT = 50_000


def _short(value, limit: int = 120) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class Rule(ABC):
    kind = ""

    def __init__(self, index: int, spec: dict, path: tuple, problems: list):
        self.index = index
        self.id = spec["id"]
        self.description = spec.get("description", "")
        self.selector = Selector(spec.get("match"), path + ("match",), problems)
        self.dynamic = self.selector.dynamic

    @abstractmethod
    def check_for(self, sig: tuple) -> Check | None:
        """The per-span check for spans of this signature, or None when the rule cannot apply to them."""

    def fields(self) -> dict:
        return {}

    def document(self) -> dict:
        out = {"id": self.id, "kind": self.kind}
        if self.description:
            out["description"] = self.description
        match = self.selector.document()
        if match:
            out["match"] = match
        out.update(self.fields())
        return out


# --- schema_version ---------------------------------------------------------


def _simple_object_schema(schema) -> tuple | None:
    """The property names an object schema looks at, when nothing else matters.

    For a schema that only uses properties/required/type: object, the result
    of validating an instance depends only on those properties' values, so
    results can be cached per projected value tuple.
    """
    if not isinstance(schema, dict):
        return None
    allowed = {"$schema", "$id", "$comment", "title", "description", "type", "properties", "required"}
    if set(schema) - allowed or schema.get("type", "object") != "object":
        return None
    props = schema.get("properties", {})
    if any("$ref" in str(sub) for sub in props.values()):
        return None
    return tuple(dict.fromkeys(list(props) + list(schema.get("required", []))))


class JsonSchemaCheck:
    def __init__(self, spec: dict, path: tuple, problems: list):
        self.event = spec.get("event")
        self.schema = spec["schema"]
        self.validator = None
        try:
            jsonschema.Draft202012Validator.check_schema(self.schema)
        except jsonschema.SchemaError as exc:
            where = path + ("schema",) + tuple(exc.path)
            problems.append((where, f"invalid JSON Schema: {exc.message}"))
            return
        self.validator = jsonschema.Draft202012Validator(self.schema)
        self.projection = _simple_object_schema(self.schema)
        self.cache: dict = {}

    def _validate(self, instance: dict) -> str | None:
        error = best_match(self.validator.iter_errors(instance))
        if error is None:
            return None
        if error.validator == "required" and isinstance(error.instance, dict):
            missing = [name for name in error.validator_value if name not in error.instance]
            where = "" if not error.absolute_path else f" at {error.json_path}"
            return f"missing required attribute {missing[0]!r}{where}"
        if error.absolute_path:
            field = error.absolute_path[0]
            return f"attribute {field!r} ({error.json_path}): {error.message}"[:300]
        return f"attributes: {error.message}"[:300]

    def reason(self, instance: dict) -> str | None:
        if self.validator is None:
            return None
        if self.projection is None:
            return self._validate(instance)
        key = tuple((k, type(v), v) for k in self.projection if (v := instance.get(k, MISSING)) is not MISSING)
        try:
            return self.cache[key]
        except KeyError:
            pass
        except TypeError:  # unhashable (array) attribute value
            return self._validate(instance)
        result = self._validate(instance)
        if len(self.cache) >= CACHE_LIMIT:
            self.cache.clear()
        self.cache[key] = result
        return result


class SchemaVersionRule(Rule):
    """schema_url versions, a version attribute, and/or a JSON Schema over attributes."""

    kind = "schema_version"

    def __init__(self, index, spec, path, problems):
        super().__init__(index, spec, path, problems)
        self.url_spec = spec.get("schema_url")
        self.attr_spec = spec.get("attribute")
        self.json_spec = spec.get("json_schema")
        self.url_cache: dict = {}
        self.attr_cache: dict = {}
        if self.url_spec:
            self.url_of = self.url_spec.get("of", "effective")
            self.url_required = self.url_spec.get("required", True)
            self.url_versions = VersionSet.compile(
                self.url_spec.get("versions"), self.url_spec.get("range"), path + ("schema_url",), problems
            )
        if self.attr_spec:
            self.attr_name = self.attr_spec["name"]
            self.attr_event = self.attr_spec.get("event")
            self.attr_required = self.attr_spec.get("required", True)
            self.attr_versions = VersionSet.compile(
                self.attr_spec.get("values"), self.attr_spec.get("range"), path + ("attribute",), problems
            )
        self.json = JsonSchemaCheck(self.json_spec, path + ("json_schema",), problems) if self.json_spec else None

    def _url_reason(self, span) -> str | None:
        if self.url_of == "resource":
            url, where = span.resource_schema_url, "resource"
        elif self.url_of == "scope" or span.scope_schema_url:
            url, where = span.scope_schema_url, "scope"
        else:
            url, where = span.resource_schema_url, "resource"
        if not url:
            if not self.url_required:
                return None
            return "no schema_url on the " + ("resource or scope" if self.url_of == "effective" else where)
        key = (url, where)
        if key not in self.url_cache:
            version = url_version(url)
            ok = self.url_versions.allows(url, version)
            self.url_cache[key] = None if ok else (
                f"{where} schema_url {url!r} (version {version}) is not allowed: expected {self.url_versions.text}"
            )
        return self.url_cache[key]

    def _value_reason(self, value, where: str) -> str | None:
        if value is MISSING or value is None:
            return f"{where}attribute {self.attr_name!r} is missing" if self.attr_required else None
        try:
            return self.attr_cache[value]
        except (KeyError, TypeError):
            pass
        ok = isinstance(value, (str, int)) and not isinstance(value, bool) and self.attr_versions.allows(str(value), str(value))
        reason = None if ok else (
            f"{where}attribute {self.attr_name!r} = {_short(value)} is not allowed: expected {self.attr_versions.text}"
        )
        if len(self.attr_cache) < CACHE_LIMIT:
            try:
                self.attr_cache[value] = reason
            except TypeError:
                pass
        return reason

    def _attr_reason(self, span) -> str | None:
        if self.attr_event is None:
            return self._value_reason(span.attributes.get(self.attr_name, MISSING), "")
        for event in span.events:
            if event.get("name") == self.attr_event:
                reason = self._value_reason((event.get("attributes") or {}).get(self.attr_name, MISSING), f"event {self.attr_event!r} ")
                if reason:
                    return reason
        return None

    def _json_reason(self, span) -> str | None:
        if self.json.event is None:
            return self.json.reason(span.attributes)
        for event in span.events:
            if event.get("name") == self.json.event:
                reason = self.json.reason(event.get("attributes") or {})
                if reason:
                    return f"event {self.json.event!r}: {reason}"
        return None

    def check_for(self, sig):
        if not self.selector.static_ok(sig):
            return None
        parts = []
        if self.url_spec:
            parts.append(self._url_reason)
        if self.attr_spec:
            parts.append(self._attr_reason)
        if self.json is not None:
            parts.append(self._json_reason)
        dynamic = self.dynamic
        if dynamic is None and len(parts) == 1:
            return parts[0]

        def check(span):
            if dynamic is not None and not dynamic(span):
                return None
            for part in parts:
                reason = part(span)
                if reason:
                    return reason
            return None

        return check

    def fields(self):
        out = {}
        if self.url_spec:
            out["schema_url"] = {"of": self.url_of, "required": self.url_required}
            for key in ("versions", "range"):
                if key in self.url_spec:
                    out["schema_url"][key] = self.url_spec[key]
        if self.attr_spec:
            out["attribute"] = {"name": self.attr_name, "required": self.attr_required}
            for key in ("event", "values", "range"):
                if key in self.attr_spec:
                    out["attribute"][key] = self.attr_spec[key]
        if self.json_spec:
            out["json_schema"] = dict(self.json_spec)
        return out


# --- access -----------------------------------------------------------------

ACTIONS = ("state.read", "state.write", "tool.call", "message.publish", "http.request")


def span_actions(sig: tuple) -> list[tuple[str, str | None]]:
    """(action, resource) for each action a span performs; resource None = the span's state key."""
    actions = []
    if sig[SIG_STATE_OP]:
        actions.append(("state." + sig[SIG_STATE_OP], None))
    if sig[SIG_TOOL] is not None:
        actions.append(("tool.call", str(sig[SIG_TOOL])))
    destination, operation = sig[SIG_DESTINATION], sig[SIG_OPERATION]
    if (sig[SIG_KIND] == KIND_PRODUCER and destination is not None) or operation in ("publish", "send"):
        actions.append(("message.publish", "" if destination is None else str(destination)))
    if sig[SIG_ROUTE] is not None:
        actions.append(("http.request", str(sig[SIG_ROUTE])))
    return actions


class AccessRule(Rule):
    """Cedar-like permit/forbid over principal (agent), action and resource."""

    kind = "access"

    def __init__(self, index, spec, path, problems):
        super().__init__(index, spec, path, problems)
        self.effect = spec["effect"]
        self.principal = Names(spec["principal"]) if "principal" in spec else None
        self.actions = frozenset(as_list(spec["action"])) if "action" in spec else None
        self.resource = Names(spec["resource"]) if "resource" in spec else None

    def applies(self, sig: tuple, action: str, resource: str | None) -> tuple[bool, Check | None]:
        """(can apply, per-span predicate or None when it always applies) for one action of a signature."""
        if self.actions is not None and action not in self.actions:
            return False, None
        if self.principal is not None and not self.principal(sig[SIG_AGENT]):
            return False, None
        if not self.selector.static_ok(sig):
            return False, None
        if self.resource is not None and resource is not None and not self.resource(resource):
            return False, None
        key = self.resource if (self.resource is not None and resource is None) else None
        dynamic = self.dynamic
        if key is None:
            return True, dynamic
        if dynamic is None:
            return True, lambda span: key(span.state_key)
        return True, lambda span: key(span.state_key) and dynamic(span)

    def check_for(self, sig):  # planned by the engine together with the other access rules
        return None

    def fields(self):
        out = {"effect": self.effect}
        if self.principal is not None:
            out["principal"] = list(self.principal.patterns)
        if self.actions is not None:
            out["action"] = [a for a in ACTIONS if a in self.actions]
        if self.resource is not None:
            out["resource"] = list(self.resource.patterns)
        return out


# --- single_writer ----------------------------------------------------------


class SingleWriterRule(Rule):
    """Only `writer` may write keys matching `key`. Every write attempt counts, rejected ones too."""

    kind = "single_writer"

    def __init__(self, index, spec, path, problems):
        super().__init__(index, spec, path, problems)
        self.key = Names(spec["key"])
        self.writer = spec["writer"]

    def check_for(self, sig):
        if sig[SIG_STATE_OP] != "write" or sig[SIG_AGENT] == self.writer or not self.selector.static_ok(sig):
            return None
        key, writer, dynamic = self.key, self.writer, self.dynamic

        def check(span):
            if not (span.state_key and key(span.state_key)):
                return None
            if dynamic is not None and not dynamic(span):
                return None
            outcome = "took effect" if span.write_took_effect else "was rejected"
            return (
                f"agent {span.agent!r} wrote state key {span.state_key!r} (the write {outcome}); "
                f"only {writer!r} may write keys matching {key.describe()}"
            )

        return check

    def fields(self):
        return {"key": list(self.key.patterns), "writer": self.writer}


# --- idempotency_required ---------------------------------------------------


class IdempotencyRequiredRule(Rule):
    kind = "idempotency_required"

    def check_for(self, sig):
        if not self.selector.static_ok(sig):
            return None
        dynamic = self.dynamic

        def check(span):
            if span.idempotency_key or (dynamic is not None and not dynamic(span)):
                return None
            return f"span {span.name!r} has no idempotency.key"

        return check


# --- bounded_parallelism ----------------------------------------------------


class BoundedParallelismRule(Rule):
    """At most `max` concurrently open matching spans per group, on one process clock.

    Spans are half-open intervals [start, end): one that ends exactly when
    another starts does not overlap it. Groups are (per value, clock), so
    timestamps of different clocks are never compared.
    """

    kind = "bounded_parallelism"

    def __init__(self, index, spec, path, problems):
        super().__init__(index, spec, path, problems)
        self.max = spec["max"]
        self.per = spec.get("per", "agent")

    def group_for(self, sig) -> Callable | None:
        """Per-span function giving the group key (None: not counted), or None if the signature never counts."""
        if not self.selector.static_ok(sig):
            return None
        dynamic, per = self.dynamic, self.per
        if per == "agent":
            value = lambda span: span.agent
        elif per == "service":
            value = lambda span: span.service_name
        elif per == "state_key":
            value = lambda span: span.state_key or None
        elif per == "lock_name":
            value = lambda span: span.lock_name or None
        else:
            name = per.split(":", 1)[1]
            value = lambda span: span.attributes.get(name)

        def group(span):
            if dynamic is not None and not dynamic(span):
                return None
            v = value(span)
            return None if v is None else (v, span.clock)

        return group

    def check_for(self, sig):  # collected by the engine, swept after all spans
        return None

    def sweep(self, group: tuple, spans: list) -> list[tuple[object, str]]:
        """(span, reason) for each span that opened while `max` others were already open."""
        value, clock = group
        what = "agent" if self.per == "agent" else self.per
        out = []
        open_ends: list[int] = []
        spans.sort(key=lambda s: (s.start_ns, s.trace_id, s.span_id))
        for span in spans:
            while open_ends and open_ends[0] <= span.start_ns:
                heapq.heappop(open_ends)
            heapq.heappush(open_ends, span.end_ns)
            if len(open_ends) > self.max:
                out.append((span, (
                    f"{len(open_ends)} matching spans open at once for {what} {value!r} "
                    f"on clock {clock!r} (max {self.max})"
                )))
        return out

    def fields(self):
        return {"max": self.max, "per": self.per}


RULE_KINDS: dict[str, type[Rule]] = {
    cls.kind: cls
    for cls in (SchemaVersionRule, AccessRule, SingleWriterRule, IdempotencyRequiredRule, BoundedParallelismRule)
}
