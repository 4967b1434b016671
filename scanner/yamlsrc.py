"""Safe YAML for user files, keeping line numbers for error messages.

Profiles and inventories come from users, so the loader refuses what a
hostile file could use against us: files over a size cap, anchors and
aliases (the "billion laughs" expansion), custom tags, duplicate keys and
absurd nesting. Mappings and sequences come back as `LineDict`/`LineList`,
which remember the line of every key and item.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from scanner.errors import ConfigError

# libyaml's parser when PyYAML was built with it: several times faster on the catalogue.
_Loader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
MAX_BYTES = 4 << 20
MAX_DEPTH = 32
_PLAIN_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
    "tag:yaml.org,2002:map",
    "tag:yaml.org,2002:seq",
}


class LineDict(dict):  # type: ignore[type-arg]
    """A mapping that knows the line of itself and of each key (1-based)."""

    line: int = 0
    key_lines: dict[Any, int]


class LineList(list):  # type: ignore[type-arg]
    line: int = 0
    item_lines: list[int]


def read_text(path: Path, what: str) -> str:
    try:
        size = path.stat().st_size
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the {what}: {exc.strerror or exc}") from None
    if size > MAX_BYTES:
        raise ConfigError(str(path), None, f"the {what} is {size} bytes; the limit is {MAX_BYTES}")
    try:
        return path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(str(path), None, f"the {what} is not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(str(path), None, f"cannot read the {what}: {exc.strerror or exc}") from None


def load_yaml(path: Path, what: str = "file") -> Any:
    """Parse a user YAML file; ConfigError with file and line on any problem."""
    return parse_yaml(read_text(path, what), str(path))


def parse_yaml(text: str, name: str) -> Any:
    if len(text) > MAX_BYTES:
        raise ConfigError(name, None, f"more than {MAX_BYTES} characters")
    _prescan(text, name)
    try:
        loader = _Loader(text)
    except yaml.YAMLError as exc:  # ReaderError: control characters, raised by the constructor
        raise _not_yaml(name, text, exc) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.YAMLError as exc:
            raise _not_yaml(name, text, exc) from None
        if node is None:
            return None
        return _convert(node, loader, name, 0, set())
    finally:
        loader.dispose()


def _not_yaml(name: str, text: str, exc: yaml.YAMLError) -> ConfigError:
    line: int | None = None
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        if "nesting depth" in str(exc.problem):  # libyaml's own limit, hit before ours
            return ConfigError(name, line, f"nested deeper than {MAX_DEPTH} levels")
        return ConfigError(name, line, f"not valid YAML: {exc.problem or exc}")
    if isinstance(exc, yaml.reader.ReaderError):
        line = text.count("\n", 0, exc.position) + 1
        char = exc.character if isinstance(exc.character, int) else ord(str(exc.character)[:1] or "\0")
        return ConfigError(name, line, f"not valid YAML: control character U+{char:04X} is not allowed")
    return ConfigError(name, line, f"not valid YAML: {exc}")


def _prescan(text: str, name: str) -> None:
    """Refuse anchors, aliases and deep nesting from the parser's events, before composing.

    PyYAML's parser keeps an explicit stack, but its composer recurses once per level: a
    few thousand "[" overflow Python's stack (RecursionError) before `_convert` could
    count levels. Anchors and aliases let a small file expand exponentially.
    """
    depth = 0
    try:
        for event in yaml.parse(text, Loader=_Loader):
            line = event.start_mark.line + 1 if event.start_mark is not None else None
            if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
                raise ConfigError(name, line, "YAML anchors and aliases are not allowed here")
            if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
                depth += 1
                if depth > MAX_DEPTH:
                    raise ConfigError(name, line, f"nested deeper than {MAX_DEPTH} levels")
            elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
                depth -= 1
    except yaml.YAMLError as exc:
        raise _not_yaml(name, text, exc) from None


def _convert(node: yaml.Node, loader: Any, name: str, depth: int, seen: set[int]) -> Any:
    line = node.start_mark.line + 1
    if depth > MAX_DEPTH:
        raise ConfigError(name, line, f"nested deeper than {MAX_DEPTH} levels")
    if id(node) in seen:
        raise ConfigError(name, line, "YAML anchors and aliases are not allowed here")
    seen.add(id(node))
    if node.tag not in _PLAIN_TAGS:
        raise ConfigError(name, line, f"YAML tag {node.tag!r} is not allowed")
    if isinstance(node, yaml.MappingNode):
        out = LineDict()
        out.line = line
        out.key_lines = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode):
                raise ConfigError(name, key_node.start_mark.line + 1, "mapping keys must be plain values")
            if key_node.tag == "tag:yaml.org,2002:merge" or key_node.value == "<<":
                raise ConfigError(name, key_node.start_mark.line + 1, "YAML merge keys are not allowed")
            key = _convert(key_node, loader, name, depth + 1, seen)
            if not isinstance(key, (str, int)):
                raise ConfigError(name, key_node.start_mark.line + 1, f"unexpected key {key!r}")
            if key in out:
                raise ConfigError(name, key_node.start_mark.line + 1, f"duplicate key {key!r}")
            out[key] = _convert(value_node, loader, name, depth + 1, seen)
            out.key_lines[key] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        items = LineList()
        items.line = line
        items.item_lines = []
        for item in node.value:
            items.append(_convert(item, loader, name, depth + 1, seen))
            items.item_lines.append(item.start_mark.line + 1)
        return items
    try:
        return loader.construct_object(node, deep=True)
    except (yaml.YAMLError, ValueError) as exc:  # e.g. an integer of more than 4300 digits
        raise ConfigError(name, line, f"cannot read this value: {exc}") from None


def line_of(data: Any, loc: tuple[Any, ...]) -> int | None:
    """The line of the deepest element of `loc` (a path of keys and indexes) found in data."""
    line: int | None = getattr(data, "line", None)
    cur = data
    for part in loc:
        if isinstance(cur, LineDict) and part in cur:
            line = cur.key_lines.get(part, line)
            cur = cur[part]
        elif isinstance(cur, LineList) and isinstance(part, int) and 0 <= part < len(cur):
            line = cur.item_lines[part]
            cur = cur[part]
        else:
            break
        line = getattr(cur, "line", None) or line
    return line
