"""Build graph: deps from every source, order, build hashes and their stability."""

from __future__ import annotations

import os
import shutil

from cosbuild import settings
from cosbuild.tree.graph import topological_order
from cosbuild.tree.project import load_project
from cosbuild.tree.versions import parse_ref

from .conftest import BASIC, REPO

CHAIN = {
    **BASIC,
    "tree/lib/definition.yaml": "name: lib\ncategory: dev\nversion: '2.0'\n",
    "tree/lib/build.yaml": "requires:\n  - {name: base, category: distro}\nsteps: [make]\n",
    "tree/lib2/definition.yaml": "name: lib\ncategory: dev\nversion: '2.0+1'\n",
    "tree/lib2/build.yaml": "requires:\n  - {name: base, category: distro}\nsteps: [make]\n",
    "tree/final/definition.yaml": "name: final\ncategory: system\nversion: '1'\n",
    "tree/final/build.yaml": """\
        requires:
          - {name: app, category: app}
          - {name: lib, category: dev, version: '2.0'}   # exact: to luet's go-version, <2.0+1 is <2.0
        requires_final_images: true
        copy:
          - package: {name: base, category: distro}
            source: /etc/os-release
            destination: /etc/
        retrieve:
          - tool-dev-*
          - https://example.org/file.tar.gz
        unpack: true
        """,
    "tree/tool/definition.yaml": "name: tool\ncategory: dev\nversion: '3'\n",
    "tree/tool/build.yaml": "image: alpine\nsteps: [make]\n",
}


def load(**options):
    return load_project(settings.resolve(options, env={})).graph


def hashes(graph):
    return {k: p.hash for k, p in graph.packages.items()}


def test_deps_from_every_source_and_order(project):
    project(CHAIN)
    g = load()
    final = g.packages["system/final@1"]
    assert set(final.build_deps) == {"app/app@0.1", "dev/lib@2.0", "distro/base@1.0", "dev/tool@3"}
    position = {k: i for i, k in enumerate(g.order)}
    for pkg in g.packages.values():
        for dep in pkg.build_deps:
            assert position[dep] < position[pkg.key]


def test_layer_order_puts_each_package_after_its_requires_in_listed_order(project):
    """A final image's layers: runtime requires first, then the listed requires in their
    order (a cycle once, where it closes); not the graph's alphabetical tie-break."""
    def pkg(name, *requires):
        reqs = "".join(f"\n  - {{name: {r}, category: c}}" for r in requires)
        return {f"tree/{name}/definition.yaml":
                f"name: {name}\ncategory: c\nversion: '1'\n" + (f"requires:{reqs}\n" if reqs else ""),
                f"tree/{name}/build.yaml": "image: debian\n"}
    project({**pkg("z-base"), **pkg("a-app", "z-base"), **pkg("m-lib", "z-base", "y-cyc"),
             **pkg("y-cyc", "m-lib"), **pkg("os")})
    resolver = load().resolver
    refs = [parse_ref(r) for r in ("c/m-lib", "c/a-app")]
    assert resolver.layer_order(refs) == ["c/z-base@1", "c/y-cyc@1", "c/m-lib@1", "c/a-app@1"]
    assert sorted(resolver.layer_order(refs)) == sorted(resolver.runtime_closure(refs))
    assert resolver.layer_order([parse_ref("c/a-app"), parse_ref("c/m-lib")]) == [
        "c/z-base@1", "c/a-app@1", "c/y-cyc@1", "c/m-lib@1"]


def test_newest_satisfying_version_wins_and_task_names(project):
    project(CHAIN)
    g = load()
    assert g.packages["app/app@0.1"].build_deps == ("distro/base@1.0",)
    assert g.latest["dev/lib"] == "dev/lib@2.0+1"
    assert g.task_name("dev/lib@2.0+1") == "dev/lib"
    assert g.task_name("dev/lib@2.0") == "dev/lib@2.0"


def test_editing_a_file_changes_exactly_that_package_and_its_reverse_deps(project):
    root = project(CHAIN)
    before = hashes(load())
    (root / "tree/app/main.c").write_text("int main(void) { return 1; }\n")
    after = hashes(load())
    changed = {k for k in before if before[k] != after[k]}
    assert changed == {"app/app@0.1", "system/final@1"}


def test_mode_change_counts_but_mtime_does_not(project):
    root = project(CHAIN)
    before = hashes(load())
    os.utime(root / "tree/tool/build.yaml", (1, 1))
    assert hashes(load()) == before
    os.chmod(root / "tree/tool/build.yaml", 0o755)
    changed = {k for k, v in hashes(load()).items() if before[k] != v}
    assert changed == {"dev/tool@3", "system/final@1"}


def test_values_change_affects_only_packages_that_use_it(project):
    root = project({**CHAIN, "values/a.yaml": "flag: one\nunused: 1\n",
                    "tree/tool/build.yaml": "image: alpine\nsteps: ['echo {{ values.flag }}']\n"})
    before = hashes(load(values=["values/a.yaml"]))
    (root / "values/a.yaml").write_text("flag: one\nunused: 2\n")
    assert hashes(load(values=["values/a.yaml"])) == before
    (root / "values/a.yaml").write_text("flag: two\nunused: 2\n")
    changed = {k for k, v in hashes(load(values=["values/a.yaml"])).items() if before[k] != v}
    assert changed == {"dev/tool@3", "system/final@1"}


def test_hash_is_independent_of_the_checkout_location(project, tmp_path_factory, monkeypatch):
    root = project(CHAIN)
    before = hashes(load())
    elsewhere = tmp_path_factory.mktemp("other") / "checkout"
    shutil.copytree(root, elsewhere)
    monkeypatch.chdir(elsewhere)
    assert hashes(load()) == before
    assert hashes(load(tree=[str(elsewhere / "tree")])) == before


def test_topological_order_reports_the_full_cycle():
    deps = {"a": ("b",), "b": ("c",), "c": ("a",), "d": ()}
    try:
        topological_order(deps)
    except Exception as exc:  # noqa: BLE001 - checking the message
        assert "a -> b -> c -> a" in str(exc)
    else:
        raise AssertionError("cycle not detected")


def test_collection_packages_share_the_folder(project):
    project({**BASIC, "tree/col/collection.yaml": """\
        packages:
          - {name: one, category: col, version: '1'}
          - {name: two, category: col, version: '1', extra: 2}
        """, "tree/col/build.yaml": "image: x\nsteps: ['echo {{ values.name }} {{ values.extra | default(0) }}']\n"})
    g = load()
    assert "echo one 0" in g.packages["col/one@1"].rendered.text
    assert "echo two 2" in g.packages["col/two@1"].rendered.text


def test_sample_tree_resolves(monkeypatch):
    monkeypatch.chdir(REPO)
    for flavor in ("bookworm", "trixie"):
        g = load(flavor=flavor)
        ids = {p.id for p in g.packages.values()}
        assert {"distro/base", "build/golang", "system/cos", "app/sampleOSService",
                "system/sampleOS", "live/syslinux", "live/grub2-efi-image"} <= ids
        sample = g.resolve(parse_ref("system/sampleOS"))
        assert sample.rendered.build.requires_final_images and sample.rendered.build.unpack
        assert f"suite: {flavor}" in g.packages[g.latest["distro/base"]].rendered.text
