"""`cosbuild why`: each cause of a rebuild named, "unchanged" for a no-op, "never built"
without a record. Image-less packages build without containers, so these are fast; the
images of a package that needs them are looked up through a stand-in for buildah."""

from __future__ import annotations

import json
import os
from dataclasses import replace

import pytest

from cosbuild import settings
from cosbuild.builds.buildah import Buildah
from cosbuild.tasks import LazyBuilder, load
from cosbuild.tree.why import Inputs, explain

TREE = {
    "tree/a/definition.yaml": "name: a\ncategory: meta\nversion: '1'\n",
    "tree/a/build.yaml": 'env:\n  - "V={{ .Values.v }}"\n  - "T={{ include "t" . }}"\n',
    "tree/a/data.txt": "one\n",
    "tree/templates/t.yaml": '{{ define "t" }}one{{ end }}\n',
    "tree/b/definition.yaml": "name: b\ncategory: meta\nversion: '1'\n",
    "tree/b/build.yaml": "retrieve: [a-meta-1.package.tar.zst]\n",
    "values/bookworm.yaml": "v: 1\nunused: 1\n",
}
RECORD = "build/why/a-meta-1.json"


@pytest.fixture
def built(project, run_cli):
    root = project(TREE)
    code, out, err = run_cli("build", "meta/b")
    assert code == 0, err
    return root


def why(run_cli, package: str) -> list[str]:
    code, out, err = run_cli("why", package)
    assert code == 0, err
    return out.splitlines()


def test_a_no_op_is_unchanged_and_reused(built, run_cli):
    for name in ("meta/a", "meta/b"):
        lines = why(run_cli, name)
        assert len(lines) == 1 and lines[0].startswith(f"{name}@1: unchanged: reused (hash "), lines
    record = json.loads((built / RECORD).read_text())
    assert sorted(record["files"]) == ["build.yaml", "data.txt", "definition.yaml"]
    assert record["values"] == {"v": "1"}   # the key its spec names, not `unused`
    assert record["templates"] == {"templates/t.yaml": record["templates"]["templates/t.yaml"]}
    assert record["artifact"] == "a-meta-1.package.tar.zst" and record["image"] == ""


SPEC = '- its rendered spec changed: env: ["V=1", "T=one"] -> '


@pytest.mark.parametrize("change, causes", [
    ({"tree/a/data.txt": "two\n"}, ["- file data.txt changed"]),
    ({"tree/a/new.txt": "new\n"}, ["- file new.txt added"]),
    ({"values/bookworm.yaml": "v: 2\nunused: 1\n"},
     ["- values key v changed: 1 -> 2", SPEC + '["V=2", "T=one"]']),
    ({"tree/templates/t.yaml": '{{ define "t" }}two{{ end }}\n'},
     ["- template templates/t.yaml changed", SPEC + '["V=1", "T=two"]']),
], ids=["file", "new-file", "values-key", "template"])
def test_each_cause_of_the_package_itself_is_named(built, project, run_cli, change, causes):
    project(change)
    lines = why(run_cli, "meta/a")
    assert lines[0].startswith("meta/a@1: rebuilds (hash "), lines
    assert lines[1:] == causes


def test_a_values_key_the_spec_does_not_use_changes_nothing(built, project, run_cli):
    project({"values/bookworm.yaml": "v: 1\nunused: 2\n"})
    assert why(run_cli, "meta/a")[0].startswith("meta/a@1: unchanged: reused")


def test_a_dependency_is_named_with_its_hashes_and_its_own_cause(built, project, run_cli):
    old = json.loads((built / RECORD).read_text())["hash"]
    project({"tree/a/data.txt": "two\n"})
    lines = why(run_cli, "meta/b")
    assert lines[0].startswith("meta/b@1: rebuilds"), lines
    assert lines[1].startswith(f"- dependency meta/a@1 changed (hash {old[:12]} -> "), lines
    assert lines[1] != f"- dependency meta/a@1 changed (hash {old[:12]} -> {old[:12]})"
    assert lines[2:] == ["  - file data.txt changed"]


def test_a_missing_artifact_and_a_package_never_built(built, project, run_cli):
    (built / "build/a-meta-1.package.tar.zst").unlink()
    lines = why(run_cli, "meta/a")
    assert lines[0].startswith("meta/a@1: rebuilds (same hash "), lines
    assert lines[1:] == ["- its artifact build/a-meta-1.package.tar.zst is missing"]
    project({"tree/c/definition.yaml": "name: c\ncategory: meta\nversion: '1'\n"})
    assert why(run_cli, "meta/c") == ["meta/c@1: never built (no usable record in build/why)"]


def test_a_missing_image_is_named(project, run_cli, monkeypatch):
    """Recorded through the function a build calls (a real build needs buildah): the
    package image is in the store, its builder image is not."""
    root = project({"tree/base/definition.yaml": "name: base\ncategory: distro\nversion: '1'\n",
                    "tree/base/build.yaml": "image: debian:bookworm\nsteps:\n  - echo base\n"})
    get_builder = LazyBuilder(load(settings.resolve({})))
    get_builder.records.record("distro/base@1")
    pkg = get_builder.project.graph.packages["distro/base@1"]
    for name in (pkg.artifact_file, pkg.metadata_file):
        (root / "build" / name).write_text("")
    image = json.loads((root / "build/why/base-distro-1.json").read_text())["image"]
    assert image == f"{get_builder().settings.image_repository}:{pkg.hash}"
    monkeypatch.setattr(Buildah, "__init__", lambda self, settings: None)
    monkeypatch.setattr(Buildah, "image_exists", lambda self, ref: ref == image)
    assert why(run_cli, "distro/base")[1:] == \
        [f"- its image {image}-builder is not in the local image store"]
    monkeypatch.setattr(Buildah, "image_exists", lambda self, ref: True)
    assert why(run_cli, "distro/base")[0].startswith("distro/base@1: unchanged: reused")


def test_verbose_builds_say_why_and_rebuilt_deps_leave_nothing_to_explain(built, project,
                                                                          run_cli):
    project({"tree/a/data.txt": "two\n"})
    code, out, err = run_cli("-v", "build", "meta/b")
    assert code == 0, err
    assert "[1/2] meta/a@1: why: file data.txt changed\n" in out, out
    assert "[2/2] meta/b@1: why: dependency meta/a@1 changed (hash " in out, out
    assert why(run_cli, "meta/b")[0].startswith("meta/b@1: unchanged: reused")


def test_the_record_changes_no_hash_and_no_artifact(built, run_cli):
    artifact = (built / "build/a-meta-1.package.tar.zst").read_bytes()
    hashes = json.loads(run_cli("graph", "--json")[1])["packages"]
    (built / RECORD).unlink()
    os.remove(built / "build/a-meta-1.package.tar.zst")
    assert run_cli("build", "meta/a")[0] == 0
    assert (built / "build/a-meta-1.package.tar.zst").read_bytes() == artifact
    assert json.loads(run_cli("graph", "--json")[1])["packages"] == hashes


@pytest.mark.parametrize("text", [
    "{not json",
    "[1, 2]",
    '{"hash": 12}',
    '{"hash": "x", "files": {"a": 1}}',
    '{"hash": "x", "deps": ["meta/a@1"]}',
    "[" * 100000 + "]" * 100000,
], ids=["corrupt", "a-list", "hash-not-text", "digest-not-text", "deps-not-a-mapping", "deep"])
def test_a_bad_record_is_no_record_with_a_warning(built, run_cli, caplog, text):
    (built / RECORD).write_text(text)
    code, out, err = run_cli("why", "meta/a")
    assert code == 0 and out.startswith("meta/a@1: never built"), out
    assert f"{RECORD}: not a usable build record, ignored" in caplog.text


def test_a_record_that_is_not_a_regular_file_is_no_record(built, run_cli, caplog):
    (built / RECORD).unlink()
    os.mkfifo(built / RECORD)   # reading it would block
    code, out, err = run_cli("why", "meta/a")
    assert code == 0 and out.startswith("meta/a@1: never built"), out
    assert "not a usable build record" in caplog.text


def test_names_from_a_hostile_record_cannot_drive_the_terminal(built, run_cli):
    record = json.loads((built / RECORD).read_text())
    record["files"]["\x1b[2Jevil"] = "f:0"
    (built / RECORD).write_text(json.dumps(record))
    lines = why(run_cli, "meta/a")
    assert lines[1:] == []   # the hash is the same: a record's files change no verdict
    record["hash"] = "0" * 64
    (built / RECORD).write_text(json.dumps(record))
    lines = why(run_cli, "meta/a")
    assert "- file \\x1b[2Jevil removed" in lines and "\x1b" not in "".join(lines), lines


def test_a_new_hash_recipe_is_named(built, run_cli):
    record = json.loads((built / RECORD).read_text())
    (built / RECORD).write_text(json.dumps({**record, "schema": "cosbuild-build-hash-1",
                                            "hash": "0" * 64}))
    assert why(run_cli, "meta/a")[1].startswith(
        "- cosbuild's build hash recipe changed (cosbuild-build-hash-1 -> ")


def test_an_unknown_package_is_an_error_naming_it(built, run_cli):
    code, _, err = run_cli("why", "meta/nosuch")
    assert code == 1 and "meta/nosuch" in err


def test_a_build_that_cannot_keep_its_record_still_succeeds(project, run_cli, caplog):
    root = project(TREE)
    (root / "build").mkdir()
    (root / "build/why").write_text("a file where the records' folder goes")
    code, out, err = run_cli("build", "meta/a")
    assert code == 0 and (root / "build/a-meta-1.package.tar.zst").is_file(), err
    assert "cannot keep the build record of meta/a@1" in caplog.text


def test_the_image_below_and_a_repository_artifact_are_named():
    """The causes of a chain build and of a remote package (pure comparisons)."""
    old = Inputs("1" * 64, base="a" * 64)
    assert explain("k", lambda _: old, lambda _: replace(old, hash="2" * 64, base="b" * 64)) \
        == [f"- the image it builds on changed ({'a' * 12} -> {'b' * 12}): a package earlier "
            "in its build chain changed"]
    old = Inputs("1" * 64, remote="cos 1234")
    assert explain("k", lambda _: old, lambda _: replace(old, hash="2" * 64, remote="cos 5678")) \
        == ["- its artifact in the build repository changed (cos 1234 -> cos 5678)"]


def test_a_change_below_many_paths_is_explained_once():
    """d builds on b and c, both on a: a's file is named once, under the first of them."""
    old = {"a": Inputs("a1", files={"x": "f:1"}), "b": Inputs("b1", deps={"a": "a1"}),
           "c": Inputs("c1", deps={"a": "a1"}), "d": Inputs("d1", deps={"b": "b1", "c": "c1"})}
    now = {"a": Inputs("a2", files={"x": "f:2"}), "b": Inputs("b2", deps={"a": "a2"}),
           "c": Inputs("c2", deps={"a": "a2"}), "d": Inputs("d2", deps={"b": "b2", "c": "c2"})}
    assert explain("d", old.get, now.get) == [
        "- dependency b changed (hash b1 -> b2)", "  - dependency a changed (hash a1 -> a2)",
        "    - file x changed", "- dependency c changed (hash c1 -> c2)",
        "  - dependency a changed (hash a1 -> a2)"]
