"""Versions of 2022 and later trees (issue 33): `v`-prefixed and `+build` versions, ordered
and selected as luet 0.20 does (pkg/versioner/versioner.go with hashicorp/go-version 1.3.0
and knqyf263/go-deb-version, as vendored by luet 0.20.13); a version luet cannot order or
select is a warning naming its file, a hostile one is still refused."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cosbuild import luetformat, settings
from cosbuild.errors import CosbuildError
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.index import Candidate
from cosbuild.repos.resolve import choose
from cosbuild.tree.load import parse_definition
from cosbuild.tree.project import load_project
from cosbuild.tree.spec import Finalize, Where
from cosbuild.tree.versions import (check_selector, check_version, compare, matches, newest,
                                    parse_ref, sort_key)

from .conftest import BASIC

# --------------------------------------------------------------------------- ordering

# WrappedVersioner.Sort: go-deb-version's order after Sanitize (`_` becomes `-`); a version
# it cannot parse becomes the empty version, older than every other. The first rows are
# luet's own versioner_test.go.
@pytest.mark.parametrize("unsorted, expected", [
    (["1.0", "0.1"], ["0.1", "1.0"]),
    (["1.0_1", "0.1"], ["0.1", "1.0_1"]),
    (["1.0", "0.1", "0.22", "1.1", "1.9", "1.10", "11.1"],
     ["0.1", "0.22", "1.0", "1.1", "1.9", "1.10", "11.1"]),
    (["1.0+1", "1.0+0", "0.1", "1.0+3", "1.0+2", "1.9"],
     ["0.1", "1.0+0", "1.0+1", "1.0+2", "1.0+3", "1.9"]),
    (["2:7.4.052-1ubuntu3.1", "2:7.4.052-1ubuntu1", "2:7.4.052-1ubuntu2", "2:7.4.052-1ubuntu3"],
     ["2:7.4.052-1ubuntu1", "2:7.4.052-1ubuntu2", "2:7.4.052-1ubuntu3", "2:7.4.052-1ubuntu3.1"]),
    (["0.0.1-beta-9", "0.0.1-alpha08-9", "0.0.1-alpha07-9", "0.0.1-alpha07-8"],
     ["0.0.1-alpha07-8", "0.0.1-alpha07-9", "0.0.1-alpha08-9", "0.0.1-beta-9"]),
    (["0.0.1-beta01", "0.0.1-alpha08", "0.0.1-alpha07"],
     ["0.0.1-alpha07", "0.0.1-alpha08", "0.0.1-beta01"]),
    # +N, the rebuild counter, is numeric to Debian
    (["1.21.14+k3s10", "1.21.14+k3s9", "1.21.14"], ["1.21.14", "1.21.14+k3s9", "1.21.14+k3s10"]),
    # `_` is `-`: 1.0_2 is upstream 1.0, revision 2
    (["1.0_2", "1.0_10", "1.0"], ["1.0", "1.0_2", "1.0_10"]),
    # a last `-` with nothing after it is an empty revision: 1.0- is 1.0
    (["1.0-beta", "1.0-"], ["1.0-", "1.0-beta"]),
    # a leading v is no Debian version: luet orders it before every one that is
    (["v2.0", "1.0"], ["v2.0", "1.0"]),
    (["v1.21.14+k3s1-1", "0.1"], ["v1.21.14+k3s1-1", "0.1"]),
    # luet loses those (Best finds none): cosbuild orders v1.2 as 1.2, then the rest by text
    (["v1.10.0", "v1.9.0", "v1.9.0+k3s2"], ["v1.9.0", "v1.9.0+k3s2", "v1.10.0"]),
    (["v0.1", "latest", "0.1", "abc"], ["abc", "latest", "v0.1", "0.1"]),
])
def test_ordering_follows_luet_sort(unsorted, expected):
    assert sorted(unsorted, key=sort_key) == expected
    assert sorted(reversed(unsorted), key=sort_key) == expected


@pytest.mark.parametrize("a, b", [("1.0_1", "1.0-1"), ("1.0", "1.00"), ("v1.0", "v1.00")])
def test_versions_equal_to_debian_are_ordered_by_their_text(a, b):
    assert compare(a, b) == 0
    assert sorted([b, a], key=sort_key) == sorted([a, b])   # so one is always the newest


# --------------------------------------------------------------------------- selectors

# WrappedVersioner.ValidateSelector (luet 0.20): go-version's Compare when the selector has
# one of luet's operators (>= <= > < !) and both sides parse (leading v, pre-release after
# `-`, `+build` never compared), else go-version's constraint check (=V, a space after the
# operator, where a pre-release satisfies > >= < <= only with the same segments). These
# first rows are luet's own versioner_test.go, both lists.
LUET_TRUE = [(">=1", "2"), ("<=3", "2"), (">0", "0.0.40-alpha"), (">=0.1.0+0.4", "0.1.0+0.5"),
             (">=0.0.20190406.4.9.172-r1", "1.0.111"), (">=0", "1.0.29+pre2_p20191024"),
             (">=0.1.0+4", "0.1.0+5"), (">0.1.0-4", "0.1.0-5"), ("<1.2.3-beta", "1.2.3-beta.1-1"),
             ("<1.2.3", "1.2.3-beta.1"), (">0.0.1-alpha07", "0.0.1-alpha07-8"),
             (">0.0.1-alpha07-1", "0.0.1-alpha07-8"), (">0.0.1-alpha07", "0.0.1-alpha08")]
LUET_FALSE = [(">0.0.1-alpha07", "0.0.1-alpha06"), ("<0.0.1-alpha07", "0.0.1-alpha08"),
              (">0.1.0+0.4", "0.1.0+0.3"), (">=0.0.20190406.4.9.172-r1", "0"), ("<=1", "2"),
              (">=3", "2"), ("<0", "0.0.40-alpha"), ("<0.1.0+0.4", "0.1.0+0.5"),
              ("<=0.0.20190406.4.9.172-r1", "1.0.111"), ("<0.1.0+4", "0.1.0+5"),
              ("<=0.1.0-4", "0.1.0-5")]


@pytest.mark.parametrize("selector, version, expected", [
    *((s, v, True) for s, v in LUET_TRUE),
    *((s, v, False) for s, v in LUET_FALSE),
    # a leading v, on either side
    (">=v1.21.0", "v1.21.14+k3s1", True),
    (">=1.21", "v1.21.14+k3s1-1", True),      # +k3s1-1 is all build metadata
    ("<v1.22", "v1.21.14+k3s1", True),
    ("<1.21.14", "v1.21.14+k3s1", False),
    (">v1.0", "1.0.1", True),
    # +build is not compared: 1.0+9 is 1.0 is 1.0+10
    (">1.0+9", "1.0+10", False),
    (">=1.0+9", "1.0+1", True),
    ("<=1.0", "1.0+5", True),
    (">v1.21.14+k3s1", "v1.21.14+k3s2", False),
    ("!v1.21.14", "v1.21.14+k3s1", False),
    ("!1.0", "1.0.1", True),
    # =V is go-version's equality (constraint): missing parts are 0, +build not compared
    ("=v1.21.14+k3s1", "1.21.14+k3s2", True),
    ("=1.0", "1.0.0.0", True),
    ("=1.0", "1.0-1", False),                 # -1 is a pre-release to go-version
    # a bare V is no selector to luet: it looks the version up by its text
    ("v1.21.14+k3s1", "v1.21.14+k3s1", True),
    ("v1.21.14+k3s1", "1.21.14+k3s1", False),
    ("1.0", "1.0.0", False),
    # go-version's pre-release: after `-`, or a word right after the numbers; older than none
    (">=1.0", "1.0-1", False),
    (">1.0-1", "1.0", True),
    (">=1.0", "1.1-rc1", True),
    ("<1.0", "1.0~rc1", True),
    (">1.0_1", "1.0_2", True),                # Sanitize: 1.0-1 < 1.0-2
    # a space after the operator: the constraint, whose pre-release rule differs
    (">= 1.0", "1.1-rc1", False),
    ("> 1.0-1", "1.0-2", True),
    ("> 1.0-1", "1.1-2", False),
    # go-version's comparePart: a number beyond int64 is no number, yet compares as the largest
    ("<1.0-a", "1.0-99999999999999999999", False),
    (">1.0-1", "1.0-99999999999999999999", True),
    ("! 1.0", "2.0", False),                  # go-version's constraint has no `!`
    # what go-version cannot read satisfies nothing but >=0 (SPEC) or its bare text
    (">=1.0", "1:2.0", False),
    ("=1:2.0", "1:2.0", False),
    (">=0", "1:2.0", True),
    ("1:2.0", "1:2.0", True),
    (">=0", "latest", True),
    ("!1.0", "latest", False),
    ("<2", "0.2.rc1-1+12", False),
])
def test_selectors_follow_luet_validate_selector(selector, version, expected):
    assert matches(selector, version) is expected


@pytest.mark.parametrize("selector, candidates, expected", [
    (">=0", ["v1.21.14+k3s1", "1.0"], "1.0"),                 # luet's Sort
    (">=0", ["v1.9.0+k3s1", "v1.10.0+k3s1"], "v1.10.0+k3s1"),
    (">=v1.21", ["v1.20.0+k3s1", "v1.21.14+k3s1", "v1.21.14+k3s2"], "v1.21.14+k3s2"),
    (">=1.0", ["1.0+9", "1.0+10", "1.0"], "1.0+10"),          # go-version selects, Debian orders
    ("=1.0", ["1.0", "1.0+1", "1.0+2", "1.1"], "1.0+2"),
    ("<1.0+10", ["1.0+9", "1.0~rc1", "0.9"], "1.0~rc1"),
    ("!1.0", ["1.0+1", "0.9"], "0.9"),
    (">1.0", ["1.0+1", "1.0+2"], None),
])
def test_newest_satisfying(selector, candidates, expected):
    assert newest(selector, candidates) == expected


def _candidate(version: str, priority: int = 1) -> Candidate:
    definition = parse_definition({"name": "k3s", "category": "k8s", "version": version},
                                  Path("tree"))
    return Candidate(definition, Finalize(), f"k3s-{version}.tar", "0" * 64, (),
                     luetformat.NONE, RepoConfig(name=f"r{priority}", urls=("x",),
                                                 priority=priority))


def test_the_client_chooses_by_the_same_rules():
    offered = [_candidate(v) for v in ("v1.21.14+k3s1", "v1.22.1+k3s1", "1.0+9", "1.0+10")]
    assert choose(parse_ref("k8s/k3s@>=v1.21"), offered).version == "v1.22.1+k3s1"
    assert choose(parse_ref("k8s/k3s@=1.0"), offered).version == "1.0+10"
    assert choose(parse_ref("k8s/k3s"), offered).version == "1.0+10"   # luet's Sort
    assert choose(parse_ref("k8s/k3s"), [*offered, _candidate("0.1", 0)]).version == "0.1"
    with pytest.raises(CosbuildError, match=r"k8s/k3s@>1\.0\+9, but no version satisfies it "
                                            r"\(available: 1\.0\+9, 1\.0\+10\)"):
        choose(parse_ref("k8s/k3s@>1.0+9"), offered[:1:-1])


# --------------------------------------------------------------------------- warnings

@pytest.mark.parametrize("version, said", [
    ("v1.21.14+k3s1-1", ["not a Debian version"]),
    ("0.2.rc1-1+12", ["not one hashicorp/go-version reads"]),
    ("latest", ["not a Debian version", "not one hashicorp/go-version reads"]),
    ("1:2.0", ["not one hashicorp/go-version reads"]),
])
def test_a_version_luet_cannot_order_or_select_is_a_warning(version, said, caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        assert check_version(version, Where("tree/k3s/collection.yaml", 4, "version")) == version
    [record] = caplog.records
    assert record.getMessage().startswith(
        f"tree/k3s/collection.yaml:4: version: version {version!r} is ")
    for fragment in ["not a Debian version", "not one hashicorp/go-version reads"]:
        assert (fragment in record.getMessage()) is (fragment in said)


@pytest.mark.parametrize("version", ["1.0", "1.0+10", "0.0.1-alpha06+1", "2021.05.01", "1.0_1"])
def test_a_version_luet_reads_both_ways_is_no_warning(version, caplog):
    with caplog.at_level(logging.WARNING, logger="cosbuild"):
        check_version(version, Where("tree/app/definition.yaml", 3, "version"))
    assert not caplog.records


K3S = {
    "tree/k3s/collection.yaml": ("packages:\n"
                                 "- {name: k3s, category: k8s, version: v1.21.14+k3s1-1}\n"
                                 "- {name: k3s, category: k8s, version: v1.22.1+k3s1}\n"),
    "tree/k3s/build.yaml": "image: alpine\nsteps:\n  - echo k3s\n",
    "tree/app/build.yaml": ("requires:\n  - {name: k3s, category: k8s, version: '<v1.22'}\n"
                            "steps:\n  - echo app\n"),
}


def test_a_tree_of_v_versions_loads_with_warnings_and_resolves(project, run_cli, caplog):
    project({**BASIC, **K3S})
    code, out, err = run_cli("graph", "--json")
    assert code == 0, err
    assert "Traceback" not in err
    for line, version in ((2, "v1.21.14+k3s1-1"), (3, "v1.22.1+k3s1")):   # file and line of each
        assert (f"tree/k3s/collection.yaml:{line}: version: version {version!r} is not a "
                "Debian version") in caplog.text
    graph = load_project(settings.resolve({}, env={})).graph
    assert graph.packages["app/app@0.1"].build_deps == ("k8s/k3s@v1.21.14+k3s1-1",)
    assert graph.latest["k8s/k3s"] == "k8s/k3s@v1.22.1+k3s1"


# --------------------------------------------------------------------------- hostile versions

HOSTILE = ["", "..", "1.0/../../x", "../x", ".hidden", "-1", "1..2", "a b", " 1.0", "1.0\n",
           "1.0\x00", "1.0\x1b[2J", "1.0\u202e", "1.0\x85", "1<2", "a=b", "1.0>", "!1.0", "1.0!",
           "1" * 129, "1." + "9" * 5000]   # no name that long, nor a number Python cannot read


@pytest.mark.parametrize("version", HOSTILE)
def test_a_hostile_version_is_still_refused(version):
    where = Where("tree/app/definition.yaml", 3, "version")
    with pytest.raises(CosbuildError) as info:
        check_version(version, where)
    err = info.value
    assert (err.file, err.line, err.key) == ("tree/app/definition.yaml", 3, "version")
    assert err.message == (f"invalid version {version!r}" if version else "empty version")


@pytest.mark.parametrize("selector", [">=..", ">=1.0/../x", "=.", "<1.0\x1b", ">=1<2", "!!1"])
def test_a_selector_with_a_hostile_version_is_refused(selector):
    with pytest.raises(CosbuildError, match="invalid version selector"):
        check_selector(selector)


@pytest.mark.parametrize("version", ["1." + "9" * 5000, "v" + "9" * 5000])
def test_an_unchecked_version_too_long_is_compared_without_failing(version):
    # an installed-package database is read without the tree's checks
    assert compare(version, "1.0") == -1
    assert matches(">=1.0", version) is False
    assert matches("<2", version) is False


def test_a_hostile_version_in_a_tree_is_one_error_naming_the_file(project, run_cli):
    project({**BASIC, "tree/app/definition.yaml": "name: app\ncategory: app\n"
                                                  "version: 'v1.0/../../x'\n"})
    code, out, err = run_cli("validate")
    assert code == 1
    assert "Traceback" not in err
    assert "tree/app/definition.yaml:3: version: invalid version 'v1.0/../../x'" in err
    assert not (project.path / "build").exists() or not any((project.path / "build").rglob("x"))
