"""Versions and selectors (SPEC §1 "Versions and selectors"): Debian ordering, selectors as
luet 0.20 matches them (hashicorp/go-version: +build counts for nothing), newest wins."""

from __future__ import annotations

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.tree.spec import Where
from cosbuild.tree.versions import (PackageRef, check_selector, compare, matches, newest,
                                    parse_ref, sort_key)


# --------------------------------------------------------------------------- ordering

@pytest.mark.parametrize("older, newer", [
    ("1.0+9", "1.0+10"),        # +N rebuild counter compares numerically
    ("1.0+1", "1.0+2"),
    ("1.0", "1.0+1"),           # a rebuild is newer than the plain version
    ("1.0~rc1", "1.0"),         # ~ sorts before everything, even the end of the string
    ("1.0~rc1", "1.0~rc2"),
    ("1.0~~", "1.0~"),
    ("2.0", "1:0.1"),           # an epoch beats any upstream version
    ("1:2.0", "2:0.1"),
    ("1.9", "1.10"),            # numeric, not lexical
    ("1.0", "1.0.1"),
    ("1.0", "1.0a"),
    ("1.0-1", "1.0-2"),         # Debian revision
    ("0.9", "1.0"),
])
def test_debian_ordering(older, newer):
    assert compare(older, newer) == -1
    assert compare(newer, older) == 1
    assert sort_key(older) < sort_key(newer)


@pytest.mark.parametrize("a, b", [
    ("1.0", "1.0"),
    ("1.0+10", "1.0+10"),
    ("1.0", "1.00"),            # numeric parts compare as integers
    ("0:1.0", "1.0"),           # epoch 0 is the default
])
def test_equal_versions(a, b):
    assert compare(a, b) == 0
    assert compare(b, a) == 0


def test_sort_key_sorts_like_debian():
    found = sorted(["1.0+10", "1:0.1", "1.0", "1.0~rc1", "1.0+9", "0.9"], key=sort_key)
    assert found == ["0.9", "1.0~rc1", "1.0", "1.0+9", "1.0+10", "1:0.1"]


# --------------------------------------------------------------------------- selectors

@pytest.mark.parametrize("selector, version, expected", [
    # >=
    (">=1.0", "1.0", True),
    (">=1.0", "1.0+1", True),
    (">=1.0", "0.9", False),
    (">=1.0", "1.0~rc1", False),
    # >
    (">1.0", "1.0", False),
    (">1.0", "1.0+1", False),       # go-version: +build is no part of the comparison
    (">1.0", "1.0.1", True),
    (">1.0", "0.9", False),
    (">1.0+9", "1.0+10", False),
    # <=
    ("<=1.0", "1.0", True),
    ("<=1.0", "1.0~rc1", True),
    ("<=1.0", "1.0+1", True),
    # <
    ("<1.0", "1.0", False),
    ("<1.0", "0.9", True),
    ("<1.0", "1.0~rc1", True),
    ("<2.0", "1:0.1", False),
    # =V (exact)
    ("=1.0", "1.0", True),
    ("=1.0", "1.0+1", True),       # go-version's equality: no +build, missing parts 0
    ("=1.0", "1.0.0", True),
    ("=1.0", "1.0.1", False),
    ("=1.0+10", "1.0+10", True),
    # bare V (exact: luet looks the version up by its text)
    ("1.0", "1.0", True),
    ("1.0", "1.0.0", False),
    ("1.0", "1.0+1", False),
    ("1.0", "0.9", False),
    # !V
    ("!1.0", "1.0", False),
    ("!1.0", "1.0+1", False),
    ("!1.0", "1.0.1", True),
    ("!1.0", "0.9", True),
    # whitespace around the operator and the version is tolerated
    (">= 1.0", "1.0", True),
    (" < 1.0 ", "0.9", True),
    ("! 1.0", "1.0", False),
])
def test_matches(selector, version, expected):
    assert matches(selector, version) is expected


@pytest.mark.parametrize("version", [
    "0", "0.0.1", "1.0", "1.0+10", "1.0~rc1", "2021.05.01", "1:0.1", "99:9.9", "1.0-1", "v1",
])
def test_ge_zero_matches_anything(version):
    assert matches(">=0", version) is True


@pytest.mark.parametrize("version", ["0~rc1", "~1"])
def test_ge_zero_matches_even_tilde_versions(version):
    assert matches(">=0", version) is True


def test_matches_invalid_selector_raises_cosbuild_error():
    with pytest.raises(CosbuildError, match="invalid version selector"):
        matches(">=", "1.0")


# --------------------------------------------------------------------------- newest

VERSIONS = ["1.0", "1.0+9", "1.0+10", "1.0~rc1", "0.9", "2.0~beta1", "1:0.1"]


@pytest.mark.parametrize("selector, expected", [
    (">=0", "1:0.1"),
    (">=1.0", "2.0~beta1"),      # go-version reads no epoch: no selector but >=0 takes 1:0.1
    ("<2.0", "2.0~beta1"),
    ("<2.0~beta1", "1.0+10"),
    ("<=1.0+9", "1.0+10"),       # all of 1.0+N equal 1.0 to go-version; Debian orders them
    ("<1.0", "1.0~rc1"),
    ("<1.0~rc1", "0.9"),
    ("=1.0", "1.0+10"),
    ("1.0+9", "1.0+9"),
    ("!1.0", "2.0~beta1"),
    (">1.0+9", "2.0~beta1"),
])
def test_newest_picks_newest_satisfying(selector, expected):
    assert newest(selector, VERSIONS) == expected


def test_newest_is_order_independent():
    assert newest(">=0", list(reversed(VERSIONS))) == "1:0.1"
    assert newest("<=1.0+10", sorted(VERSIONS)) == "1.0+10"


@pytest.mark.parametrize("selector, candidates", [
    (">=1:1.0", VERSIONS),
    ("=1.1+11", VERSIONS),
    ("!1:0.1", VERSIONS),
    ("<0.1", VERSIONS),
    ("!1.0", ["1.0"]),
    (">=0", []),
])
def test_newest_returns_none_when_nothing_satisfies(selector, candidates):
    assert newest(selector, candidates) is None


def test_newest_accepts_any_iterable():
    assert newest(">=1.0", (v for v in ["1.0", "1.0+10", "1.0+9"])) == "1.0+10"


# --------------------------------------------------------------------------- parse_ref

@pytest.mark.parametrize("text, category, name, version", [
    ("cat/name@>=1.0", "cat", "name", ">=1.0"),
    ("cat/name", "cat", "name", ">=0"),
    ("cat/name@", "cat", "name", ">=0"),
    ("system/cos@=0.5.3+2", "system", "cos", "=0.5.3+2"),
    ("toolchain/go@<1.17", "toolchain", "go", "<1.17"),
    ("apps/foo@!1.0", "apps", "foo", "!1.0"),
    ("apps/foo@1.2", "apps", "foo", "1.2"),
])
def test_parse_ref(text, category, name, version):
    ref = parse_ref(text)
    assert ref == PackageRef(category=category, name=name, version=version)
    assert ref.id == f"{category}/{name}"


def test_parse_ref_str_round_trip():
    assert str(parse_ref("cat/name")) == "cat/name"
    assert str(parse_ref("cat/name@>=1.0")) == "cat/name@>=1.0"


@pytest.mark.parametrize("text", ["noslash", "cat/", "/name", "/", "", "@>=1.0", "cat/@>=1.0"])
def test_parse_ref_rejects_bad_references(text):
    with pytest.raises(CosbuildError) as info:
        parse_ref(text)
    assert f"invalid package reference {text!r}" in str(info.value)
    assert "category/name" in str(info.value)   # the hint


@pytest.mark.parametrize("text, message", [
    ("a/b/c@<2", "invalid category 'a/b'"),     # a category is one path component
    ("../x/y", "invalid category '../x'"), ("cat/..", "invalid package name '..'"),
    ("cat/.hidden", "invalid package name '.hidden'"), ("c t/x", "invalid category 'c t'"),
])
def test_parse_ref_rejects_unsafe_names(text, message):
    with pytest.raises(CosbuildError, match=message):
        parse_ref(text)


@pytest.mark.parametrize("text", ["cat/name@>=", "cat/name@>=>1", "cat/name@1.0 2.0"])
def test_parse_ref_rejects_bad_selector(text):
    with pytest.raises(CosbuildError, match="invalid version selector"):
        parse_ref(text)


def test_parse_ref_error_points_at_where():
    where = Where("tree/a/build.yaml", 7, "requires")
    with pytest.raises(CosbuildError) as info:
        parse_ref("noslash", where)
    err = info.value
    assert (err.file, err.line, err.key) == ("tree/a/build.yaml", 7, "requires")
    assert str(err).startswith("tree/a/build.yaml:7: requires: invalid package reference 'noslash'")


def test_parse_ref_bad_selector_points_at_where():
    where = Where("tree/a/definition.yaml", 4, "requires")
    with pytest.raises(CosbuildError) as info:
        parse_ref("cat/name@>=", where)
    assert (info.value.file, info.value.line, info.value.key) == ("tree/a/definition.yaml", 4, "requires")
    assert "invalid version selector '>='" in str(info.value)


# --------------------------------------------------------------------------- check_selector

@pytest.mark.parametrize("selector", [
    ">=1.0", ">1.0", "<=1.0", "<1.0", "=1.0", "1.0", "!1.0", ">=0", "1:0.1", "1.0+10",
    "1.0~rc1", ">= 1.0", " 1.0 ",
])
def test_check_selector_accepts_valid(selector):
    assert check_selector(selector) is None


@pytest.mark.parametrize("selector", [
    ">= ", "", "   ", ">=", "<", "!", "=", "==1.0", ">=>1", "=>1.0", "1.0 2.0", ">=1.0 <2.0",
])
def test_check_selector_rejects_invalid(selector):
    with pytest.raises(CosbuildError) as info:
        check_selector(selector)
    assert f"invalid version selector {selector!r}" in str(info.value)
    assert ">=V" in info.value.hint


def test_check_selector_error_uses_where():
    where = Where("tree/x/build.yaml", 12, "requires")
    with pytest.raises(CosbuildError) as info:
        check_selector(">= ", where)
    assert str(info.value).startswith("tree/x/build.yaml:12: requires: invalid version selector '>= '")


@pytest.mark.parametrize("selector", ["1_0", ">=1.0@x", "=1.0$", ">=v1.0", "=latest"])
def test_check_selector_accepts_free_form_versions(selector):
    assert check_selector(selector) is None   # luet validates no version


def test_matches_with_unreadable_version_is_false():
    assert matches(">=1.0@x", "1.0") is False
    assert matches("=latest", "latest") is False   # go-version cannot read it
    assert matches("latest", "latest") is True     # the bare version, by its text
