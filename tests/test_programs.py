"""The table of external programs: complete (every program the code, tests and benchmarks
invoke is in it), used by the tool wrapper, and installable on a fresh Debian 12 root."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from cosbuild import programs, tools
from cosbuild.errors import CosbuildError

REPO = Path(__file__).resolve().parent.parent
# calls whose first argument is a command line (or, for the last three, a program name)
RUNNERS = {"run", "Popen", "check_output", "check_call", "call", "stream", "_run", "timed"}
BY_NAME = {"which", "require", "Command"}
ARGV_NAMES = {"argv", "cmd", "command"}


def _program(node) -> str | None:
    """The program of a literal command line `["prog", ...]` (or `["prog", ...] + more`)."""
    if isinstance(node, ast.BinOp):
        return _program(node.left)
    if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
        first = node.elts[0]
        if isinstance(first, ast.Constant) and isinstance(first.value, str):
            return first.value
    return None


def invoked_programs(source: str) -> set[str]:
    """Programs a Python source runs: literal command lines passed to a runner or assigned
    to an argv variable, and names passed to which()/require()."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Call) and node.args:
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            arg = node.args[0]
            if name in RUNNERS:
                found.add(_program(arg))
            elif name in BY_NAME and isinstance(arg, ast.Constant) and isinstance(arg.value, str):
                found.add(arg.value)
        elif isinstance(node, ast.Assign) and any(
                isinstance(t, ast.Name) and t.id in ARGV_NAMES for t in node.targets):
            found.add(_program(node.value))
    return {os.path.basename(p) for p in found if p}


def python_sources() -> list[Path]:
    files = [p for folder in ("cosbuild", "tests", "bench") for p in (REPO / folder).rglob("*.py")]
    # scripts shipped into the OS image (no .py suffix)
    files += [p for p in (REPO / "tree").rglob("*") if p.is_file()
              and p.read_bytes()[:40].startswith(b"#!") and b"python" in p.read_bytes()[:40]]
    return sorted(files)


def test_the_scanner_finds_command_lines():
    source = '''
import subprocess, shutil
run(["systemd-firstboot", *root] + [f"--x={v}"])
from cosbuild import tools
subprocess.run(["sfdisk", "--json", "x"])
tools.run(["/usr/sbin/mke2fs", *args], log=log)
argv = ["tar2sqfs", "--quiet"]
shutil.which("buildah")
subprocess.run(argv_from_elsewhere)
print(["not", "a", "command"])
'''
    assert invoked_programs(source) == {"sfdisk", "mke2fs", "tar2sqfs", "buildah",
                                        "systemd-firstboot"}


def test_every_invoked_program_is_in_the_table():
    seen: dict[str, list[str]] = {}
    for path in python_sources():
        for program in invoked_programs(path.read_text()):
            seen.setdefault(program, []).append(str(path.relative_to(REPO)))
    # the scan really reaches the pipeline's own tools
    assert {"buildah", "mmdebstrap", "tar2sqfs", "sfdisk", "qemu-img", "mke2fs"} <= set(seen)
    missing = {p: where for p, where in seen.items() if p not in programs.BY_NAME}
    assert not missing, f"add these to cosbuild/programs.py PROGRAMS: {missing}"


def test_every_program_of_the_table_is_used():
    """No stale rows: each program is invoked, or (a file, a server binary) named in the code."""
    sources = [path.read_text() for path in python_sources()]
    invoked = set().union(*(invoked_programs(text) for text in sources))
    named = {node.value for text in sources for node in ast.walk(ast.parse(text))
             if isinstance(node, ast.Constant) and isinstance(node.value, str)}
    unused = [p.name for p in programs.PROGRAMS
              if os.path.basename(p.name) not in invoked and not any(p.name in n for n in named)]
    assert not unused, f"remove these from cosbuild/programs.py or use them: {unused}"


def test_the_table_names_each_program_once():
    names = [os.path.basename(p.name) for p in programs.PROGRAMS]
    assert len(names) == len(set(names))
    assert all(p.package and p.needed_by for p in programs.PROGRAMS)


def test_a_missing_library_is_installed_and_checked(monkeypatch, capsys):
    """go resolves but a library package it needs is not installed: install-deps asks for
    that package and the final check names it."""
    monkeypatch.setattr(programs, "package_installed",
                        lambda package: package != "golang-github-imdario-mergo-dev")
    assert "golang-github-imdario-mergo-dev" in programs.missing_packages()
    assert programs.BY_NAME["go"].missing_libraries() == ["golang-github-imdario-mergo-dev"]
    assert programs.main(["check"]) == 1
    assert ("golang-github-imdario-mergo-dev: not installed (a library go needs"
            in capsys.readouterr().err)


def test_a_missing_program_names_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with tools.TaskLog(tmp_path / "log") as log:
        with pytest.raises(CosbuildError) as exc:
            tools.run(["sfdisk", "--version"], log=log)
        assert str(exc.value).startswith("sfdisk is not installed")
        assert "apt-get install fdisk" in exc.value.hint and "doit disk" in exc.value.hint
        with pytest.raises(CosbuildError) as exc:
            with tools.stream(["tar2sqfs", "out"], log=log):
                pass
        assert "apt-get install squashfs-tools-ng" in exc.value.hint
    assert "install the package" in programs.install_hint("no-such-tool")


def test_run_feeds_input_and_stream_pipes_and_fails_clearly(tmp_path):
    out = tmp_path / "out"
    with tools.TaskLog(tmp_path / "log") as log:
        assert tools.run(["sh", "-c", "tr a-z A-Z"], log=log, capture=True, input="abc\n") == "ABC\n"
        with tools.stream(["sh", "-c", f"cat > {out}"], log=log) as pipe:
            pipe.write(b"x" * 1_000_000)
        assert out.stat().st_size == 1_000_000
        with pytest.raises(CosbuildError) as exc:
            with tools.stream(["sh", "-c", "echo broken; exit 3"], log=log, what="squash") as pipe:
                pipe.write(b"x" * 1_000_000)   # the tool never reads: a broken pipe, then its status
        assert "squash: command failed with exit code 3" in str(exc.value)
        assert "broken" in str(exc.value)


@pytest.mark.skipif(os.geteuid() != 0, reason="install-deps installs as root")
def test_install_deps_installs_what_the_table_misses(tmp_path):
    """Every host program resolves through a stub folder but sfdisk: install-deps asks a
    stub apt-get for fdisk (and for the packages of any table file missing here)."""
    stubs = tmp_path / "bin"
    stubs.mkdir()
    for p in programs.PROGRAMS:
        if p.host and not p.name.startswith("/") and p.name != "sfdisk":
            (stubs / p.name).symlink_to("/bin/true")
    asked = tmp_path / "asked"
    (stubs / "apt-get").write_text(f'#!/bin/sh\necho "$@" >> {asked}\n')
    (stubs / "apt-get").chmod(0o755)
    path = ":".join([str(stubs), *(d for d in os.environ["PATH"].split(":")
                                   if not (Path(d) / "sfdisk").exists())])
    proc = subprocess.run([str(REPO / "scripts/install-deps")], env={**os.environ, "PATH": path},
                          capture_output=True, text=True)
    # the final check still fails: the stub apt-get installed nothing
    assert proc.returncode != 0 and "sfdisk: not found (package fdisk" in proc.stderr
    install = [line.split() for line in asked.read_text().splitlines() if " install " in f" {line} "]
    files = {p.package for p in programs.PROGRAMS
             if p.host and p.name.startswith("/") and not os.path.exists(p.name)}
    libraries = {lib for p in programs.PROGRAMS if p.host for lib in p.missing_libraries()}
    assert len(install) == 1 and set(install[0][4:]) == {"fdisk", *files, *libraries}


@pytest.mark.integration
def test_install_deps_on_a_fresh_debian_root(tmp_path):
    """A fresh Debian 12 root with only the repository copied in: install-deps, then every
    program of the table resolves."""
    if shutil.which("mmdebstrap") is None:
        pytest.fail("mmdebstrap is missing: run `make deps`")
    root = tmp_path / "root"
    copy = "copy-in " + " ".join(str(REPO / p) for p in ("cosbuild", "scripts")) + " /repo"
    proc = subprocess.run(
        ["mmdebstrap", "--mode=root", "--variant=minbase", "--quiet",
         "--customize-hook=mkdir -p \"$1/repo\"", f"--customize-hook={copy}",
         "--customize-hook=chroot \"$1\" /repo/scripts/install-deps",
         "--customize-hook=chroot \"$1\" sh -c 'cd /repo && python3 -m cosbuild.programs check'",
         "bookworm", str(root), "http://deb.debian.org/debian"],
        capture_output=True, text=True, timeout=1800)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert (root / "usr/sbin/sfdisk").exists() and (root / "usr/bin/qemu-img").exists()
