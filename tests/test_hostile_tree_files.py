"""Hostile tree files (issue #14): special files, huge or non-UTF-8 files, symlinks out of the
tree and symlink loops are one clear error naming the file, quickly; nothing outside is read
into a spec or written."""

from __future__ import annotations

import os
import socket
import stat
import time

import pytest

from .conftest import BASIC
from .hostile import deadline, files_outside_build  # noqa: F401 (a fixture)

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def _deadline(deadline):
    """Opening a FIFO blocks: every case here runs under the deadline."""


@pytest.fixture
def outside(tmp_path_factory):
    """A folder beside the project, with a secret file that must not reach a spec."""
    folder = tmp_path_factory.mktemp("outside")
    (folder / "secret.yaml").write_text("image: secret-image\nsteps: [echo secret]\n")
    (folder / "values.yaml").write_text("flavor: outside\n")
    return folder


def _fifo(path):
    os.mkfifo(path)


def _socket(path):
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    return server   # kept open by the caller's list until the test ends


def _char_device(path):
    try:
        os.mknod(path, 0o600 | stat.S_IFCHR, os.makedev(1, 3))   # like /dev/null
    except PermissionError:
        pytest.skip("creating a device node needs root")


def _link(target):
    return lambda path, outside: os.symlink(str(target).format(outside=outside), path)


def _write(data: bytes):
    return lambda path, outside: path.write_bytes(data)


# id -> (file in the project, how it is made (path, outside), fragments of the error)
CASES = {
    "FIFO definition.yaml": ("tree/app/definition.yaml", lambda p, o: _fifo(p),
                             ["tree/app/definition.yaml: not a regular file (a FIFO)"]),
    "FIFO build.yaml": ("tree/app/build.yaml", lambda p, o: _fifo(p),
                        ["tree/app/build.yaml: not a regular file (a FIFO)"]),
    "FIFO finalize.yaml": ("tree/app/finalize.yaml", lambda p, o: _fifo(p),
                           ["tree/app/finalize.yaml: not a regular file (a FIFO)"]),
    "FIFO template": ("tree/templates/shared.yaml", lambda p, o: _fifo(p),
                      ["tree/templates/shared.yaml: not a regular file (a FIFO)"]),
    "FIFO collection.yaml": ("tree/col/collection.yaml", lambda p, o: _fifo(p),
                             ["tree/col/collection.yaml: not a regular file (a FIFO)"]),
    "socket definition.yaml": ("tree/app/definition.yaml", lambda p, o: SOCKETS.append(_socket(p)),
                               ["tree/app/definition.yaml: not a regular file (a socket)"]),
    "device build.yaml": ("tree/app/build.yaml", lambda p, o: _char_device(p),
                          ["tree/app/build.yaml: not a regular file (a character device)"]),
    "definition linked to /dev/zero": ("tree/app/definition.yaml", _link("/dev/zero"),
                                       ["tree/app/definition.yaml: a symlink to /dev/zero, "
                                        "outside the tree"]),
    "build.yaml linked outside": ("tree/app/build.yaml", _link("{outside}/secret.yaml"),
                                  ["tree/app/build.yaml: a symlink to", "outside the tree"]),
    "template linked outside": ("tree/templates/host.yaml", _link("/etc/hostname"),
                                ["tree/templates/host.yaml: a symlink to /etc/hostname"]),
    "templates folder linked outside": ("tree/templates", _link("{outside}"),
                                        ["tree/templates/secret.yaml: a symlink to",
                                         "outside the tree"]),
    "huge definition.yaml": ("tree/app/definition.yaml",
                             _write(b"name: app\ncategory: app\nversion: '0.1'\n#" + b"x" * 9 * MIB),
                             ["tree/app/definition.yaml: file larger than 8 MiB"]),
    "huge template": ("tree/templates/big.yaml", _write(b"#" * 9 * MIB),
                      ["tree/templates/big.yaml: file larger than 8 MiB"]),
    "non-UTF-8 definition.yaml": ("tree/app/definition.yaml",
                                  _write(b"name: app\ncategory: app\nversion: '0.1'\n# \xff\xfe\n"),
                                  ["tree/app/definition.yaml: not UTF-8 text (byte 41)"]),
    "non-UTF-8 build.yaml": ("tree/app/build.yaml", _write(b"image: x\n# \xc3\x28\n"),
                             ["tree/app/build.yaml: not UTF-8 text (byte 11)"]),
    "branching symlink loop in a package": (
        "tree/app/a", lambda p, o: (os.symlink("..", p), os.symlink("..", p.parent / "b"),
                                    os.symlink(".", p.parent / "c")),
        ["tree/app/b: folder", "is reached twice through symlinks"]),
}
SOCKETS: list[socket.socket] = []


def _package_of(target: str) -> str:
    """The package a broken file belongs to (a template belongs to all of them)."""
    return {"app": "app/app", "col": "col/c"}.get(target.split("/")[1], "distro/base")


@pytest.mark.parametrize("case", sorted(CASES))
def test_hostile_tree_file_is_refused(case, project, run_cli, outside):
    target, make, expected = CASES[case]
    files = {**BASIC, "tree/templates/ok.yaml": "# shared\n", "tree/col/collection.yaml":
             "packages:\n  - {name: c, category: col, version: '1'}\n"}
    project({k: v for k, v in files.items() if k != target})
    path = project.path / target
    path.parent.mkdir(parents=True, exist_ok=True)
    if case == "templates folder linked outside":
        os.rename(project.path / "tree/templates", project.path / "old-templates")
    make(path, outside)
    before = files_outside_build(project.path)
    outside_before = sorted(os.listdir(outside))
    try:
        # render does not walk the build context; graph does
        second = ["graph", "app/app"] if "loop" in case else ["render", _package_of(target)]
        for command in (["validate"], second):
            start = time.monotonic()
            code, out, err = run_cli(*command)
            assert time.monotonic() - start < 20
            assert code == 1, (command, out[-300:], err[-300:])
            assert "Traceback" not in err and err.startswith("cosbuild: error: ")
            for fragment in expected:
                assert fragment in err, f"{command}: {fragment!r} not in {err[:600]!r}"
            assert "secret" not in out
    finally:
        for server in SOCKETS:
            server.close()
        SOCKETS.clear()
    assert files_outside_build(project.path) == before
    assert sorted(os.listdir(outside)) == outside_before


def test_symlink_inside_the_tree_is_read(project, run_cli):
    """Packages of one tree may share a file through a link: it stays inside the tree."""
    project(BASIC)
    shared = project.path / "tree/app/build.yaml"
    os.makedirs(project.path / "tree/app2")
    (project.path / "tree/app2/definition.yaml").write_text("name: app2\ncategory: app\nversion: '1'\n")
    os.symlink(os.path.relpath(shared, project.path / "tree/app2"), project.path / "tree/app2/build.yaml")
    code, out, err = run_cli("render", "app/app2")
    assert code == 0, err
    assert "echo app" in out


@pytest.mark.parametrize("kind", ["FIFO", "huge"])
def test_values_file_must_be_a_regular_file_of_a_sane_size(kind, project, run_cli, tmp_path_factory):
    """--values may name a file anywhere, but a regular one of at most 8 MiB."""
    project(BASIC)
    values = tmp_path_factory.mktemp("elsewhere") / "values.yaml"
    os.mkfifo(values) if kind == "FIFO" else values.write_bytes(b"#" * 9 * MIB)
    code, out, err = run_cli("--values", str(values), "validate")
    assert code == 1 and "Traceback" not in err
    assert err.startswith(f"cosbuild: error: {values}: ")
    assert ("not a regular file (a FIFO)" if kind == "FIFO" else "file larger than 8 MiB") in err


def test_values_file_outside_the_project_is_read(project, run_cli, outside):
    project({**BASIC, "tree/base/build.yaml": "image: debian:{{ values.flavor }}\nsteps: [echo]\n"})
    code, out, err = run_cli("--values", str(outside / "values.yaml"), "render", "distro/base")
    assert code == 0, err
    assert "debian:outside" in out
