"""YAML reading that remembers line numbers, so errors can point at file:line."""

from __future__ import annotations

import functools
from pathlib import Path

from ..errors import CosbuildError


class LineMap(dict):
    """A mapping that knows the line of each of its keys (1-based)."""

    line: int = 0
    lines: dict

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


@functools.cache
def _loader():
    """The YAML loader class, made on first use (a no-op run reads no YAML)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):   # libyaml when available
        pass

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    return Loader


def _construct_mapping(loader, node) -> LineMap:
    import yaml

    loader.flatten_mapping(node)
    result = LineMap()
    result.line = node.start_mark.line + 1
    result.lines = {}
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in result:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key '{key}'", key_node.start_mark)
        result[key] = loader.construct_object(value_node, deep=True)
        result.lines[key] = key_node.start_mark.line + 1
    return result


def loads(text: str, file: str | Path):
    """Parse YAML text; a syntax error becomes a CosbuildError at file:line."""
    import yaml

    try:
        return yaml.load(text, Loader=_loader())
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise CosbuildError(f"invalid YAML: {problem}", file=file,
                            line=mark.line + 1 if mark else None,
                            hint="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise CosbuildError(f"invalid YAML: {exc}", file=file) from None


def load(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise CosbuildError("not UTF-8 text", file=path) from None
    return loads(text, path)


def load_mapping(path: Path) -> LineMap:
    """Load a file whose top level must be a mapping (an empty file is an empty mapping)."""
    data = load(path)
    if data is None:
        data = LineMap()
        data.lines = {}
    if not isinstance(data, dict):
        raise CosbuildError(f"expected a mapping at the top level, got {type(data).__name__}",
                            file=path, line=1)
    return data


def dumps(data) -> str:
    """Stable YAML output (sorted keys) used for rendered specs and metadata."""
    import yaml

    return yaml.dump(plain(data), Dumper=yaml.SafeDumper, sort_keys=True,
                     default_flow_style=False, allow_unicode=True)


def plain(data):
    """Plain dicts and lists (no LineMap, no tuples), as YAML dumpers want them."""
    if isinstance(data, dict):
        return {k: plain(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [plain(v) for v in data]
    return data
