"""YAML as luet reads it (go-yaml v2): duplicated keys, `<<:` merge keys, line numbers."""

import logging

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.tree.load import load_trees
from cosbuild.tree.yamlio import loads


def test_duplicate_key_keeps_last_value_with_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        data = loads("name: a\nversion: '1'\nversion: 2\n", "pkg/definition.yaml")
    assert data == {"name": "a", "version": 2}
    assert data.line_of("version") == 3
    assert "pkg/definition.yaml:3: duplicate key 'version' (first at line 2)" in caplog.text


def test_duplicate_key_in_a_nested_mapping(caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        data = loads("packages:\n  - name: a\n    version: 1\n    version: 3\n", "c.yaml")
    assert data["packages"][0]["version"] == 3
    assert "c.yaml:4: duplicate key 'version'" in caplog.text


def test_merge_key_applies():
    data = loads("base: &b {image: x, steps: [a]}\npkg:\n  <<: *b\n", "b.yaml")
    assert data["pkg"] == {"image": "x", "steps": ["a"]}


def test_key_after_merge_overrides_it_without_warning(caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        data = loads("base: &b {image: x, unpack: false}\npkg:\n  <<: *b\n  unpack: true\n", "b.yaml")
    assert data["pkg"] == {"image": "x", "unpack": True}
    assert data["pkg"].line_of("unpack") == 4
    assert caplog.text == ""


def test_merge_overrides_a_key_written_before_it():
    # go-yaml v2 applies keys in order: the merge comes later, so it wins
    data = loads("base: &b {a: 1}\npkg:\n  a: 0\n  <<: *b\n", "b.yaml")
    assert data["pkg"] == {"a": 1}


def test_merge_of_a_list_earlier_mappings_win():
    data = loads("x: &x {a: 1}\ny: &y {a: 2, b: 2}\npkg:\n  <<: [*x, *y]\n", "b.yaml")
    assert data["pkg"] == {"a": 1, "b": 2}


def test_merge_of_a_scalar_is_an_error_at_its_line():
    with pytest.raises(CosbuildError) as info:
        loads("a: 1\npkg:\n  <<: 3\n", "b.yaml")
    assert "b.yaml:3:" in str(info.value) and "'<<' merge needs a mapping" in str(info.value)


def test_list_as_key_is_an_error_at_its_line():
    with pytest.raises(CosbuildError) as info:
        loads("a: 1\n? [x]\n: 2\n", "b.yaml")
    assert "b.yaml:2:" in str(info.value) and "cannot be a key" in str(info.value)


def test_collection_with_duplicate_version_loads_like_cos_0_5_3(tmp_path, caplog):
    # cOS-toolkit v0.5.3 packages/cos/collection.yaml has `version` twice in one stanza
    folder = tmp_path / "tree" / "cos"
    folder.mkdir(parents=True)
    (folder / "collection.yaml").write_text(
        'packages:\n  - name: "cos"\n    category: "recovery"\n'
        '    version: "0.5.3+2"\n    version: 0.5.3+3\n')
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        tree = load_trees([tmp_path / "tree"])
    assert [p.key for p in tree.packages] == ["recovery/cos@0.5.3+3"]
    assert f"{folder / 'collection.yaml'}:5: duplicate key 'version'" in caplog.text
