"""YAML reading as luet does it (go-yaml v2), remembering line numbers so errors can point at
file:line."""

from __future__ import annotations

import functools
import logging
import re
import types
from pathlib import Path

from ..errors import CosbuildError

log = logging.getLogger("cosbuild")


class LineMap(dict):
    """A mapping that knows the line of each of its keys (1-based), and the text as written
    of each plain scalar YAML read as other than a string (`version: 010` is the integer 8,
    `name: y` the boolean true): go-yaml v2 gives that text to a Go string field."""

    line: int = 0
    lines: dict
    written: types.MappingProxyType | dict = types.MappingProxyType({})

    def line_of(self, key) -> int:
        return self.lines.get(key, self.line)


@functools.cache
def _loader():
    """The YAML loader class, made on first use (a no-op run reads no YAML)."""
    import yaml

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):   # libyaml when available
        file = ""
        merged_keys = 0   # see MAX_MERGED_KEYS
        # go-yaml v2 also reads a plain y or n as a boolean
        bool_values = {**yaml.constructor.SafeConstructor.bool_values, "y": True, "n": False}

    Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
    Loader.add_implicit_resolver("tag:yaml.org,2002:bool", re.compile(r"^(?:y|Y|n|N)$"),
                                 list("yYnN"))
    return Loader


MERGE_TAG = "tag:yaml.org,2002:merge"
# keys a file's `<<:` merges may copy: an alias is shared, but a merge copies the keys, and
# a chain of merges, each of the one before, copies a number quadratic in the file's size
# (real trees copy a few hundred)
MAX_MERGED_KEYS = 1_000_000


def _construct_mapping(loader, node) -> LineMap:
    """A mapping read as luet reads it (go-yaml v2): keys are applied in the order written, so
    a duplicated key keeps its last value (with a warning) and a `<<:` merge sets the merged
    keys at the point where it is written: a key after it overrides a merged one."""
    import yaml

    result = LineMap()
    result.line = node.start_mark.line + 1
    result.lines, result.written = {}, {}
    own: dict = {}   # key -> line, for the keys written here (not merged)
    for key_node, value_node in node.value:
        if key_node.tag == MERGE_TAG:
            for merged in reversed(_merged_mappings(loader, value_node)):  # earlier ones win
                loader.merged_keys += len(merged)
                if loader.merged_keys > MAX_MERGED_KEYS:
                    raise yaml.constructor.ConstructorError(
                        None, None, f"more than {MAX_MERGED_KEYS} keys copied by '<<' merges "
                        "(a chain of merges grows with its square)", key_node.start_mark)
                result.update(merged)
                result.lines.update(merged.lines)
                result.written.update(merged.written)
            continue
        key = loader.construct_object(key_node, deep=True)
        if isinstance(key, bool) and key_node.value in ("y", "Y", "n", "N"):
            key = key_node.value   # a key luet reads into a string-keyed map stays text
        try:
            hash(key)
        except TypeError:   # a mapping or list as a key
            raise yaml.constructor.ConstructorError(
                None, None, "a mapping or list cannot be a key", key_node.start_mark) from None
        line = key_node.start_mark.line + 1
        if key in own:
            log.warning("%s:%s: duplicate key '%s' (first at line %s): the last value is used, "
                        "as luet does", loader.file, line, key, own[key])
        result[key] = value = loader.construct_object(value_node, deep=True)
        result.lines[key] = own[key] = line
        if (isinstance(value_node, yaml.ScalarNode) and not value_node.style   # plain style
                and value is not None and not isinstance(value, str)):
            result.written[key] = value_node.value
        else:
            result.written.pop(key, None)   # a merged scalar this key overrides
    return result


def _merged_mappings(loader, node) -> list[LineMap]:
    """The mappings a `<<:` value names: one mapping (or alias) or a list of them."""
    import yaml

    nodes = node.value if isinstance(node, yaml.SequenceNode) else [node]
    if not all(isinstance(n, yaml.MappingNode) for n in nodes):
        raise yaml.constructor.ConstructorError(
            None, None, "a '<<' merge needs a mapping or a list of mappings", node.start_mark)
    return [loader.construct_object(n, deep=True) for n in nodes]


def loads(text: str, file: str | Path):
    """Parse YAML text; a syntax error becomes a CosbuildError at file:line."""
    import yaml

    loader = _loader()(text)
    loader.file = str(file)
    try:
        return loader.get_single_data()
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = " ".join(filter(None, [exc.context, exc.problem]))
        raise CosbuildError(f"invalid YAML: {problem}", file=file,
                            line=mark.line + 1 if mark else None,
                            hint="fix the YAML syntax") from None
    except yaml.YAMLError as exc:
        raise CosbuildError(f"invalid YAML: {exc}", file=file) from None
    except ValueError as exc:   # a scalar no value is made of: a 5000-digit int, 2001-02-30
        raise CosbuildError(f"invalid YAML: {exc}", file=file,
                            hint="quote the value to keep it as text") from None
    finally:
        loader.dispose()


def load(path: Path, text: str | None = None):
    """The file's YAML; `text`: its text, when the caller read it (tree files are read with
    bounds, see tree.load.read_text)."""
    if text is None:
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            raise CosbuildError("not UTF-8 text", file=path) from None
    return loads(text, path)


def load_mapping(path: Path, text: str | None = None) -> LineMap:
    """Load a file whose top level must be a mapping (an empty file is an empty mapping)."""
    data = load(path, text)
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
