"""Hostile names, categories and versions (issue 14): each is one clear error naming the file
and key, a non-zero exit, no traceback, and nothing written outside the build folder."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosbuild import settings
from cosbuild.builds import artifact
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.tools import TaskLog
from cosbuild.tree import spec
from cosbuild.tree.project import load_project
from cosbuild.tree.yamlio import loads

from .conftest import BASIC, write_files

APP = "tree/app/definition.yaml"


def files_outside(top: Path, build: Path) -> set[Path]:
    """Every path below `top` but not below `build`."""
    return {p for p in top.rglob("*") if build not in p.parents and p != build}


@pytest.fixture
def nested(tmp_path, monkeypatch):
    """A project three folders deep, so that `../../../x` from build/specs lands in tmp_path
    (where the test can see it), with a sentinel of what was there before."""
    root = tmp_path / "a" / "b" / "project"
    root.mkdir(parents=True)
    monkeypatch.chdir(root)
    for var in ("COSBUILD_TREE", "COSBUILD_VALUES", "COSBUILD_FLAVOR", "COSBUILD_BUILD_DIR"):
        monkeypatch.delenv(var, raising=False)

    def write(files):
        write_files(root, {**BASIC, **files})
        return root, files_outside(tmp_path, root / "build")
    write.top = tmp_path
    return write


def check_refused(run_cli, fragments, *args):
    """`cosbuild ARGS` fails with one message holding every fragment."""
    code, out, err = run_cli(*args)
    assert code == 1, (out, err)
    assert "Traceback" not in err
    assert err.startswith("cosbuild: error: ")
    for fragment in fragments:
        assert fragment in err, f"{fragment!r} not in {err!r}"
    return err


# --------------------------------------------------------------------------- names, categories

BAD_NAMES = ["../../../x", "a/b", "..", ".hidden", "", "a b", "x\ny", "-x", "x:y", "/etc",
             # what a terminal acts on or a listing splits at: ESC, DEL, a C1 code (CSI),
             # NEL, a bidi override, a zero-width space, a line separator, a trailing newline
             "x\x1b[2Jy", "x\x7f", "x\x9by", "x\x85y", "x\u202ey", "x\u200by", "x\u2028y",
             "app\n"]


@pytest.mark.parametrize("key", ["name", "category"])
@pytest.mark.parametrize("bad", BAD_NAMES)
def test_unsafe_name_or_category_is_refused(nested, run_cli, key, bad):
    fields = {"name": "app", "category": "app", "version": "0.1", key: bad}
    # a JSON string is a YAML double-quoted one: the newline and the quotes stay as they are
    root, before = nested({APP: "".join(f"{k}: {json.dumps(v)}\n" for k, v in fields.items())})
    what = "package name" if key == "name" else "category"
    message = f"empty {what}" if not bad else f"invalid {what}"
    check_refused(run_cli, [f"{APP}:{list(fields).index(key) + 1}: {key}: {message}",
                            "letters, digits"], "validate")
    # and the render task, which writes build/specs/NAME-CATEGORY-VERSION.yaml, never runs
    check_refused(run_cli, [APP, key], "run", "render")
    assert files_outside(nested.top, root / "build") == before


@pytest.mark.parametrize("good", ["a", "A1", "x.y", "x_y", "x+y", "golang-1.16", "0ad"])
def test_names_luet_trees_use_still_load(project, run_cli, good):
    project({**BASIC, APP: f"name: '{good}'\ncategory: '{good}'\nversion: '0.1'\n"})
    code, out, err = run_cli("validate")
    assert code == 0, err


def test_a_name_too_long_for_a_file_is_refused_before_any_file(nested, run_cli):
    long = "x" * 250   # each part is fine, the file name they make is not
    root, before = nested({APP: f"name: {long}\ncategory: app\nversion: '0.1'\n"})
    check_refused(run_cli, [APP, "cannot name a file in the build folder", "200 bytes"], "validate")
    check_refused(run_cli, ["cannot name a file"], "run", "render")
    assert files_outside(nested.top, root / "build") == before


# --------------------------------------------------------------------------- references

@pytest.mark.parametrize("file, text, fragments", [
    ("tree/app/build.yaml",
     "requires:\n  - {name: ../../x, category: distro}\nsteps: [make]\n",
     ["tree/app/build.yaml (rendered):2: requires.name: invalid package name '../../x'"]),
    ("tree/app/build.yaml",
     "requires:\n  - {name: base, category: ../distro}\nsteps: [make]\n",
     ["tree/app/build.yaml (rendered):2: requires.category: invalid category '../distro'"]),
    ("tree/app/build.yaml", "requires:\n  - ../distro/base\nsteps: [make]\n",
     ["tree/app/build.yaml (rendered):1: requires: invalid category '../distro'"]),
    (APP, "name: app\ncategory: app\nversion: '0.1'\nrequires:\n  - {name: ../x, category: a}\n",
     [f"{APP}:5: requires.name: invalid package name '../x'"]),
    (APP, "name: app\ncategory: app\nversion: '0.1'\nconflicts:\n  - {name: x, category: a/b}\n",
     [f"{APP}:5: conflicts.category: invalid category 'a/b'"]),
    (APP, "name: app\ncategory: app\nversion: '0.1'\nprovides:\n  - {name: '', category: a}\n",
     [f"{APP}:5: provides.name: empty package name"]),
])
def test_references_get_the_same_checks(project, run_cli, file, text, fragments):
    project({**BASIC, file: text})
    check_refused(run_cli, fragments, "validate")


def test_a_bad_reference_on_the_command_line(project, run_cli):
    project(BASIC)
    check_refused(run_cli, ["invalid category '..'"], "render", "../app")


# --------------------------------------------------------------------------- versions

@pytest.mark.parametrize("written, fragment", [
    ("''", "version: empty version"),
    ("'a b'", "version: invalid version 'a b'"),
    ("'1..2'", "version: invalid version '1..2'"),
    ("'-1'", "version: invalid version '-1'"),
    ("'..'", "version: invalid version '..'"),
    ("'1.0/../../x'", "version: invalid version '1.0/../../x'"),
    ("' 1.0'", "version: invalid version ' 1.0'"),
    ("[1.0]", "version: expected a string, got a list"),
    # a plain scalar YAML reads as a boolean or number is checked as its text, as luet's
    # go-yaml gives it to a string field
    ("+1", "version: invalid version '+1'"),
])
def test_invalid_version_is_refused(project, run_cli, written, fragment):
    project({**BASIC, APP: f"name: app\ncategory: app\nversion: {written}\n"})
    check_refused(run_cli, [f"{APP}:3: {fragment}"], "validate")


@pytest.mark.parametrize("written, version", [
    ("'1.0.0+2'", "1.0.0+2"), ("'0.20.1-3'", "0.20.1-3"), ("'1.2'", "1.2"),
    ("'1:2.0'", "1:2.0"), ("'1.0~rc1'", "1.0~rc1"), ("'0.2.rc1-1+12'", "0.2.rc1-1+12"),
    ("'v1.0'", "v1.0"),   # luet validates no version (tests/test_versions_2022.py)
    ("1e3", "1e3"),   # YAML 1.1 reads it as a string, and it is a Debian version
    ("26", "26"),   # an integer reads back as written (luet's go-yaml keeps its text too)
    # YAML 1.1 reads these as numbers; go-yaml gives a string field the text as written
    ("1.10", "1.10"), ("0.20", "0.20"), ("1:2.0", "1:2.0"), ("010", "010"), ("1:20", "1:20"),
    ("true", "true"), ("1_000", "1_000"),   # free-form text, as luet 0.20 takes any version
    ("0x10", "0x10"),
])
def test_valid_versions_are_accepted(project, run_cli, written, version):
    project({**BASIC, APP: f"name: app\ncategory: app\nversion: {written}\n"})
    code, out, err = run_cli("graph", "--json")
    assert code == 0, err
    assert f'"version": "{version}"' in out


def test_no_traceback_through_the_console_script(nested):
    root, before = nested({APP: "name: ../../../x\ncategory: app\nversion: 1.10\n"})
    for command in (["validate"], ["list"], ["run", "render"], ["graph", "--json"]):
        proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", *command], cwd=root,
                              capture_output=True, text=True)
        assert proc.returncode == 1, command
        assert "Traceback" not in proc.stderr
        assert f"{APP}:1: name: invalid package name '../../../x'" in proc.stderr
    assert files_outside(nested.top, root / "build") == before


@pytest.mark.parametrize("written", ["1.0\n", "1.0\r", "1.0\x1b", "1.0\u202e", "1.0\x85"])
def test_a_version_with_a_control_character_is_refused(nested, run_cli, written):
    # python-debian's pattern ends in `$`: alone, it takes "1.0\n" for a version
    root, before = nested({APP: f"name: app\ncategory: app\nversion: {json.dumps(written)}\n"})
    check_refused(run_cli, [f"{APP}:3: version: invalid version {written!r}", "printable text"],
                  "validate")
    check_refused(run_cli, [f"{APP}:3: version: invalid version"], "run", "render")
    assert files_outside(nested.top, root / "build") == before


def test_a_version_with_a_control_character_in_a_collection_is_refused(project, run_cli):
    text = 'packages:\n  - {name: a, category: c, version: "1.0\\n"}\n'
    project({**BASIC, "tree/coll/collection.yaml": text})
    check_refused(run_cli, ["tree/coll/collection.yaml:2: version: invalid version '1.0\\n'"],
                  "validate")


# --------------------------------------------------------------------------- file names

# each one printed raw would move the cursor, clear the screen, reverse the text or split
# the line it is shown on
CONTROLS = ["\n", "\r", "\t", "\0", "\x1b[2J", "\x07", "\x7f", "\x9b", "\x85", "\u202e",
            "\u2066", "\u200b", "\ufeff", "\u2028", "\u2029"]


@pytest.mark.parametrize("control", CONTROLS)
def test_file_name_refuses_control_characters(control):
    where = spec.Where("iso.yaml", 3, "image_name")
    with pytest.raises(CosbuildError) as info:
        spec.file_name(f"live{control}.iso", where)
    assert str(info.value).startswith(
        f"iso.yaml:3: image_name: {f'live{control}.iso'!r} cannot name a file in the build folder")
    assert "without '/' or control characters" in str(info.value)


@pytest.mark.parametrize("good", ["cOS-0.8.14-x86_64.iso", "live iso.iso", "été-ünïcode.iso",
                                  "日本語.iso", "x" * 196 + ".iso"])
def test_file_name_keeps_printable_names(good):
    assert spec.file_name(good, spec.Where("iso.yaml", 3, "image_name")) == good


ISO = "packages:\n  rootfs: [app/app]\n"


@pytest.mark.parametrize("control", ["\n", "\x1b[2J", "\x7f", "\x9b", "\u202e", "\u2028", "\0"])
@pytest.mark.parametrize("option, key, text, line, shown", [
    ("--iso", "image_name", ISO + "image_name: {}\n", 3, "live{}.iso"),
    ("--iso", "image_name", ISO + "image_prefix: {}\nimage_name: x\n", 4, "live{}x.iso"),
    ("--disk", "name", "system: [app/app]\nname: {}\n", 2, "live{}"),
])
def test_a_control_character_in_an_image_file_name_is_refused(nested, run_cli, control, option,
                                                              key, text, line, shown):
    root, before = nested({"bad.yaml": text.format(json.dumps(f"live{control}"))})
    shown = repr(shown.format(control))   # as the message shows it: escaped
    for command in ("validate", "list"):
        check_refused(run_cli, [f"bad.yaml:{line}: {key}: {shown} cannot name a file in the "
                                "build folder", "or control characters"],
                      option, "bad.yaml", command)
    assert files_outside(nested.top, root / "build") == before


# --------------------------------------------------------------------------- image references

BUILD = "tree/app/build.yaml"


@pytest.mark.parametrize("ref, shown", [
    ("debian\n", "debian\\x0a"), ("debian:12\x1b[2J", "debian:12\\x1b[2J"),
    ("debian\u202e21:kat", "debian\\u202e21:kat"), ("-q", "-q"), ("--root=/", "--root=/"),
    ("a b", "a b"), ("repo/app:1\n--root=/", "repo/app:1\\x0a--root=/"),
])
@pytest.mark.parametrize("text, line", [
    ("image: {}\nsteps: [make]\n", 1),
    ("image: debian\ncopy:\n  - {{image: {}, source: /a, destination: /b}}\n", 3),
])
def test_an_image_reference_buildah_would_refuse_is_refused_when_read(nested, run_cli, ref,
                                                                      shown, text, line):
    """buildah's rule (spec.image_ref) as the spec is read: the file and key are
    named, before any build, and the message shows the reference escaped."""
    root, before = nested({BUILD: text.format(json.dumps(ref))})
    err = check_refused(run_cli, [f"{BUILD} (rendered):{line}: image: invalid image "
                                  f"reference '{shown}'", "registry/name[:tag]"], "validate")
    assert "\x1b" not in err and "\u202e" not in err and err.count("\n") == 1
    check_refused(run_cli, [f"{BUILD} (rendered):{line}: image: invalid image"], "run", "render")
    assert files_outside(nested.top, root / "build") == before


@pytest.mark.parametrize("ref", ["debian:bookworm", "localhost:5000/a/b@sha256:" + "0" * 64,
                                 "quay.io/costoolkit/releases-green:luet-toolchain-0.21.2",
                                 "''"])   # an unset template value: no image, as before
def test_image_references_real_trees_use_still_load(project, run_cli, ref):
    project({**BASIC, BUILD: f"image: {ref}\nrequires:\n  - {{name: base, category: distro}}\n"})
    code, out, err = run_cli("validate")
    assert code == 0, err


@pytest.mark.parametrize("url, fragment", [
    ("file:///etc/shadow", "'file:///etc/shadow' is not an http(s) URL"),
    ("ftp://host/a.tar", "'ftp://host/a.tar' is not an http(s) URL"),
    ("http:///a.tar", "'http:///a.tar' is not an http(s) URL"),
    ("http://[::1/a.tar", "'http://[::1/a.tar' is not an http(s) URL"),
    ("gopher://x\x1b[2J/a", "'gopher://x\\x1b[2J/a' is not an http(s) URL"),
    ("http://host/..", "'..' cannot name a file in the build folder"),
    ("http://host/", "'' cannot name a file in the build folder"),
    ("https://host/a\x1b[2J.tar", "'a\\x1b[2J.tar' cannot name a file"),
])
def test_a_retrieve_url_is_http_and_names_a_file(nested, run_cli, url, fragment):
    """retrieve downloads as luet's ADD does, from http(s) only: a file:// URL would copy a
    host file into the build, a URL ending in `..` would name the downloads' parent."""
    root, before = nested({BUILD: f"image: debian\nretrieve: [{json.dumps(url)}]\n"})
    err = check_refused(run_cli, [f"{BUILD} (rendered):2: retrieve: ", fragment], "validate")
    assert "\x1b" not in err
    assert files_outside(nested.top, root / "build") == before


def test_retrieve_globs_and_http_urls_still_load(project, run_cli):
    project({**BASIC, BUILD: "image: debian\nretrieve: ['*.tar.zst', 'app-*',"
                             " 'https://example.org/dl/v1.2/src.tar.gz', 'HTTP://h:8080/x']\n"})
    code, out, err = run_cli("validate")
    assert code == 0, err



@pytest.mark.parametrize("folder", ["tmp/go", "/", "//", "/a/../etc", "/a/./b", ""])
def test_a_cache_folder_is_absolute_and_below_the_root(nested, run_cli, folder):
    """`caches` names a folder of the container a host folder is bound on: a relative one or
    one that climbs out would make its place ambiguous, / would hide the whole root."""
    root, before = nested({BUILD: f"image: debian\ncaches: [{json.dumps(folder)}]\n"})
    check_refused(run_cli, [f"{BUILD} (rendered):2: caches: ", "is not an absolute folder path"],
                  "validate")
    assert files_outside(nested.top, root / "build") == before


def test_cache_folders_load_normalised():
    from cosbuild.tree.spec import BUILD_KEYWORDS, parse
    data = {"caches": ["/tmp/gocache", "/root/.cache//go-build/"]}
    assert parse(BUILD_KEYWORDS, data, "build.yaml", what="build.yaml")["caches"] == (
        "/tmp/gocache", "/root/.cache/go-build")

# --------------------------------------------------------------------------- artifact file lists

def write_outputs(root: Path, names: list[bytes]):
    """The artifact and metadata of app/app made from a folder holding `names` (bytes: file
    names need not be UTF-8), as a build writes them once its images are made."""
    content = root / "content"
    for name in names:
        path = os.path.join(os.fsencode(content), name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(b"x\n")
    with contextlib.chdir(root):
        project = load_project(settings.resolve({}, env={}))
        pkg = project.graph.packages["app/app@0.1"]
        builder = Builder(project)
        with TaskLog(root / "log") as log:
            builder.write_outputs(pkg, list(artifact.walk(content)), log)
    return builder, pkg


@pytest.mark.parametrize("name, shown, why", [
    (b"\xff.cfg", "/etc/\\xff.cfg", "is not UTF-8 text"),
    (b"caf\xe9\x1b[2J.cfg", "/etc/caf\\xe9\\x1b[2J.cfg", "is not UTF-8 text"),
    ("a\x85b".encode(), "/etc/a\\x85b", "holds a NEL (U+0085)"),
])
def test_a_file_name_the_metadata_cannot_hold_is_a_clear_build_error(project, name, shown, why):
    root = project(BASIC)
    with pytest.raises(CosbuildError) as info:
        write_outputs(root, [b"etc/ok.cfg", b"etc/" + name])
    assert str(info.value) == (
        f"tree/app/build.yaml: app/app@0.1: the name of the file '{shown}' {why}: the "
        "package's file list cannot hold it (rename or remove it in the build steps, or "
        "leave it out with 'excludes')")
    # refused before the artifact is written: no artifact, metadata or temporary file
    assert [p.name for p in (root / "build").iterdir() if "app-app" in p.name] == []


CONTROL_FILE_NAMES = ["a\nb", "a\rb", "\x1b[2J", "tab\t", "\x7f", "\x9b", "\u2028",
                      "\u202eevil", "\ufeffbom", "日本語", "space x", "\\", "'\"quoted\"'",
                      "- not a list item", "key: value", "#comment", "!!binary"]


def test_the_metadata_of_any_utf8_file_name_reads_back_the_same(project):
    root = project(BASIC)
    builder, pkg = write_outputs(root, [f"etc/{n}".encode() for n in CONTROL_FILE_NAMES])
    text = builder.metadata_path(pkg).read_text(encoding="utf-8")
    files = yaml.safe_load(text)["files"]
    assert sorted(files) == sorted(f"etc/{n}" for n in CONTROL_FILE_NAMES)
    # and cosbuild's own reader (create-repo's) takes it
    assert loads(text, "x")["files"] == files
