"""luet 0.20's build keywords as its compiler treats them: `image` with `requires`, `seed`,
the finalizer `shell`, and the chain of package images a `requires` build starts from."""

from __future__ import annotations

import logging
from types import SimpleNamespace

import pytest

from cosbuild import settings
from cosbuild.errors import CosbuildError
from cosbuild.tree.graph import ChainStep, luet_order
from cosbuild.tree.project import load_project
from cosbuild.tree.spec import Finalize, parse_build
from cosbuild.tree.yamlio import loads


def load(**options):
    return load_project(settings.resolve(options, env={})).graph


def pkg(name, requires=(), build="steps: [make]\n", category="dev", version="1"):
    """A package folder: definition.yaml and build.yaml with the given requires."""
    reqs = "".join(f"  - {{name: {r}, category: dev}}\n" for r in requires)
    return {f"tree/{name}/definition.yaml": f"name: {name}\ncategory: {category}\nversion: '{version}'\n",
            f"tree/{name}/build.yaml": (f"requires:\n{reqs}" if reqs else "") + build}


def build(text: str):
    return parse_build(loads(text, "build.yaml"), "build.yaml")


# --------------------------------------------------------------------------- keywords

def test_image_with_requires_is_accepted():
    b = build("image: alpine\nrequires:\n  - {name: a, category: dev}\nsteps: [make]\n")
    assert b.image == "alpine" and [r.name for r in b.requires] == ["a"]


def test_seed_is_recorded_but_is_no_image_source():
    assert build("image: alpine\nseed: debian\n").seed == "debian"
    with pytest.raises(CosbuildError) as info:
        build("seed: debian\nsteps: [make]\n")
    assert "build.yaml:2: steps: commands given but no image source" in str(info.value)
    assert "'seed' is not one in luet 0.20" in str(info.value)


def test_image_with_final_images_warns_that_it_is_unused(caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        build("image: alpine\nrequires:\n  - {name: a, category: dev}\nrequires_final_images: true\n")
    assert "build.yaml:1: image: unused" in caplog.text


def test_finalizer_shell_default_and_given():
    assert Finalize(install=("a", "b")).commands() == [["sh", "-c", "a"], ["sh", "-c", "b"]]
    assert Finalize(install=("a",), shell=("bash", "-xc")).commands() == [["bash", "-xc", "a"]]


# --------------------------------------------------------------------------- luet's order

def sources(*names_versions):
    return {k: SimpleNamespace(definition=SimpleNamespace(name=k.split("@")[0], category="dev",
                                                          version=k.split("@")[1]))
            for k in names_versions}


def test_luet_order_is_depth_first_by_fingerprint_deps_before_dependants():
    # t -> (c, a); c -> b; a -> b, d: depth first from t, requires by fingerprint (a before c)
    requires = {"t@1": ("c@1", "a@1"), "c@1": ("b@1",), "a@1": ("d@1", "b@1"),
                "b@1": (), "d@1": ()}
    order = luet_order("t@1", requires, sources(*requires))
    assert order == ("b@1", "d@1", "a@1", "c@1")


def test_luet_order_sorts_by_name_category_version_not_by_key():
    # fingerprints "lib-dev-10" < "lib-dev-9" as strings, as luet compares them
    requires = {"t@1": ("lib@9", "lib@10"), "lib@9": (), "lib@10": ()}
    assert luet_order("t@1", requires, sources(*requires)) == ("lib@10", "lib@9")


# --------------------------------------------------------------------------- the chain

def test_chain_is_transitive_in_luet_order_each_on_the_one_before(project):
    project({**pkg("base", build="image: debian\nsteps: [make]\n"),
             **pkg("x", ["base"]), **pkg("a", ["x"]), **pkg("b", ["x"]), **pkg("t", ["b", "a"])})
    g = load()
    chain = g.packages["dev/t@1"].chain
    assert [s.key for s in chain] == ["dev/base@1", "dev/x@1", "dev/a@1", "dev/b@1"]
    assert chain[0] == ChainStep("dev/base@1", None, g.packages["dev/base@1"].hash)
    for below, step in zip(chain, chain[1:]):
        assert step.base == below.tag
    # x and a sit on their own bases: those images are theirs; b sits on a, not on x
    assert chain[1].tag == g.packages["dev/x@1"].hash
    assert chain[2].tag == g.packages["dev/a@1"].hash
    assert chain[3].tag != g.packages["dev/b@1"].hash
    assert g.packages["dev/b@1"].chain[-1].tag == g.packages["dev/x@1"].hash


def test_an_image_source_restarts_the_chain(project):
    project({**pkg("base", build="image: debian\n"), **pkg("a", ["base"]),
             **pkg("img", build="image: alpine\nsteps: [make]\n"), **pkg("t", ["a", "img"])})
    g = load()
    # order: base, a, img; img starts from its own image, so base and a only order the build
    assert g.packages["dev/t@1"].chain == (
        ChainStep("dev/img@1", None, g.packages["dev/img@1"].hash),)


def test_image_with_requires_builds_on_the_image_and_hashes_the_requires(project):
    files = {**pkg("base", build="image: debian\n"),
             **pkg("t", ["base"], build="image: alpine\nsteps: [make]\n")}
    project(files)
    g = load()
    t = g.packages["dev/t@1"]
    assert t.chain == () and t.build_deps == ("dev/base@1",)
    before = t.hash
    project({"tree/base/build.yaml": "image: debian:12\n"})
    assert load().packages["dev/t@1"].hash != before


def test_a_change_of_chain_is_a_change_of_hash(project):
    project({**pkg("base", build="image: debian\n"), **pkg("a", ["base"]), **pkg("b", ["base"]),
             **pkg("t", ["a"])})
    first = load().packages["dev/t@1"].hash
    project(pkg("t", ["a", "b"]))
    g = load()
    assert [s.key for s in g.packages["dev/t@1"].chain] == ["dev/base@1", "dev/a@1", "dev/b@1"]
    assert g.packages["dev/t@1"].hash != first


def test_final_images_requires_are_not_chained(project):
    project({**pkg("base", build="image: debian\nsteps: [make]\n"), **pkg("a", ["base"]),
             **pkg("fin", ["a"], build="requires_final_images: true\n"),
             **pkg("t", ["fin"])})
    g = load()
    # luet 0.20.12+: a final-images package counts as having no requires in a chain
    assert [s.key for s in g.packages["dev/t@1"].chain] == ["dev/fin@1"]


def test_virtual_packages_are_passed_over(project):
    project({**pkg("base", build="image: debian\n"), **pkg("virt", build=""),
             **pkg("t", ["virt", "base"])})
    assert [s.key for s in load().packages["dev/t@1"].chain] == ["dev/base@1"]


def test_nothing_with_an_image_below_is_an_error(project, run_cli):
    project({**pkg("virt", build=""), **pkg("a", ["virt"]), **pkg("t", ["a"])})
    code, _, err = run_cli("validate")
    assert code == 1 and "Traceback" not in err
    assert "tree/a/build.yaml: requires: dev/a@1 builds on the package image of the package " \
           "before it in luet's build order of dev/a@1 (dev/virt@1), but none of them has an image" in err
