"""Trees written for luet in 2022-2023 load unchanged (SPEC section 1): YAML as luet's go-yaml v2
reads it (anchors and `<<:` merges everywhere, a plain scalar kept as written in a string
field), keys luet's structs do not have ignored with a warning, a package declared twice kept
as luet's walk loads it last; iso.yaml's `overlay: true` of luet-makeiso's early days ignored.
`validate --strict` makes each warning an error."""

from __future__ import annotations

from pathlib import Path

import pytest

from cosbuild import settings
from cosbuild.errors import Collector, CosbuildError
from cosbuild.tree.load import load_trees
from cosbuild.tree.project import load_project
from cosbuild.tree.versions import PackageRef

from .conftest import BASIC, write_files

REAL = Path(__file__).resolve().parents[2] / "shared" / "real-trees"
KAIROS = REAL / "kairos-packages-2023-06"
ELEMENTAL = REAL / "elemental-toolkit-v0.8.14"

# a 2022 collection: whole package stanzas merged into requires entries (`!!merge` written
# out, as elemental-toolkit's files have it, and the short form)
MERGED = """\
packages:
  - &luet
    category: toolchain
    name: luet
    version: "0.32.5"
    branch: ""
    upx: false
    labels:
      github.repo: luet
  - !!merge <<: *luet
    name: luet-makeiso
    version: 0.4.0-6
    requires:
      - !!merge <<: *luet
        version: "<1.0.0"
      - <<: *luet
        name: yip
        version: ">=0"
      - <<: *luet
        version: ">=0"
        version: "<2"
"""
YIP = "name: yip\ncategory: toolchain\nversion: '1.0'\n"


def _load(tmp_path: Path, files: dict[str, str]):
    write_files(tmp_path, files)
    return {p.key: p for p in load_trees([tmp_path / "tree"]).packages}


def test_merge_keys_bring_keys_luet_ignores_into_requires(tmp_path, caplog):
    packages = _load(tmp_path, {"tree/toolchain/collection.yaml": MERGED})
    makeiso = packages["toolchain/luet-makeiso@0.4.0-6"].definition
    assert makeiso.requires == (PackageRef("toolchain", "luet", "<1.0.0"),
                                PackageRef("toolchain", "yip", ">=0"),
                                PackageRef("toolchain", "luet", "<2"))   # the last duplicate
    assert makeiso.labels == (("github.repo", "luet"),)                   # merged, too
    file = tmp_path / "tree/toolchain/collection.yaml"
    for key, line in (("branch", 6), ("upx", 7), ("labels", 8)):
        assert f"{file}:{line}: {key}: unknown keyword '{key}' in requires entry, ignored" \
            in caplog.text


def test_merged_requires_resolve_in_validate(project, run_cli):
    project({**BASIC, "tree/toolchain/collection.yaml": MERGED,
             "tree/yip/definition.yaml": YIP})
    code, out, err = run_cli("validate")
    assert code == 0, err
    assert out.startswith("ok: 5 packages")


# 300 bytes standing for a billion values, and a chain of merges each copying the one before
ALIAS_BOMB = "a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"a{n}: &a{n} [{', '.join([f'*a{n - 1}'] * 10)}]\n" for n in range(1, 9))
MERGE_CHAIN = "a0: &a0 {k0: 1}\n" + "".join(
    f"a{n}: &a{n} {{<<: *a{n - 1}, k{n}: 1}}\n" for n in range(1, 2000))


@pytest.mark.parametrize("bomb, fragment", [
    (ALIAS_BOMB, "values larger than 16 MiB as JSON"),
    (MERGE_CHAIN, "more than 1000000 keys copied by '<<' merges"),
])
def test_an_alias_or_merge_bomb_is_still_refused(project, run_cli, bomb, fragment):
    # top-level keys besides `packages` are ignored (with a warning), as luet ignores them
    stanza = "  - {name: bomb, category: app, version: '0.1', bomb: *a8}\n"
    project({**BASIC, "tree/bomb/collection.yaml": bomb + "packages:\n" + stanza,
             "tree/bomb/build.yaml": "image: x\n"})
    code, _, err = run_cli("validate")
    assert code == 1 and "Traceback" not in err
    assert "tree/bomb/collection.yaml" in err and fragment in err, err


def test_a_plain_scalar_in_a_string_key_keeps_its_text(tmp_path):
    packages = _load(tmp_path, {"tree/y/definition.yaml": (
        "name: y\ncategory: on\nversion: 1.10\nlabels: {a: yes, b: 010}\n"
        "requires:\n  - {name: n, category: off, version: 1.20}\n")})
    pkg = packages["on/y@1.10"].definition
    assert (pkg.name, pkg.category, pkg.version) == ("y", "on", "1.10")
    assert pkg.labels == (("a", "yes"), ("b", "010"))
    assert pkg.requires == (PackageRef("off", "n", "1.20"),)


def test_the_package_luet_loads_last_is_kept(tmp_path, caplog):
    """luet's filepath.Walk sorts a folder's entries by name: the subfolder `a` comes before
    `definition.yaml`, so that file's declaration is the last one (os.walk's order would keep
    a/'s); in a collection, the later stanza."""
    packages = _load(tmp_path, {
        "tree/x/a/definition.yaml": "name: p\ncategory: c\nversion: '1'\ndescription: sub\n",
        "tree/x/definition.yaml": "name: p\ncategory: c\nversion: '1'\ndescription: top\n",
        "tree/z/collection.yaml": ("packages:\n  - {name: q, category: c, version: '1', "
                                   "description: first}\n  - {name: q, category: c, "
                                   "version: '1', description: second}\n")})
    assert packages["c/p@1"].definition.description == "top"
    assert packages["c/q@1"].definition.description == "second"
    tree = tmp_path / "tree"
    assert (f"{tree}/x/definition.yaml:1: package c/p@1 declared again (first in "
            f"{tree}/x/a/definition.yaml:1): the last declaration is used") in caplog.text
    assert (f"{tree}/z/collection.yaml:3: package c/q@1 declared again (first in "
            f"{tree}/z/collection.yaml:2)") in caplog.text


@pytest.mark.parametrize("value", ["true", "false"])
def test_iso_overlay_true_or_false_is_ignored_with_a_warning(project, run_cli, caplog, value):
    project({**BASIC, "iso.yaml": f"packages: {{rootfs: [app/app]}}\noverlay: {value}\n"})
    code, out, err = run_cli("validate")
    assert code == 0 and out.endswith(", 1 warning\n"), err
    assert (f"iso.yaml:2: overlay: {value}: ignored (luet-makeiso before 0.3.3 had no "
            "'overlay' key)") in caplog.text


def test_strict_makes_each_warning_an_error(project, run_cli):
    project({**BASIC, "tree/toolchain/collection.yaml": MERGED, "tree/yip/definition.yaml": YIP,
             "tree/yip2/definition.yaml": YIP,
             "tree/base/build.yaml": "image: debian\nstesp: [make]\n",
             "tree/base/finalize.yaml": "instal: [true]\n",
             "iso.yaml": "packages: {rootfs: [app/app]}\noverlay: true\n"})
    code, _, _ = run_cli("validate")
    assert code == 0
    code, _, err = run_cli("--strict", "validate")
    assert code == 1 and "Traceback" not in err
    for fragment in ("unknown keyword 'branch' in requires entry, ignored",
                     "tree/yip2/definition.yaml:1: package toolchain/yip@1.0 declared again "
                     "(first in tree/yip/definition.yaml:1)",
                     "build.yaml (rendered):2: stesp: unknown keyword 'stesp' in build.yaml, "
                     "ignored (did you mean 'steps'?)",
                     "finalize.yaml (rendered):1: instal: unknown keyword 'instal' in "
                     "finalize.yaml, ignored (did you mean 'install'?)",
                     "iso.yaml:2: overlay: true: ignored"):
        assert fragment in err, f"{fragment!r} not in {err!r}"


def test_a_hostile_name_from_a_merge_is_still_refused(tmp_path):
    with pytest.raises(CosbuildError, match=r"requires.name: invalid package name '\.\./x'"):
        _load(tmp_path, {"tree/a/collection.yaml": (
            "packages:\n  - &a {name: a, category: c, version: '1', x: y}\n"
            "  - <<: *a\n    name: b\n    requires:\n      - <<: *a\n        name: ../x\n")})


# --------------------------------------------------------------------------- the real trees

def _real(tree: Path, values: str, build_dir: Path) -> Collector:
    errors = Collector()
    load_project(settings.resolve({"tree": [str(tree / "packages")],
                                   "values": [str(tree / "values" / values)],
                                   "build_dir": str(build_dir)}, env={}), errors=errors)
    return errors


needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"no real trees in {REAL}")


@needs_real
@pytest.mark.parametrize("values", ["green-x86_64.yaml", "teal-arm64.yaml"])
def test_elemental_toolkit_loads_renders_and_resolves(tmp_path, values):
    # meta/toolchain requires toolchain/luet, declared in a collection whose requires merge
    # whole package stanzas: that collection loads now
    errors = _real(ELEMENTAL, values, tmp_path)
    assert not errors.errors, "\n".join(map(str, errors.errors))


@needs_real
@pytest.mark.parametrize("values", ["amd64.yaml", "arm64.yaml", "arm.yaml"])
def test_kairos_loads_renders_and_resolves(tmp_path, values):
    errors = _real(KAIROS, values, tmp_path)
    assert not errors.errors, "\n".join(map(str, errors.errors))
