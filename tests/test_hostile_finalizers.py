"""Hostile finalizers (issue 14): `finalize.yaml` commands of repository packages, and the
`commands` of `cos-setup --root`, run confined to their root with bubblewrap, in a clean
environment and for a limited time; a failing one is run again by the next install.

Each case asserts the clear error, and that nothing outside the root changed (a sentinel)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import yaml

from cosbuild import sandbox
from cosbuild.errors import CosbuildError
from cosbuild.repos import transaction

from .confined import build_escape, outside, small_root
from .test_repository_client import F, Workspace, db, disk, ref

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="finalizers run as root")


@pytest.fixture(scope="module")
def escape(tmp_path_factory) -> Path:
    return build_escape(tmp_path_factory.mktemp("escape"))


@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


@pytest.fixture
def root(tmp_path) -> Path:
    """A small root inside `tmp_path/outside`: the sentinel sits beside it."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/sentinel").write_text("untouched\n")
    return small_root(tmp_path / "outside/root")


def sentinel(root: Path) -> Path:
    return root.parent / "sentinel"


def publish(ws: Workspace, commands: list[str], files: dict | None = None, version="1.0"):
    ws.add("fin", version, files or {"etc/fin": "x\n"}, finalize=commands)
    return ws.publish()


def test_a_static_binary_cannot_break_out_with_chroot(ws, root, escape):
    host = root.parent / "escaped"
    # the control: under a bare chroot, as before, the same program writes on the host
    control = small_root(root.parent / "control")
    shutil.copy2(escape, control / "bin/escape")
    subprocess.run(["chroot", str(control), "/bin/escape", "chroot", str(host)], check=True)
    assert host.read_text() == "escaped\n"
    host.unlink()
    shutil.rmtree(control)
    before = outside(root.parent, root)

    repo = publish(ws, ["/usr/bin/escape mount /usr 2> /var/mount; true",
                        f"/usr/bin/escape chroot {host}"],
                   {"usr/bin/escape": F(escape.read_bytes(), 0o755)})
    with pytest.raises(CosbuildError, match=r"test/fin@1.0: finalizer 2 failed: sh -c "
                                            r"'/usr/bin/escape chroot .*escaped'") as exc:
        transaction.install(root, [ref("test/fin")], [disk(repo)])
    assert "the next install or upgrade runs its finalizers again" in str(exc.value)
    assert not host.exists()
    assert outside(root.parent, root) == before
    log = (root / transaction.FINALIZE_LOG).read_text()
    assert "chroot: operation not permitted" in log   # no CAP_SYS_CHROOT
    assert (root / "var/mount").read_text() == "mount: operation not permitted\n"


def test_no_network_no_host_processes_file_capabilities_only_a_clean_environment(
        ws, root, escape, monkeypatch):
    monkeypatch.setenv("COSBUILD_SECRET", "from-the-caller")
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    server.settimeout(0.5)
    host_process = subprocess.Popen(["sleep", "60"])
    try:
        repo = publish(ws, [
            "export -p > /var/env; echo $$ > /var/pid; cat /proc/net/dev > /var/net; "
            "cat /proc/self/status > /var/status",
            # the same value back: harmless if it ever got through
            "(cat /proc/sys/kernel/printk > /proc/sys/kernel/printk) 2> /var/sysctl; true",
            f"kill -9 {host_process.pid} 2> /var/kill; true",
            f"/usr/bin/escape dial 127.0.0.1:{server.getsockname()[1]} 2> /var/dial; true",
        ], {"usr/bin/escape": F(escape.read_bytes(), 0o755)})
        transaction.install(root, [ref("test/fin")], [disk(repo)])
        with pytest.raises(socket.timeout):
            server.accept()   # the finalizer's loopback is its own
        assert host_process.poll() is None   # not visible in its PID namespace
    finally:
        host_process.kill()
        host_process.wait()
        server.close()
    env = (root / "var/env").read_text()
    assert "COSBUILD_SECRET" not in env
    names = {line.split()[1].split("=")[0] for line in env.splitlines() if line.startswith("export")}
    assert names <= {"PATH", "HOME", "LANG", "PWD"}, env
    assert "HOME='/root'" in env and "LANG='C.UTF-8'" in env
    assert int((root / "var/pid").read_text()) <= 3
    interfaces = [line.split(":")[0].strip() for line in (root / "var/net").read_text().splitlines()[2:]]
    assert interfaces == ["lo"]
    status = dict(line.split(":\t", 1) for line in (root / "var/status").read_text().splitlines())
    # root's file capabilities only: CHOWN DAC_OVERRIDE FOWNER FSETID KILL SETGID SETUID SETFCAP
    files_only = (1 << 0) | (1 << 1) | (1 << 3) | (1 << 4) | (1 << 5) | (1 << 6) | (1 << 7) \
        | (1 << 31)
    assert {cap: int(status[cap], 16) for cap in ("CapEff", "CapPrm", "CapInh", "CapAmb")} == \
        dict.fromkeys(("CapEff", "CapPrm", "CapInh", "CapAmb"), files_only)
    assert status["NoNewPrivs"].strip() == "1"   # no exec gains any back (root, setuid, fcaps)
    assert "Read-only file system" in (root / "var/sysctl").read_text()   # the host's kernel
    assert "No such process" in (root / "var/kill").read_text()
    assert "dial:" in (root / "var/dial").read_text()
    assert db(root)["test/fin"]["finalized"] is True


def test_a_finalizer_may_give_files_of_its_root_to_other_users(ws, root):
    # what `useradd -m` and package scripts do: chown to a uid of the root, setgid folders
    small_root(root, ("chown", "chmod", "mkdir"))
    repo = publish(ws, ["mkdir -p /home/u && chown 1000:1000 /home/u && chmod 2770 /home/u"])
    transaction.install(root, [ref("test/fin")], [disk(repo)])
    st = (root / "home/u").stat()
    assert (st.st_uid, st.st_gid, st.st_mode & 0o7777) == (1000, 1000, 0o2770)
    assert db(root)["test/fin"]["finalized"] is True


def test_a_failed_finalizer_is_run_again_until_it_succeeds(ws, root):
    repo = publish(ws, ["echo run >> /var/runs; test -e /etc/ok"])
    with pytest.raises(CosbuildError, match=r"test/fin@1.0: finalizer 1 failed: "
                                            r"sh -c 'echo run >> /var/runs; test -e /etc/ok'"):
        transaction.install(root, [ref("test/fin")], [disk(repo)])
    assert db(root)["test/fin"]["finalized"] is False
    with pytest.raises(CosbuildError, match="finalizer 1 failed"):
        transaction.install(root, [ref("test/fin")], [disk(repo)])   # nothing new: it runs again
    assert (root / "var/runs").read_text() == "run\nrun\n"
    (root / "etc/ok").write_text("")
    assert transaction.install(root, [ref("test/fin")], [disk(repo)]) == []
    assert db(root)["test/fin"]["finalized"] is True
    transaction.install(root, [ref("test/fin")], [disk(repo)])
    assert (root / "var/runs").read_text() == "run\n" * 3   # done: not run again


def test_an_upgrade_runs_a_failed_finalizer_again(ws, root):
    ws.add("fin", "1.0", {"etc/fin": "1\n"}, finalize=["true"])
    ws.add("fin", "2.0", {"etc/fin": "2\n"}, finalize=["echo run >> /var/runs; test -e /etc/ok"])
    transaction.install(root, [ref("test/fin")], [disk(ws.publish(only=["fin@1.0"]))])
    repo = ws.publish("build2")
    with pytest.raises(CosbuildError, match="test/fin@2.0: finalizer 1 failed"):
        transaction.upgrade(root, [disk(repo)])
    assert (root / "etc/fin").read_text() == "2\n" and db(root)["test/fin"]["finalized"] is False
    (root / "etc/ok").write_text("")
    assert transaction.upgrade(root, [disk(repo)]) == []
    assert (root / "var/runs").read_text() == "run\nrun\n"
    assert db(root)["test/fin"]["finalized"] is True


def test_a_finalizer_that_never_ends_is_stopped_at_the_time_limit(ws, root):
    repo = publish(ws, ["touch /var/started; while :; do :; done"])
    with pytest.raises(CosbuildError, match=r"(?s)test/fin@1.0: finalizer 1 failed: .*"
                                            r"stopped after the time limit of 1 s"):
        transaction.install(root, [ref("test/fin")], [disk(repo)], finalizer_timeout=1)
    assert (root / "var/started").exists()
    assert db(root)["test/fin"]["finalized"] is False
    # nothing of it is left running
    left = [pid for pid in os.listdir("/proc") if pid.isdigit()
            and _root_of(pid) == str(root)]
    assert left == []


def _root_of(pid: str) -> str | None:
    try:
        return os.readlink(f"/proc/{pid}/root")
    except OSError:
        return None


def test_the_finalize_log_is_not_written_through_a_link(ws, root):
    (root / "var/log").mkdir(parents=True)
    (root / transaction.FINALIZE_LOG).symlink_to(sentinel(root))
    transaction.install(root, [ref("test/fin")], [disk(publish(ws, ["echo logged"]))])
    assert sentinel(root).read_text() == "untouched\n"
    assert "logged" in (root / transaction.FINALIZE_LOG).read_text()


@pytest.mark.parametrize("name", ["tmp", "proc", "dev"])
def test_a_mount_point_that_is_a_link_is_refused(ws, root, name):
    (root / name).symlink_to(root.parent)
    before = outside(root.parent, root)
    with pytest.raises(CosbuildError, match=rf"/{name} of .* is not a directory"):
        transaction.install(root, [ref("test/fin")], [disk(publish(ws, ["true"]))])
    assert outside(root.parent, root) == before
    assert db(root)["test/fin"]["finalized"] is False


def test_missing_bubblewrap_is_named(ws, root, tmp_path, monkeypatch):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(CosbuildError, match=r"bwrap is not installed.*apt-get install bubblewrap"):
        transaction.install(root, [ref("test/fin")], [disk(publish(ws, ["true"]))])


# --------------------------------------------------------------------------- cos-setup --root

def cos_setup(*args, env=None):
    return subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", *args],
                          capture_output=True, text=True, env=env)


def test_cos_setup_root_commands_run_in_the_same_sandbox(root, escape, tmp_path):
    shutil.copy2(escape, root / "bin/escape")
    host = root.parent / "escaped"
    f = tmp_path / "c.yaml"
    f.write_text(yaml.safe_dump({"stages": {"default": [
        {"environment": {"WHO": "step"},
         "commands": ["export -p > /env", f"/bin/escape chroot {host}"]}]}}))
    before = outside(root.parent, root)
    proc = cos_setup("--root", str(root), "--file", str(f),
                     env={**os.environ, "COSBUILD_SECRET": "x"})
    assert proc.returncode == 1
    assert f"command failed with exit code 1: /bin/escape chroot {host}" in proc.stderr
    assert "chroot: operation not permitted" in proc.stderr
    assert not host.exists() and outside(root.parent, root) == before
    env = (root / "env").read_text()
    assert "WHO='step'" in env and "COSBUILD_SECRET" not in env


def test_cos_setup_root_command_time_limit(root, tmp_path, monkeypatch, capsys):
    from cosbuild.runtime import setup
    monkeypatch.setattr(setup, "ROOT", str(root))
    monkeypatch.setattr(sandbox, "TIMEOUT", 1)
    assert not setup.run_document("stages: {default: [{commands: ['while :; do :; done']}]}",
                                  "t.yaml", "default")
    assert "stopped after the time limit of 1 s: while :; do :; done" in capsys.readouterr().err


def test_cos_setup_without_bubblewrap_names_the_package(root, tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("stages: {default: [{commands: ['true']}]}\n")
    proc = cos_setup("--root", str(root), "--file", str(f),
                     env={**os.environ, "PATH": str(tmp_path)})
    assert proc.returncode == 1 and "apt-get install bubblewrap" in proc.stderr
