"""Strict reading of YAML with file and line in every error.

PyYAML's ``safe_load`` forgets where values came from, accepts duplicate keys (the last
silently wins) and turns ``17:30`` into 1050 and ``no`` into False. Bundles are instead
read from the composed node tree: scalars are taken from their source text, every key is
checked against the allowed set, and all problems are collected so an operator fixes a
file in one pass rather than one error per run.

Bundles cross a trust boundary (a signed bundle still comes from an operator's editor), so
anchors and aliases are refused: an alias is free to write but walked once per reference,
which turns a small file into quadratic or exponential work ("billion laughs"). Nesting is
capped too, since PyYAML composes recursively and deep brackets would end in RecursionError.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from typing import NoReturn

import yaml

from core.errors import ConfigError

_STR_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("str", "int", "float", "timestamp"))
_BOOL_TAG = "tag:yaml.org,2002:bool"
_NUMBER_TAGS = frozenset({"tag:yaml.org,2002:int", "tag:yaml.org,2002:float"})
MAX_DEPTH = 32
"""Deeper than any bundle or case file needs, far below Python's recursion limit."""


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader's composer with anchors, aliases and deep nesting refused at their mark."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self._depth = 0

    def compose_node(self, parent: yaml.Node | None, index: int) -> yaml.Node | None:
        event = self.peek_event()  # type: ignore[no-untyped-call]
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, "anchors and aliases (&, *) are not allowed", event.start_mark
            )
        if self._depth >= MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"nested deeper than {MAX_DEPTH} levels", event.start_mark
            )
        self._depth += 1
        try:
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


@dataclass(frozen=True)
class Issue:
    file: str
    line: int
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.field}: {self.message}"


def compose(text: str, file: str) -> yaml.Node:
    try:
        node = yaml.compose(text, Loader=_StrictLoader)
    except yaml.MarkedYAMLError as e:
        line = e.problem_mark.line + 1 if e.problem_mark is not None else 1
        raise_issues([Issue(file, line, "(file)", f"not valid YAML: {e.problem}")])
    except yaml.YAMLError as e:
        raise_issues([Issue(file, 1, "(file)", f"not valid YAML: {e}")])
    if node is None:
        raise_issues([Issue(file, 1, "(file)", "the file is empty")])
    return node


def raise_issues(issues: list[Issue]) -> NoReturn:
    """Raise one ConfigError carrying all issues in file order; its message names the first."""
    issues = sorted(issues, key=lambda i: i.line)
    first = issues[0]
    more = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
    raise ConfigError(
        f"{first.file}:{first.line}: {first.message}{more}",
        code="bundle_invalid",
        field=first.field,
        file=first.file,
        line=first.line,
        issues=[str(i) for i in issues],
    )


class Reader:
    """Typed accessors over YAML nodes that record an :class:`Issue` and return None on error."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.issues: list[Issue] = []

    def error(self, node: yaml.Node, field: str, message: str) -> None:
        # The document root has no key path; "(file)" still tells the operator where to look.
        self.issues.append(Issue(self.file, node.start_mark.line + 1, field or "(file)", message))

    def error_at(self, line: int, field: str, message: str) -> None:
        self.issues.append(Issue(self.file, line, field, message))

    def check(self) -> None:
        if self.issues:
            raise_issues(self.issues)

    def mapping(
        self, node: yaml.Node, field: str, allowed: Collection[str] | None, required: Collection[str] = ()
    ) -> dict[str, yaml.Node] | None:
        """The keys of a mapping; ``allowed=None`` admits any key (maps keyed by node or service id)."""
        if not isinstance(node, yaml.MappingNode):
            self.error(node, field, "expected a mapping")
            return None
        out: dict[str, yaml.Node] = {}
        for key_node, value in node.value:
            key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
            where = f"{field}.{key}" if field else str(key)
            if not isinstance(key, str):
                self.error(key_node, field, "keys must be plain strings")
            elif allowed is not None and key not in allowed:
                hint = ", ".join(sorted(allowed))
                self.error(key_node, where, f"unknown key {key!r}; expected one of: {hint}")
            elif key in out:
                self.error(key_node, where, f"duplicate key {key!r}")
            else:
                out[key] = value
        for key in required:
            if key not in out:
                self.error(node, f"{field}.{key}" if field else key, f"missing required key {key!r}")
        return out

    def sequence(self, node: yaml.Node, field: str) -> list[yaml.Node] | None:
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, field, "expected a list")
            return None
        return list(node.value)

    def string(self, node: yaml.Node, field: str, pattern: re.Pattern[str] | None = None) -> str | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _STR_TAGS or node.value == "":
            self.error(node, field, "expected a non-empty string")
            return None
        value: str = node.value
        if pattern is not None and not pattern.fullmatch(value):
            self.error(node, field, f"{value!r} does not match {pattern.pattern}")
            return None
        return value

    def strings(
        self, node: yaml.Node, field: str, pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...] | None:
        """A string or a non-empty list of strings (a single value needs no brackets)."""
        if isinstance(node, yaml.ScalarNode):
            one = self.string(node, field, pattern)
            return None if one is None else (one,)
        items = self.sequence(node, field)
        if items is None:
            return None
        if not items:
            self.error(node, field, "an empty list matches nothing; remove the condition instead")
            return None
        return self.names(node, field, pattern)

    def names(
        self, node: yaml.Node, field: str, pattern: re.Pattern[str] | None = None
    ) -> tuple[str, ...] | None:
        """A list of strings that may be empty (expected obligations, matched rules)."""
        items = self.sequence(node, field)
        if items is None:
            return None
        values = [self.string(item, f"{field}[{i}]", pattern) for i, item in enumerate(items)]
        if any(v is None for v in values):
            return None
        return tuple(v for v in values if v is not None)

    def boolean(self, node: yaml.Node, field: str) -> bool | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != _BOOL_TAG:
            self.error(node, field, "expected true or false")
            return None
        return node.value.lower() in ("true", "yes", "on", "y")

    def number(self, node: yaml.Node, field: str, minimum: float) -> float | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in _NUMBER_TAGS:
            self.error(node, field, "expected a number")
            return None
        try:
            value = float(node.value.replace("_", ""))
        except ValueError:
            self.error(node, field, f"{node.value!r} is not a decimal number")
            return None
        if not value >= minimum or value == float("inf"):
            self.error(node, field, f"must be at least {minimum:g}")
            return None
        return value

    def integer(self, node: yaml.Node, field: str, minimum: int) -> int | None:
        if not isinstance(node, yaml.ScalarNode) or node.tag != "tag:yaml.org,2002:int":
            self.error(node, field, "expected an integer")
            return None
        try:
            value = int(node.value.replace("_", ""), 10)
        except ValueError:
            self.error(node, field, f"{node.value!r} is not a decimal integer")
            return None
        if value < minimum:
            self.error(node, field, f"must be at least {minimum}")
            return None
        return value
