"""Reading the YAML files users edit, with errors that point at a file and line.

pydantic validates the loaded values; this module maps a failing field path back to
the line that set it, so a user sees ``rules.yaml:14: rules.2.threshold: ...`` rather
than a stack trace.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

__all__ = ["ConfigError", "load_yaml_mapping", "locate"]


class ConfigError(ValueError):
    """A configuration file or variable is wrong; the message says where and why."""


def load_yaml_mapping(path: Path) -> dict[str, Any]:
    """Load a YAML file whose top level must be a mapping (an empty file is ``{}``)."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        at = raw[: exc.start].count(b"\n") + 1
        raise ConfigError(f"{path}:{at}: not UTF-8 text (byte {exc.start})") from None
    try:
        data = yaml.load(text, Loader=_StrictLoader)  # a SafeLoader
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        line = f":{mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{path}{line}: not valid YAML: {exc.problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}:1: expected a mapping (key: value), got {type(data).__name__}")
    return data


class _StrictLoader(yaml.SafeLoader):
    """``yaml.safe_load``, stricter where a mistake would otherwise pass unseen: a key
    given twice in one mapping (the last silently won, so a second ``rules:`` dropped
    every rule above it) and an impossible date (a ``ValueError`` without a line)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        first_line: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # "<<": overriding is its point
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                seen = first_line.get(key)
            except TypeError:  # an unhashable key: the constructor below says so
                continue
            if seen is not None:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"{key!r} is given twice (first on line {seen})",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)

    def construct_checked_timestamp(self, node: yaml.ScalarNode) -> Any:
        try:
            return self.construct_yaml_timestamp(node)
        except ValueError as exc:
            raise yaml.constructor.ConstructorError(
                None, None, f"{node.value!r} is not a date ({exc})", node.start_mark
            ) from None


_StrictLoader.add_constructor(
    "tag:yaml.org,2002:timestamp", _StrictLoader.construct_checked_timestamp
)


def locate(path: Path, loc: Sequence[int | str], at_key: bool = False) -> str:
    """``file:line`` of the deepest YAML node on ``loc`` that exists in the file.

    ``at_key`` points at the last key itself rather than its value: right for an
    unknown field, whose value may be a whole block starting on the next line.
    """
    try:
        node = yaml.compose(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return str(path)
    line = node.start_mark.line + 1 if node is not None else 1
    for depth, part in enumerate(loc):
        child = _child(node, part, at_key and depth == len(loc) - 1)
        if child is None:
            break
        node = child
        line = node.start_mark.line + 1
    return f"{path}:{line}"


def _child(node: yaml.Node | None, part: int | str, want_key: bool) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                # An empty value has no useful line of its own: show its key's.
                empty = value.value in (None, "", [])
                return key if want_key or empty else value
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
        child: yaml.Node = node.value[part]
        return child
    return None
