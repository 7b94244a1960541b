"""Hostile writes into a root (issue 14): one path rule (cosbuild/rootpath.py) for
`cos-setup --root`, the repository client, container layers and image staging. Each root
sits in a folder with a sentinel: nothing outside the root may change, and a path that
climbs out is a clear error (cos-setup: the step is logged, the others run, exit 1)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosbuild import rootpath
from cosbuild.arches import ARCHES
from cosbuild.errors import CosbuildError
from cosbuild.images.layout import boot_files
from cosbuild.oci.layers import apply_layer
from cosbuild.repos import transaction
from cosbuild.repos.resolve import Installed

from .confined import outside
from .hostile import layer
from .test_repository_client import Workspace, disk, ref


@pytest.fixture
def root(tmp_path) -> Path:
    """tmp/outside/root with a passwd and group, beside tmp/outside/sentinel."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/sentinel").write_text("untouched\n")
    root = tmp_path / "outside/root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "evil:x:1000:1000::/home/evil:/bin/sh\n"
                                     "climber:x:1001:1001::/../../../outside-home:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    return root


def cos_setup(root: Path, steps: list, tmp_path: Path):
    """`cos-setup --root ROOT --file F` and what changed outside the root meanwhile."""
    f = tmp_path / "steps.yaml"
    f.write_text(yaml.safe_dump({"stages": {"default": steps}}))
    before = outside(tmp_path, root)
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--root", str(root),
                           "--file", str(f)], capture_output=True, text=True)
    after = outside(tmp_path, root)
    return proc, {k: (before.get(k), after.get(k)) for k in {*before, *after}
                  if before.get(k) != after.get(k)}


# --------------------------------------------------------------------------- cos-setup --root

AFTER = {"files": [{"path": "/etc/after", "content": "ran"}]}   # a later step still runs

CLIMBING = {
    "files": {"files": [{"path": "../sentinel", "content": "x"}]},
    "files, absolute": {"files": [{"path": "/../../sentinel", "content": "x"}]},
    "directories": {"directories": [{"path": "/../newdir", "permissions": 0o777}]},
    "environment_file": {"environment": {"A": "1"}, "environment_file": "../../env"},
    "dns.path": {"dns": {"nameservers": ["1.1.1.1"], "path": "/etc/../../resolv.conf"}},
    "ensure_entities": {"ensure_entities": [{"path": "../sentinel", "entity": "x:x:1:1::/:"}]},
    "delete_entities": {"delete_entities": [{"path": "../sentinel", "entity": "untouched"}]},
    "downloads": {"downloads": [{"url": "file:///etc/hostname", "path": "/../../dl"}]},
    "authorized_keys (home from /etc/passwd)": {"authorized_keys": {"climber": ["ssh-ed25519 A"]}},
    "users (home from /etc/passwd)": {"users": {"climber": {"ssh_authorized_keys": ["k"]}}},
}


@pytest.mark.parametrize("case", CLIMBING)
def test_a_path_climbing_out_of_the_root_is_an_error(root, tmp_path, case):
    proc, changed = cos_setup(root, [CLIMBING[case], AFTER], tmp_path)
    assert proc.returncode == 1
    assert "leads out of the root" in proc.stderr and str(root) in proc.stderr, proc.stderr
    assert changed == {}
    assert (root / "etc/after").read_text() == "ran"


def test_links_in_the_root_are_followed_inside_it_only(root, tmp_path):
    """Absolute and relative links of the root, to the folder beside it."""
    host = root.parent
    (root / "var").mkdir()
    (root / "var/run").symlink_to("/run")
    (root / "var/outside").symlink_to(host)                   # absolute: the host's path
    (root / "etc/up").symlink_to("../../../../../../../../" + str(host).lstrip("/"))
    (root / "home").mkdir()
    (root / "home/evil").symlink_to(host)                     # a home directory
    (root / "etc/hostname").symlink_to(host / "sentinel")     # the target itself
    (root / "etc/motd.cos-setup").symlink_to(host / "sentinel")   # the old temporary name
    (root / "oem").symlink_to(host / "oem")
    proc, changed = cos_setup(root, [
        {"files": [{"path": "/var/run/pid", "content": "1"},
                   {"path": "/var/outside/sentinel", "content": "over"},
                   {"path": "/etc/up/sentinel2", "content": "over"},
                   {"path": "/etc/motd", "content": "hello"}]},
        {"directories": [{"path": "/var/outside", "permissions": 0o700}]},
        {"hostname": "box"},
        {"authorized_keys": {"evil": ["ssh-ed25519 AAAA"]}},
        {"dns": {"nameservers": ["9.9.9.9"], "path": "/var/outside/resolv.conf"}},
        {"environment": {"A": "1"}, "environment_file": "/var/outside/env"},
        {"ensure_entities": [{"path": "/var/outside/passwd", "entity": "a:x:1:1::/:"}]},
    ], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert changed == {}
    assert oct(os.stat(host).st_mode & 0o777) != "0o700"
    inside = root / str(host).lstrip("/")
    assert (root / "run/pid").read_text() == "1"
    assert (inside / "sentinel").read_text() == "over"
    assert (inside / "sentinel2").read_text() == "over"
    assert (inside / ".ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA\n"
    assert {p.name for p in inside.iterdir()} >= {"resolv.conf", "env", "passwd"}
    assert (root / "etc/hostname").read_text() == "box\n" and not (root / "etc/hostname").is_symlink()
    assert (root / "etc/motd").read_text() == "hello"


def test_oem_folders_and_files_are_read_inside_the_root(root, tmp_path):
    host = root.parent
    (host / "oem").mkdir()
    (host / "oem/10_host.yaml").write_text("stages: {boot: [{files: [{path: /from-host, content: x}]}]}\n")
    (root / "oem").symlink_to(host / "oem")                   # the host's folder, by link
    (root / "system/oem").mkdir(parents=True)
    (root / "system/oem/20_link.yaml").symlink_to(host / "oem/10_host.yaml")
    (root / "usr/local").mkdir(parents=True)
    (root / "usr/local/cloud-config").symlink_to("/system/oem")   # inside: applied
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--root", str(root),
                           "boot"], capture_output=True, text=True)
    assert proc.returncode == 1   # the link to the host file does not resolve inside
    assert "20_link.yaml: cannot read" in proc.stderr
    assert not (root / "from-host").exists()


def test_a_malformed_oem_file_does_not_stop_the_stage(root, tmp_path):
    oem = root / "system/oem"
    oem.mkdir(parents=True)
    bad = {
        "20_list.yaml": ("- just\n- a list\n", "expected a mapping at the top level, got a list"),
        "21_stages.yaml": ("stages: [boot]\n", "stages: expected a mapping of stage names"),
        "22_steps.yaml": ("stages: {boot: run this}\n", "stages.boot: expected a list of steps"),
        "23_step.yaml": ("stages: {boot: [just a string]}\n", "stages.boot[1]: expected a step (a mapping)"),
        "24_files.yaml": ("stages: {boot: [{files: /etc/x}]}\n", "stages.boot[1].files: expected a list, got a"),
        "25_entry.yaml": ("stages: {boot: [{files: [/etc/x]}]}\n", "files[1]: expected a mapping, got a string"),
        "26_if.yaml": ("stages: {boot: [{if: [1], files: []}]}\n", "stages.boot[1].if: expected a shell test"),
        "27_classic.yaml": ("#cloud-config\nruncmd: rm -rf /\n", "runcmd: expected a list, got a string"),
        "28_latin1.yaml": (b"stages: {boot: [{name: \xe9}]}\n", "cannot read"),
        "29_yaml.yaml": ("stages: {boot: [unclosed\n", "invalid YAML"),
        "30_command.yaml": ("stages: {boot: [{commands: [[rm, -rf]]}]}\n", "commands[1]: expected a string, got a list"),
        "31_keys.yaml": ("stages: {boot: [{authorized_keys: {root: 'ssh-rsa AAAA'}}]}\n",
                         "authorized_keys.root: expected a list, got a string"),
        "32_entity.yaml": ("stages: {boot: [{ensure_entities: [{path: /etc/passwd}]}]}\n",
                           "ensure_entities[1]: missing 'entity'"),
    }
    for name, (text, _) in bad.items():
        (oem / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    os.mkfifo(oem / "33_fifo.yaml")   # would block a reader
    for name in ("10_good.yaml", "90_good.yaml"):
        (oem / name).write_text(f"stages: {{boot: [{{files: [{{path: /{name}, content: ok}}]}}]}}\n")
    before = outside(tmp_path, root)
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--root", str(root),
                           "boot"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    for name, (_, reason) in bad.items():
        line = next((l for l in proc.stderr.splitlines() if name in l and reason in l), None)
        assert line, f"{name}: {reason!r} not in:\n{proc.stderr}"
    assert "33_fifo.yaml" in proc.stderr and "not a regular file" in proc.stderr
    assert (root / "10_good.yaml").read_text() == "ok" and (root / "90_good.yaml").read_text() == "ok"
    assert not (root / "etc/x").exists()
    assert outside(tmp_path, root) == before


# --------------------------------------------------------------------------- the rule itself

def test_link_loops_and_files_in_the_way_are_clear_errors(root):
    (root / "loop").symlink_to("loop")
    with pytest.raises(CosbuildError, match="too many symbolic links resolving loop/x"):
        rootpath.write_file(root, "loop/x", b"x")
    with pytest.raises(CosbuildError, match=r"/etc/passwd in .* is not a directory"):
        rootpath.write_file(root, "etc/passwd/x", b"x")
    with pytest.raises(CosbuildError, match="names the root"):
        rootpath.write_file(root, "etc/..", b"x")


def test_dotdot_in_a_link_stops_at_the_root(root):
    (root / "etc/deep").symlink_to("../../../../..")
    assert rootpath.resolve(root, "etc/deep/etc/passwd") == root / "etc/passwd"
    assert rootpath.read_bytes(root, "/etc/deep/etc/passwd").startswith(b"root:")


# --------------------------------------------------------------------------- the client

@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


def test_the_package_database_is_written_inside_the_root(ws, root):
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/cosbuild").symlink_to(root.parent)     # planted: the host's folder
    before = outside(root.parent, root)
    ws.add("pkg", files={"etc/pkg": "x\n"})
    transaction.install(root, [ref("test/pkg")], [disk(ws.publish())])
    assert outside(root.parent, root) == before
    assert Installed.load(root).packages["test/pkg"]["version"] == "1.0"
    assert (root / str(root.parent).lstrip("/") / "installed.yaml").is_file()


def test_a_package_may_not_hold_the_transaction_folder(ws, root):
    ws.add("pkg", files={f"{transaction.TRANSACTION}/journal.yaml": "db: ''\n"})
    with pytest.raises(CosbuildError, match=r"refusing to install test/pkg@1.0: it has "
                                            r"/.cosbuild-transaction/journal.yaml"):
        transaction.install(root, [ref("test/pkg")], [disk(ws.publish())])
    assert not (root / transaction.TRANSACTION).exists()


def test_a_planted_transaction_link_is_refused(ws, root):
    host = root.parent / "planted"
    (host / "rootfs/etc").mkdir(parents=True)
    (host / "rootfs/etc/secret").write_text("host\n")
    (host / "journal.yaml").write_text("db: 'packages: {}'\nremove: []\n")
    (root / transaction.TRANSACTION).symlink_to(host)
    before = outside(root.parent, root)
    ws.add("pkg", files={"etc/pkg": "x\n"})
    with pytest.raises(CosbuildError, match="is a symbolic link, not cosbuild's transaction folder"):
        transaction.install(root, [ref("test/pkg")], [disk(ws.publish())])
    assert outside(root.parent, root) == before and not (root / "etc/secret").exists()


# --------------------------------------------------------------------------- layers and staging

def test_layer_links_are_followed_inside_the_root(root):
    host = root.parent
    before = outside(host, root)
    apply_layer(layer(("lib", "symlink", str(host)), ("lib/sentinel", "file", b"over"),
                      ("up", "symlink", "../../../../../../.." + str(host)),
                      ("up/other", "file", b"over"),
                      ("s", "symlink", str(host / "sentinel")), ("hard", "hardlink", "s")),
                root, "layer")
    assert outside(host, root) == before and os.stat(host / "sentinel").st_nlink == 1
    inside = root / str(host).lstrip("/")
    assert (inside / "sentinel").read_bytes() == b"over" and (inside / "other").exists()
    assert (root / "hard").is_symlink()   # a link to the link itself, as container tools do


def test_a_layer_may_not_touch_the_download_folder(root):
    (root / ".layers").mkdir()
    (root / ".layers/layer-1").write_bytes(b"blob")
    for entries in ([(".layers", "symlink", "/etc")], [(".layers/layer-1", "file", b"x")]):
        with pytest.raises(CosbuildError, match=r"would change \.layers, where the layers are"):
            apply_layer(layer(*entries), root, "layer", keep=".layers")
    apply_layer(layer((".wh..wh..opq", "file", b""), ("new", "file", b"n")), root, "layer",
                keep=".layers")   # an opaque root hides the rest, not the downloads
    assert (root / ".layers/layer-1").read_bytes() == b"blob" and not (root / "etc").exists()


def test_overlay_copy_follows_the_roots_links_inside_it(root, tmp_path):
    overlay = tmp_path / "overlay"
    (overlay / "etc/conf").mkdir(parents=True)
    (overlay / "etc/conf/a").write_text("a")
    (overlay / "etc/conf/link").symlink_to("a")
    (root / "etc/conf").symlink_to(root.parent)          # a package put this link there
    before = outside(root.parent, root)
    rootpath.copy_tree(overlay, root)
    assert outside(root.parent, root) == before
    inside = root / str(root.parent).lstrip("/")
    assert (inside / "a").read_text() == "a" and os.readlink(inside / "link") == "a"


def test_boot_files_are_not_taken_from_the_host(root):
    host = root.parent / "grub"
    (host / "EFI/BOOT").mkdir(parents=True)
    (host / "grub.cfg").write_text("host menu")
    (host / "EFI/BOOT/BOOTX64.EFI").write_text("host efi")
    (root / "usr/lib/cos").mkdir(parents=True)
    (root / "usr/lib/cos/grub").symlink_to(host)
    with pytest.raises(CosbuildError, match="boot_files: /usr/lib/cos/grub/grub.cfg is not in "
                                            "the system root"):
        boot_files(root, "/usr/lib/cos/grub", ARCHES["amd64"])
    with pytest.raises(CosbuildError, match="boot_files: path .* leads out of the root"):
        boot_files(root, "/../../grub", ARCHES["amd64"])
