"""Reading a policy document: YAML or JSON text -> data, every problem located.

Locations come from the YAML node tree (yaml.compose keeps line/column marks);
JSON is YAML, so JSON text gets the same locations. A problem's `path` is a
JSON-path-like string such as `rules[2].match.service`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).resolve().parent.parent / "policy.schema.json"


@dataclass(frozen=True)
class PolicyProblem:
    message: str
    line: int | None  # 1-based
    column: int | None  # 1-based
    path: str

    def __str__(self) -> str:
        where = f"line {self.line}, column {self.column}" if self.line is not None else "unknown position"
        at = f" ({self.path})" if self.path else ""
        return f"{where}{at}: {self.message}"


class PolicyError(Exception):
    """A policy that cannot be used; `errors` lists every problem found, in source order."""

    def __init__(self, errors: list[PolicyProblem]):
        self.errors = list(errors)
        super().__init__("\n".join(str(e) for e in self.errors) or "invalid policy")


@lru_cache(maxsize=1)
def policy_schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


@lru_cache(maxsize=1)
def schema_validator() -> jsonschema.Draft202012Validator:
    return jsonschema.Draft202012Validator(policy_schema())


_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def path_text(path) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _IDENT.match(str(part)):
            out += ("." if out else "") + str(part)
        else:
            out += f"[{json.dumps(str(part))}]"
    return out


class Document:
    """Parsed data plus the node tree it came from, for locating problems."""

    def __init__(self, text: str):
        self.data = None
        self.root: yaml.Node | None = None
        self.problems: list[PolicyProblem] = []
        self._load(text)

    def _load(self, text: str) -> None:
        if text.lstrip().startswith(("{", "[")):
            try:
                self.data = json.loads(text)
            except json.JSONDecodeError as exc:
                self.problems.append(PolicyProblem(f"JSON syntax error: {exc.msg}", exc.lineno, exc.colno, ""))
                return
            try:
                self.root = _compose(text)
            except yaml.YAMLError:
                self.root = None  # valid JSON that PyYAML cannot read (e.g. tabs): unlocated problems
            return
        try:
            loader = yaml.SafeLoader(text)
            try:
                self.root = loader.get_single_node()
                self.data = loader.construct_document(self.root) if self.root is not None else None
            finally:
                loader.dispose()
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            if exc.context_mark is not None and mark.index >= len(text.rstrip()):
                mark = exc.context_mark  # ran into the end of the text: point at what was left open
            detail = " ".join(str(p) for p in (exc.context, exc.problem) if p)
            self.problems.append(PolicyProblem(
                f"YAML syntax error: {detail}", mark.line + 1 if mark else None, mark.column + 1 if mark else None, ""
            ))
            return
        except yaml.YAMLError as exc:
            self.problems.append(PolicyProblem(f"YAML syntax error: {exc}", None, None, ""))
            return
        self._duplicate_keys(self.root, ())

    def _duplicate_keys(self, node, path) -> None:
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if key is not None and key in seen:
                    self.add(path + (key,), f"duplicate key {key!r}", at_key=True)
                seen.add(key)
                self._duplicate_keys(value_node, path + (key,))
        elif isinstance(node, yaml.SequenceNode):
            for i, item in enumerate(node.value):
                self._duplicate_keys(item, path + (i,))

    def node_at(self, path, at_key: bool = False):
        """The deepest node along `path` (the key node of the last step when at_key)."""
        node = self.root
        for depth, part in enumerate(path):
            if isinstance(node, yaml.MappingNode):
                found = None
                for key_node, value_node in reversed(node.value):  # the last duplicate wins, as in the data
                    if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                        found = (key_node, value_node)
                        break
                if found is None:
                    return node
                if at_key and depth == len(path) - 1:
                    return found[0]
                node = found[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
                node = node.value[part]
            else:
                return node
        return node

    def add(self, path, message: str, at_key: bool = False, locate=None) -> None:
        node = self.node_at(locate if locate is not None else path, at_key) if self.root is not None else None
        line = node.start_mark.line + 1 if node is not None else None
        column = node.start_mark.column + 1 if node is not None else None
        self.problems.append(PolicyProblem(message, line, column, path_text(path)))

    # --- JSON Schema errors -------------------------------------------------

    def check_schema(self) -> set[tuple]:
        """Validate against policy.schema.json; returns the paths that had errors."""
        bad = set()
        for error in schema_validator().iter_errors(self.data):
            path = tuple(error.absolute_path)
            bad.add(path)
            self._schema_problem(error, path)
        return bad

    def _schema_problem(self, error, path) -> None:
        kind, value, instance = error.validator, error.validator_value, error.instance
        if kind == "required" and isinstance(instance, dict):
            for name in value:
                if name not in instance:
                    self.add(path + (name,), f"missing required field {name!r}", locate=path)
            return
        if kind == "additionalProperties" and isinstance(instance, dict):
            known = set(error.schema.get("properties", {}))
            what = ""
            if len(path) == 2 and path[0] == "rules" and isinstance(instance.get("kind"), str):
                what = f" for rule kind {instance['kind']!r}"
            for name in instance:
                if name not in known:
                    self.add(path + (name,), f"unknown field {name!r}{what}", at_key=True)
            return
        if kind == "enum" and len(path) == 3 and path[0] == "rules" and path[2] == "kind":
            self.add(path, f"unknown rule kind {instance!r}; expected one of: {', '.join(value)}")
            return
        if kind == "enum":
            self.add(path, f"{instance!r} is not one of: {', '.join(map(str, value))}")
            return
        if kind == "type":
            expected = " or ".join(value) if isinstance(value, list) else value
            self.add(path, f"expected {expected}, got {_json_type(instance)} {_short(instance)}")
            return
        if kind == "anyOf" and all(set(s) == {"required"} for s in value):
            names = [s["required"][0] for s in value]
            self.add(path, f"needs at least one of: {', '.join(names)}")
            return
        if kind in ("minProperties", "maxProperties") and len(path) >= 2 and path[-2] in ("attributes", "resource"):
            self.add(path, "a condition takes exactly one operator: equals, in, glob, regex, exists or range")
            return
        if kind == "not" and path[-1:] == ("id",):
            self.add(path, "rule id 'default' is reserved for the policy's default decision")
            return
        if kind == "pattern" and path[-1:] == ("id",):
            self.add(path, f"rule id {instance!r} must start with a letter or digit and use only letters, digits and _ . : -")
            return
        self.add(path, error.message)


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    return "object"


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _compose(text: str):
    return yaml.compose(text, Loader=yaml.SafeLoader)
