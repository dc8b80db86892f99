"""YAML → plain Python data plus the line of every field, refusing duplicate keys.

PyYAML's own constructor keeps the last of two equal keys without a word, and forgets where
each value came from. Here the node tree is composed by ``SafeLoader`` and turned into data by
hand, so that a duplicate key is an error and every error can name its line.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import yaml

from drainwatch.errors import ConfigError

PathPart = str | int
FieldPath = tuple[PathPart, ...]
_MERGE_TAG = "tag:yaml.org,2002:merge"


@dataclass
class YamlDocument:
    """The parsed data and the 1-based line each field path starts on."""

    data: object
    lines: dict[FieldPath, int] = field(default_factory=dict)

    def line_of(self, path: FieldPath) -> int | None:
        """The line of ``path`` or of its nearest ancestor that has one."""
        for end in range(len(path), -1, -1):
            line = self.lines.get(path[:end])
            if line is not None:
                return line
        return None


def format_path(path: FieldPath) -> str:
    """``("wallets", "hot-eth", "addresses", 0)`` → ``wallets.hot-eth.addresses[0]``."""
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def parse_yaml(text: str, source: str) -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is None:
            raise ConfigError(source, "the file is empty / 設定ファイルが空です")
        doc = YamlDocument(data=None)
        doc.data = _build(loader, node, (), doc.lines, source)
        return doc
    except yaml.MarkedYAMLError as exc:
        # Only the problem text and line: PyYAML's full message quotes the offending line,
        # which could be a secret.
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(
            source, f"not valid YAML / YAML として不正です: {exc.problem}", line
        ) from None
    except yaml.YAMLError:
        raise ConfigError(source, "not valid YAML / YAML として不正です") from None
    finally:
        loader.dispose()


def _build(
    loader: yaml.SafeLoader,
    node: yaml.Node,
    path: FieldPath,
    lines: dict[FieldPath, int],
    source: str,
) -> object:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        return _build_mapping(loader, node, path, lines, source)
    if isinstance(node, yaml.SequenceNode):
        return [
            _build(loader, item, (*path, i), lines, source) for i, item in enumerate(node.value)
        ]
    return loader.construct_object(node, deep=True)


def _build_mapping(
    loader: yaml.SafeLoader,
    node: yaml.MappingNode,
    path: FieldPath,
    lines: dict[FieldPath, int],
    source: str,
) -> dict[str, object]:
    out: dict[str, object] = {}
    for key_node, value_node in node.value:
        line = key_node.start_mark.line + 1
        where = format_path(path) or source
        if key_node.tag == _MERGE_TAG:
            raise ConfigError(
                where, "YAML merge keys (<<) are not supported; write the fields out", line
            )
        key = loader.construct_object(key_node, deep=True)
        if not isinstance(key, str):
            raise ConfigError(where, "every key must be text (quote it)", line)
        if key in out:
            raise ConfigError(
                format_path((*path, key)), "duplicate key / キーが重複しています", line
            )
        lines[(*path, key)] = line
        out[key] = _build(loader, value_node, (*path, key), lines, source)
    return out
