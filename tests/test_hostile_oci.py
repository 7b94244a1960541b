"""Hostile images and registries (issue #32): layers whose whiteouts name the folder itself or
a folder above it, and registry answers of the wrong shape, depth, size or pace."""

from __future__ import annotations

import io
import os
import re
import tarfile
from pathlib import Path

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.oci.layers import apply_layer


# --------------------------------------------------------------------------- layers

def layer(*entries) -> io.BytesIO:
    """A layer tar from (name, kind, data): kind file/dir/symlink/hardlink."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, data in entries:
            info = tarfile.TarInfo(name)
            if kind == "file":
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
            else:
                info.type = {"symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE,
                             "dir": tarfile.DIRTYPE}[kind]
                info.linkname = data or ""
                tar.addfile(info)
    out.seek(0)
    return out


def snapshot(top: Path) -> dict[str, str]:
    """Every path under `top` (the folder included) with what it is."""
    out = {".": "dir"}
    for p in top.rglob("*"):
        out[str(p.relative_to(top))] = ("-> " + os.readlink(p) if p.is_symlink()
                                        else "dir" if p.is_dir() else p.read_text())
    return out


@pytest.fixture
def target(tmp_path):
    """tmp/a/b/root, with files in it, beside it and above it."""
    root = tmp_path / "a" / "b" / "root"
    (root / "etc/sub").mkdir(parents=True)
    (root / "etc/passwd").write_text("root")
    (root / "etc/sub/x").write_text("x")
    (root / "keep").write_text("k")
    (tmp_path / "a/b/sibling").write_text("s")
    (tmp_path / "sentinel").write_text("s")
    return root


@pytest.mark.parametrize("name", [
    "etc/.wh..",        # the folder etc itself
    "etc/.wh...",       # etc's parent: the target
    "etc/.wh.",         # no name: etc
    ".wh..",            # the target
    ".wh...",           # the target's parent
    "./.wh.",           # no name: the target
    "/.wh...",
    "./.wh...",
    "etc/sub/.wh...",
    "etc/./.wh.passwd",  # a '.' inside the path
    "etc/../.wh.keep",
    "../.wh.sibling",
    "etc/.wh..wh..opq/..",
    ".wh..wh..opq/../..",
    "a/../../.wh..wh..opq",
])
@pytest.mark.parametrize("kind", ["file", "dir", "symlink"])
def test_whiteouts_naming_the_target_or_above_are_refused(target, name, kind):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError) as err:
        apply_layer(layer((name, kind, b"" if kind == "file" else "x")), target, "evil layer")
    assert str(err.value).startswith(f"evil layer: refusing entry {name!r}: ")
    assert "is not a path inside the image" in str(err.value)
    assert snapshot(top) == before


@pytest.mark.parametrize("name", ["", ".", "./", "/", "./.", "etc/..", "etc/.", ".."])
def test_hard_links_to_the_target_itself_are_refused(target, name):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError, match=r"evil layer: refusing entry 'lnk': .* is not a path "
                                            r"inside the image"):
        apply_layer(layer(("lnk", "hardlink", name)), target, "evil layer")
    assert snapshot(top) == before


@pytest.mark.parametrize("name", ["", "./etc/..", "etc/../.."])
def test_files_naming_the_target_are_refused(target, name):
    top = target.parents[2]
    before = snapshot(top)
    with pytest.raises(CosbuildError, match=re.escape(f"evil layer: refusing entry {name!r}")):
        apply_layer(layer((name, "file", b"over")), target, "evil layer")
    assert snapshot(top) == before


def test_proper_whiteouts_and_markers_still_apply(target):
    top = target.parents[2]
    apply_layer(layer(("./", "dir", None), ("/", "dir", None), ("./etc/.wh.passwd", "file", b""),
                      ("/etc/sub/.wh..wh..opq", "file", b""), ("etc/sub/y", "file", b"y"),
                      (".wh..wh..", "file", b""), ("etc//new/", "dir", None)),
                target, "layer")
    assert snapshot(target) == {".": "dir", "etc": "dir", "etc/sub": "dir", "etc/sub/y": "y",
                                "etc/new": "dir", "keep": "k"}
    assert (top / "sentinel").read_text() == "s" and (top / "a/b/sibling").read_text() == "s"


def test_whiteouts_through_links_stay_in_the_target(target):
    top = target.parents[2]
    apply_layer(layer(("up", "symlink", "../../.."), ("up/.wh.sentinel", "file", b""),
                      ("abs", "symlink", str(top)), ("abs/a/.wh.b", "file", b""),
                      ("etc/.wh.sub", "file", b"")), target, "layer")
    assert (top / "sentinel").read_text() == "s" and (top / "a/b/sibling").read_text() == "s"
    assert not (target / "etc/sub").exists() and (target / "etc/passwd").exists()


@pytest.mark.parametrize("keep, entries", [
    (".layers", [(".wh..layers", "file", b"")]),
    (".layers", [("./.wh..layers", "dir", None)]),
    (".layers", [("lnk", "symlink", "/"), ("lnk/.wh..layers", "file", b"")]),
    (".layers", [(".layers/.wh..wh..opq", "file", b"")]),
    ("run/layers", [("run/.wh.layers", "file", b"")]),
    ("run/layers", [(".wh.run", "file", b"")]),
    ("run/layers", [("run", "file", b"not a folder")]),
    ("run/layers", [("run", "symlink", "/elsewhere")]),
])
def test_the_download_folder_and_its_parents_cannot_be_removed(target, keep, entries):
    (target / keep).mkdir(parents=True)
    (target / keep / "layer-1").write_text("blob")
    before = snapshot(target)
    with pytest.raises(CosbuildError, match=f"it would change {re.escape(keep)}, where the layers"):
        apply_layer(layer(*entries), target, "layer", keep=keep)
    after = snapshot(target)   # what came before the refused entry was applied: nothing removed
    assert {k: after.get(k) for k in before} == before


def test_a_folder_written_over_the_download_folders_parent_keeps_it(target):
    (target / "run/layers").mkdir(parents=True)
    (target / "run/layers/layer-1").write_text("blob")
    apply_layer(layer(("run", "dir", None), ("run/other", "file", b"o")), target, "layer",
                keep="run/layers")
    assert (target / "run/layers/layer-1").read_text() == "blob"
    assert (target / "run/other").read_text() == "o"
