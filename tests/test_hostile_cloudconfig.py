"""Hostile cloud-config (issue 32): one checker (runtime/cloudconfig.py), derived from the
declaration of the format, for `cosbuild validate` and `cos-setup`; names and values given to
programs never become options; `systemd_firstboot` takes its known keys only. Each document
is applied with `cos-setup --root ROOT --file F` in a root beside a sentinel: a refused step
changes nothing (inside or outside the root), names its file and key, and the next step runs."""

from __future__ import annotations

import base64
import gzip
import re
import subprocess
import sys

import pytest
import yaml
from hypothesis import given

from cosbuild.errors import CosbuildWarning
from cosbuild.runtime import cloudconfig, installer, setup

from .confined import outside
from .test_fuzz import FUZZ, steps as fuzz_steps, values

AFTER = {"files": [{"path": "/etc/after", "content": "ran"}]}   # a later step still runs


@pytest.fixture
def root(tmp_path):
    """tmp/outside/root with users and groups, beside tmp/outside/sentinel."""
    (tmp_path / "outside").mkdir()
    (tmp_path / "outside/sentinel").write_text("untouched\n")
    root = tmp_path / "outside/root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "alice:x:1000:1000::/home/alice:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:\n")
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nalice:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nalice:*::\nstaff:*::\n")
    return root


@pytest.fixture
def programs(monkeypatch):
    """The command lines cos-setup would run (none is run)."""
    calls = []
    monkeypatch.setattr(setup, "run", calls.append)
    return calls


def apply(root, steps, tmp_path, capsys, stage="default"):
    """`cos-setup --root ROOT --file F` (in-process): its status, its log and what changed
    outside the root (the file itself is written first)."""
    f = tmp_path / "steps.yaml"
    f.write_text(yaml.safe_dump({"stages": {stage: steps}}, sort_keys=False))
    before = outside(tmp_path, root)
    try:
        status = setup.main(["--root", str(root), "--file", str(f)])
    finally:
        setup.ROOT = "/"
    assert outside(tmp_path, root) == before
    err = capsys.readouterr().err
    assert "Traceback" not in err
    return status, err


def errors_of(doc, classic=False):
    text = ("#cloud-config\n" if classic else "") + yaml.safe_dump(doc)
    return [e for e in cloudconfig.check(text, "50_x.yaml") if not isinstance(e, CosbuildWarning)]


def names(line, file, key, message):
    """`line` is the finding `message` at file:N: key."""
    return re.search(rf"{file}\d+: stages\.default\[1\]\.{re.escape(key)}: .*{re.escape(message)}",
                     line) is not None


def refused(root, step, key, message, tmp_path, capsys):
    """`step` is refused by validate and by cos-setup, with the same message naming the
    file, stage and key; nothing of it is applied; the next step runs."""
    errors = errors_of({"stages": {"default": [step]}})
    assert [names(str(e), "50_x.yaml:", key, message) for e in errors] == [True], errors
    status, err = apply(root, [step, AFTER], tmp_path, capsys)
    assert status == 1
    assert [names(e, "steps.yaml:", key, message) for e in err.splitlines()] == [True], err
    assert (root / "etc/after").read_text() == "ran"
    return err


# --------------------------------------------------------------------------- systemd_firstboot

@pytest.mark.parametrize("key, value", [
    ("root", "OUTSIDE"),                  # the hole: a second --root, the last one wins
    ("image", "/dev/sda"),
    ("root_password_file", "/etc/shadow"),   # reads the host's file
    ("copy", "yes"), ("copy_root_password", "yes"), ("prompt", "yes"), ("force", "yes"),
    ("setup_machine_id", "yes"), ("delete_root_password", "yes"), ("welcome", "no"),
    ("Keymap", "us"), ("locale-messages", "C"), ("keymap --root", "/x"), ("", "x"),
])
def test_firstboot_takes_its_known_keys_only(root, tmp_path, capsys, programs, key, value):
    value = value.replace("OUTSIDE", str(tmp_path / "outside"))
    refused(root, {"systemd_firstboot": {"keymap": "us", key: value}},
            f"systemd_firstboot.{key}", f"unknown systemd_firstboot key '{key}'", tmp_path, capsys)
    assert programs == []   # not even the known keys are applied
    assert not (root / "etc/vconsole.conf").exists()


@pytest.mark.parametrize("key, value, message", [
    ("keymap", "us\n--root=/x", "must be one line"),
    ("timezone", "UTC\x00--root=/", "must be one line"),
    ("locale", 1, "expected a string, got a number"),
    ("root_password", ["a", "b"], "expected a string, got a list"),
    ("hostname", "-x", "is not a host name"),
    ("hostname", "a b", "is not a host name"),
    ("machine_id", "--root=/x", "is not a machine ID"),
    ("machine_id", "0123456789ABCDEF0123456789abcdef", "is not a machine ID"),
])
def test_firstboot_values_are_checked(root, tmp_path, capsys, programs, key, value, message):
    refused(root, {"systemd_firstboot": {key: value}}, f"systemd_firstboot.{key}", message,
            tmp_path, capsys)
    assert programs == []


def test_firstboot_values_are_never_options(root, tmp_path, capsys, programs):
    status, _ = apply(root, [{"systemd_firstboot": {
        "keymap": "--root=/", "root_shell": "-x", "root_password_hashed": "--force",
        "locale_messages": "C.UTF-8", "machine_id": "0123456789abcdef0123456789abcdef"}}],
        tmp_path, capsys)
    assert status == 0
    assert programs == [["systemd-firstboot", f"--root={root}", "--keymap=--root=/",
                         "--root-shell=-x", "--root-password-hashed=--force",
                         "--locale-messages=C.UTF-8",
                         "--machine-id=0123456789abcdef0123456789abcdef"]]


def test_every_firstboot_key_is_an_option_of_systemd_firstboot():
    """Declared once: each key, `_` as `-`, is a value option of the installed tool."""
    help_text = subprocess.run(["systemd-firstboot", "--help"], capture_output=True,
                               text=True).stdout.lower()
    options = set(re.findall(r"--([a-z-]+)=", help_text))
    assert {k.replace("_", "-") for k in cloudconfig.FIRSTBOOT_KEYS} <= options
    assert not {"root", "image", "root-password-file"} & set(cloudconfig.FIRSTBOOT_KEYS)


def test_firstboot_applies_inside_the_root(root, tmp_path, capsys):
    status, err = apply(root, [{"systemd_firstboot": {
        "keymap": "de", "timezone": "UTC", "locale": "C.UTF-8", "hostname": "box",
        "machine_id": "0123456789abcdef0123456789abcdef"}}], tmp_path, capsys)
    assert status == 0, err
    assert "KEYMAP=de" in (root / "etc/vconsole.conf").read_text()
    assert (root / "etc/hostname").read_text() == "box\n"
    assert (root / "etc/machine-id").read_text() == "0123456789abcdef0123456789abcdef\n"


# --------------------------------------------------------------------------- names given to programs

@pytest.mark.parametrize("step, key, message", [
    ({"users": {"-o": {}}}, "users.-o", "'-o' is not a name"),
    ({"users": {"--root=/tmp": {}}}, "users.--root=/tmp", "is not a name"),
    ({"users": {"a b": {}}}, "users.a b", "is not a name"),
    ({"users": {"bob": {"groups": ["-x"]}}}, "users.bob.groups[1]", "'-x' is not a name"),
    ({"users": {"bob": {"groups": ["staff,root"]}}}, "users.bob.groups[1]", "is not a name"),
    ({"users": {"bob": {"groups": "staff"}}}, "users.bob.groups", "expected a list, got a string"),
    ({"users": {"bob": {"uid": "-1"}}}, "users.bob.uid", "expected a number, got a string"),
    ({"users": {"bob": {"uid": -1}}}, "users.bob.uid", "-1 is not a user or group id"),
    ({"users": {"bob": {"uid": True}}}, "users.bob.uid", "expected a number, got a boolean"),
    ({"users": {"bob": {"passwd": "x:0:0"}}}, "users.bob.passwd", "may not hold ':'"),
    ({"users": {"bob": {"shell": "/bin/sh\nroot"}}}, "users.bob.shell", "may not hold ':'"),
    ({"users": {"bob": ["a"]}}, "users.bob", "expected a mapping, got a list"),
    ({"users": {"bob": {"ssh_authorized_keys": "ssh-rsa A"}}}, "users.bob.ssh_authorized_keys",
     "expected a list, got a string"),
    ({"authorized_keys": {"-x": ["k"]}}, "authorized_keys.-x", "is not a name"),
    ({"authorized_keys": {"alice": ["k\ncommand=x k2"]}}, "authorized_keys.alice[1]",
     "must be one line"),
    ({"systemctl": {"enable": ["-h"]}}, "systemctl.enable[1]", "'-h' is not a name"),
    ({"systemctl": {"mask": ["--root=/"]}}, "systemctl.mask[1]", "is not a name"),
    ({"systemctl": {"disable": ["/etc/shadow"]}}, "systemctl.disable[1]", "is not a name"),
    ({"systemctl": {"start": "sshd"}}, "systemctl.start", "expected a list, got a string"),
    ({"modules": ["-r"]}, "modules[1]", "'-r' is not a name"),
    ({"modules": ["loop extra"]}, "modules[1]", "is not a name"),
    ({"modules": "loop"}, "modules", "expected a list, got a string"),
    ({"hostname": "-n"}, "hostname", "is not a host name"),
    ({"hostname": "a\nb"}, "hostname", "is not a host name"),
    ({"files": [{"path": "/x", "owner": "-x"}]}, "files[1].owner", "is not a name"),
    ({"directories": [{"path": "/d", "group": "a b"}]}, "directories[1].group", "is not a name"),
])
def test_names_that_could_be_options_are_refused(root, tmp_path, capsys, programs, step, key,
                                                 message):
    refused(root, step, key, message, tmp_path, capsys)
    assert programs == []
    assert sorted(p.name for p in (root / "etc").iterdir()) == [
        "after", "group", "gshadow", "passwd", "shadow"]


def test_names_and_values_come_after_double_dash_or_as_option_values(root, tmp_path, capsys,
                                                                      programs):
    status, _ = apply(root, [{"users": {"bob": {"uid": 1500, "shell": "-x", "passwd": "-e",
                                                "groups": ["staff", "alice"]},
                                        "alice": {"passwd": "--root"}},
                              "systemctl": {"enable": ["a.service"], "disable": ["b@c:d"],
                                            "mask": ["m"], "start": ["s"]}}],
                         tmp_path, capsys)
    assert status == 0
    r = ["--root", str(root)]
    assert programs == [
        ["systemctl", f"--root={root}", "enable", "--", "a.service"],
        ["systemctl", f"--root={root}", "disable", "--", "b@c:d"],
        ["systemctl", f"--root={root}", "mask", "--", "m"],   # start: a running system only
        ["useradd", *r, "--create-home", "--uid=1500", "--shell=-x", "--", "bob"],
        ["usermod", *r, "--password=-e", "--", "bob"],
        ["usermod", *r, "--append", "--groups=staff,alice", "--", "bob"],
        ["usermod", *r, "--password=--root", "--", "alice"]]


def test_on_a_running_system_units_and_modules_come_after_double_dash(programs, capsys):
    assert setup.run_step({"modules": ["loop"], "systemctl": {"start": ["a"], "enable": ["b"]}},
                          "stages.boot[1]")
    assert programs == [["modprobe", "--", "loop"], ["systemctl", "enable", "--", "b"],
                        ["systemctl", "start", "--no-block", "--", "a"]]


def test_a_user_is_added_with_the_real_tools_inside_the_root(root, tmp_path, capsys):
    status, err = apply(root, [{"users": {"carol": {"groups": ["staff"], "uid": 1600}}}],
                        tmp_path, capsys)
    assert status == 0, err
    assert "carol:x:1600:" in (root / "etc/passwd").read_text()
    assert "staff:x:50:carol" in (root / "etc/group").read_text()


# --------------------------------------------------------------------------- types of every key

B64 = base64.b64encode(b"hi").decode()
GZ = base64.b64encode(gzip.compress(b"hi", mtime=0)).decode()


@pytest.mark.parametrize("step, key, message", [
    ({"files": [{"path": "/x", "content": "@@@", "encoding": "b64"}]}, "files[1]",
     "content is not base64"),
    ({"files": [{"path": "/x", "content": "aGk", "encoding": "base64"}]}, "files[1]",
     "content is not base64: Incorrect padding"),
    ({"files": [{"path": "/x", "content": B64, "encoding": "gzip+b64"}]}, "files[1]",
     "content is not gzip data"),
    ({"files": [{"path": "/x", "content": GZ[:-8], "encoding": "gz+base64"}]}, "files[1]",
     "content is not"),
    ({"files": [{"path": "/x", "content": "hi", "encoding": "gz"}]}, "files[1]",
     "content is not gzip data"),
    ({"files": [{"path": "/x", "content": 5}]}, "files[1].content", "expected a string, got a number"),
    ({"files": [{"path": "/x", "content": None}]}, "files[1].content", "expected a string, got nothing"),
    ({"files": [{"path": "/x", "content": "a\x00b"}]}, "files[1].content", "holds a NUL"),
    ({"files": [{"path": "/x", "encoding": 64}]}, "files[1].encoding", "expected a string"),
    ({"files": [{"path": "/x", "encoding": "rot13"}]}, "files[1].encoding", "unknown encoding 'rot13'"),
    ({"files": [{"path": 7}]}, "files[1].path", "expected a path, got a number"),
    ({"files": [{"path": ""}]}, "files[1].path", "'' is not a path"),
    ({"files": [{"content": "x"}]}, "files[1]", "missing 'path'"),
    ({"files": [{"path": "/x", "permissions": "0999"}]}, "files[1].permissions", "invalid permissions"),
    ({"files": [{"path": "/x", "permissions": "777777"}]}, "files[1].permissions", "invalid permissions"),
    ({"files": [{"path": "/x", "permissions": True}]}, "files[1].permissions", "expected an octal mode"),
    ({"files": {"path": "/x"}}, "files", "expected a list, got a mapping"),
    ({"directories": [{"path": "/d", "permissions": -1}]}, "directories[1].permissions",
     "invalid permissions"),
    ({"directories": ["/d"]}, "directories[1]", "expected a mapping, got a string"),
    ({"commands": "true"}, "commands", "expected a list, got a string"),
    ({"commands": [1]}, "commands[1]", "expected a string, got a number"),
    ({"environment": {"A B": "1"}}, "environment.A B", "is not a variable name"),
    ({"environment": {"A": "1\nB=2"}}, "environment.A", "must be one line"),
    ({"environment": {"A": [1]}}, "environment.A", "expected a string or a number, got a list"),
    ({"environment": ["A=1"]}, "environment", "expected a mapping, got a list"),
    ({"environment_file": 3}, "environment_file", "expected a path, got a number"),
    ({"dns": {"nameservers": "1.1.1.1"}}, "dns.nameservers", "expected a list, got a string"),
    ({"dns": {"nameservers": ["1.1.1.1\nnameserver 6.6.6.6"]}}, "dns.nameservers[1]",
     "must be one word"),
    ({"dns": {"search": [7]}}, "dns.search[1]", "expected a string, got a number"),
    ({"dns": {"path": ["/x"]}}, "dns.path", "expected a path, got a list"),
    ({"sysctl": {"vm swappiness": 1}}, "sysctl.vm swappiness", "is not a kernel parameter"),
    ({"sysctl": {"vm.x": {"a": 1}}}, "sysctl.vm.x", "expected a string or a number, got a mapping"),
    ({"downloads": [{"path": "/x"}]}, "downloads[1]", "missing 'url'"),
    ({"downloads": [{"url": "http://h/x", "path": "/x", "timeout": "5"}]}, "downloads[1].timeout",
     "expected a number, got a string"),
    ({"downloads": [{"url": "http://h/x", "path": "/x", "timeout": 0}]}, "downloads[1].timeout",
     "must be a positive number of seconds"),
    ({"ensure_entities": [{"path": "/etc/passwd", "entity": "a:x:1:1::/:\nroot2:x:0:0::/:"}]},
     "ensure_entities[1].entity", "must be one line"),
    ({"delete_entities": [{"entity": "staff"}]}, "delete_entities[1]", "missing 'path'"),
    # mudler/entities' documents: each value becomes a field of a `:`-separated entry
    ({"ensure_entities": [{"entity": "kind: user\nusername: 'eve:x:0:0::/:/bin/sh'\n"}]},
     "ensure_entities[1].entity.username", "is not a name"),
    ({"ensure_entities": [{"entity": "kind: user\nusername: eve\n"
                                     "homedir: \"/h\\nroot2:x:0:0::/:/bin/sh\"\n"}]},
     "ensure_entities[1].entity.homedir", "may not hold ':', a newline or NUL"),
    ({"ensure_entities": [{"entity": "kind: shadow\nusername: root\npassword: 'a:0:0'\n"}]},
     "ensure_entities[1].entity.password", "may not hold ':'"),
    ({"ensure_entities": [{"entity": "kind: group\ngroup_name: wheel\nusers: 'eve:x'\n"}]},
     "ensure_entities[1].entity.users", "may not hold ':'"),
    ({"delete_entities": [{"entity": "kind: gshadow\nname: staff\nmembers: \"a\\nb\"\n"}]},
     "delete_entities[1].entity.members", "may not hold ':', a newline"),
    ({"ensure_entities": [{"entity": "kind: admin\nusername: eve\n"}]},
     "ensure_entities[1].entity", "unknown entity kind 'admin' (known: user, shadow, group"),
    ({"ensure_entities": [{"entity": "kind: [user]\nusername: eve\n"}]},
     "ensure_entities[1].entity", "unknown entity kind ['user']"),
    ({"ensure_entities": [{"entity": "kind: user\nusername: eve\nuid: '0'\n"}]},
     "ensure_entities[1].entity.uid", "expected a number, got a string"),
    ({"ensure_entities": [{"entity": "kind: shadow\nusername: eve\npassword: 1234\n"}]},
     "ensure_entities[1].entity.password", "expected a string, got a number"),
    ({"ensure_entities": [{"entity": "kind: user\nusername: eve\nuid: -2\n"}]},
     "ensure_entities[1].entity.uid", "-2 is not a user or group id (0 to 4294967294, or -1"),
    ({"ensure_entities": [{"entity": "kind: user\nusername: eve\nuid: 4294967295\n"}]},
     "ensure_entities[1].entity.uid", "4294967295 is not a user or group id"),
    ({"ensure_entities": [{"entity": "kind: user\nusername: eve\ngid: -1\n"}]},
     "ensure_entities[1].entity.gid", "-1 is not a user or group id"),
    ({"ensure_entities": [{"entity": "kind: shadow\nusername: eve\nlast_changed: yesterday\n"}]},
     "ensure_entities[1].entity.last_changed", "'yesterday' is not a number of days or 'now'"),
    ({"ensure_entities": [{"entity": "kind: shadow\nusername: eve\nexpire: -1\n"}]},
     "ensure_entities[1].entity.expire", "-1 is not a number of days"),
    ({"ensure_entities": [{"entity": "kind: shadow\npassword: x\n"}]},
     "ensure_entities[1].entity", "missing 'username'"),
    ({"ensure_entities": [{"path": ["/etc/passwd"], "entity": "kind: user\nusername: eve\n"}]},
     "ensure_entities[1].path", "expected a path, got a list"),
    ({"if": ["true"]}, "if", "expected a shell test (a string), got a list"),
    ({"name": 5}, "name", "expected a string, got a number"),
    ({"timesyncd": "pool"}, "timesyncd", "expected a mapping, got a string"),
])
def test_every_key_has_its_type_checked(root, tmp_path, capsys, step, key, message):
    refused(root, {**step, "directories": step.get("directories", [{"path": "/marker"}])},
            key, message, tmp_path, capsys)
    assert not (root / "marker").exists() and not (root / "x").exists()


def test_every_declared_key_refuses_a_value_of_another_type(root, tmp_path, capsys):
    """Every key of the declaration is checked: a list of lists, or for the list keys a
    mapping, is a wrong type at some level of each."""
    for key in cloudconfig.STEP_KEYS:
        step = {key: {"a": {"b": 1}}} if key in ("commands", "files") else {key: [[None]]}
        errors = errors_of({"stages": {"boot": [step]}})
        assert errors and all(f"stages.boot[1].{key}" in str(e) for e in errors), (key, errors)


@pytest.mark.parametrize("doc, key, message", [
    ({"write_files": [{"path": "/x", "content": "@@", "encoding": "b64"}]}, "write_files[1]",
     "content is not base64"),
    ({"write_files": [{"path": "/x", "content": 1}]}, "write_files[1].content", "expected a string"),
    ({"users": [{"name": "bob", "groups": "staff"}]}, "users[1].groups", "expected a list"),
    ({"users": [{"name": "-o"}]}, "users[1].name", "is not a name"),
    ({"users": [{"passwd": "x"}]}, "users[1]", "missing 'name'"),
    ({"users": ["root"]}, "users[1]", "a user is a mapping, or 'default'"),
    ({"runcmd": [1]}, "runcmd[1]", "expected a command (a string or a list), got a number"),
    ({"runcmd": [["echo", 1]]}, "runcmd[1][2]", "expected a string, got a number"),
    ({"hostname": "-x"}, "hostname", "is not a host name"),
    ({"ssh_authorized_keys": "ssh-rsa A"}, "ssh_authorized_keys", "expected a list"),
])
def test_classic_cloud_config_is_checked_the_same_way(root, tmp_path, capsys, programs, doc,
                                                      key, message):
    errors = errors_of({**doc, "write_files": doc.get("write_files", [{"path": "/m", "content": "x"}])},
                       classic=True)
    finding = rf"{re.escape(key)}: .*{re.escape(message)}"
    assert [re.search(finding, str(e)) is not None for e in errors] == [True], errors
    f = tmp_path / "c.yaml"
    f.write_text("#cloud-config\n" + yaml.safe_dump({**doc, "write_files": doc.get(
        "write_files", [{"path": "/m", "content": "x"}])}))
    try:
        status = setup.main(["--root", str(root), "--file", str(f), "--stage", "boot"])
    finally:
        setup.ROOT = "/"
    err = capsys.readouterr().err
    assert status == 1 and re.search(finding, err), err
    assert not (root / "m").exists() and not (root / "x").exists() and programs == []


def test_classic_default_user_and_unknown_user_keys_are_ignored(root, tmp_path, capsys, programs):
    f = tmp_path / "c.yaml"
    f.write_text("#cloud-config\nusers: [default, {name: bob, sudo: ALL, groups: [staff]}]\n")
    try:
        assert setup.main(["--root", str(root), "--file", str(f), "--stage", "boot"]) == 0
    finally:
        setup.ROOT = "/"
    assert "users[2].sudo: unknown user key 'sudo', ignored" in capsys.readouterr().err
    assert [argv[-1] for argv in programs] == ["bob", "bob"]


@pytest.mark.parametrize("content, encoding", [
    ("aGk=", "b64"), ("aG\nk=\n", "base64"), (GZ, "gzip+base64"), (GZ[:10] + "\n" + GZ[10:], "gz+b64"),
    ("hi", ""), ("aGk=", "BASE64"),
])
def test_valid_contents_are_written(root, tmp_path, capsys, content, encoding):
    status, err = apply(root, [{"files": [{"path": "/etc/c", "content": content,
                                           "encoding": encoding}]}], tmp_path, capsys)
    assert status == 0, err
    assert (root / "etc/c").read_bytes() == b"hi"


def test_a_gzip_bomb_is_refused(root, tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cloudconfig, "CONTENT_LIMIT", 1000)
    bomb = base64.b64encode(gzip.compress(b"\0" * 1001)).decode()
    refused(root, {"files": [{"path": "/etc/bomb", "content": bomb, "encoding": "gz+b64"}]},
            "files[1]", "content decodes to more than 1000 bytes", tmp_path, capsys)
    assert not (root / "etc/bomb").exists()


def test_the_command_line_tool_refuses_with_one_clear_message(root, tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("stages:\n  boot:\n    - systemd_firstboot:\n        keymap: us\n"
                 f"        root: {tmp_path}\n")
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--root", str(root),
                           "--file", str(f), "--stage", "boot"], capture_output=True, text=True)
    assert proc.returncode == 1
    assert proc.stderr == (f"cos-setup: {f}:5: stages.boot[1].systemd_firstboot.root: unknown "
                           "systemd_firstboot key 'root' (known: locale, locale_messages, keymap, "
                           "timezone, hostname, machine_id, root_password, root_password_hashed, "
                           "root_shell)\n")
    assert not (root / "etc/vconsole.conf").exists()


def test_validate_reports_firstboot_keys_as_errors_not_warnings():
    text = "stages:\n  boot:\n    - systemd_firstboot: {root: /x}\n      systemd: {}\n"
    kinds = {type(e).__name__ for e in cloudconfig.check(text, "f.yaml")}
    assert kinds == {"CosbuildError", "CosbuildWarning"}


# --------------------------------------------------------------------------- host programs on a root

@pytest.mark.parametrize("link, step", [
    ("etc", {"systemd_firstboot": {"timezone": "UTC", "hostname": "box"}}),
    ("etc", {"systemd_firstboot": {"machine_id": "0123456789abcdef0123456789abcdef"}}),
    ("etc/systemd/system", {"systemctl": {"mask": ["evil.service"]}}),
    ("etc/systemd/system", {"systemctl": {"enable": ["demo"]}}),
])
def test_the_hosts_programs_do_not_follow_the_roots_links_out(root, tmp_path, capsys, link, step):
    """systemd-firstboot --root and systemctl --root follow a link of the root as the host's
    path (unconfined, both write into the folder beside the root, exit 0)."""
    elsewhere = tmp_path / "outside/elsewhere"
    elsewhere.mkdir()
    (root / "lib/systemd/system").mkdir(parents=True)
    (root / "lib/systemd/system/demo.service").write_text(
        "[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    if link == "etc":
        (root / "etc").rename(root / "etc.real")
    else:
        (root / link).parent.mkdir(parents=True)
    (root / link).symlink_to(elsewhere)
    status, err = apply(root, [step, AFTER], tmp_path, capsys)
    assert status == 1 and ("Read-only file system" in err or "does not exist" in err), err
    assert list(elsewhere.iterdir()) == []


def test_a_missing_bwrap_is_named_before_a_program_runs(root, monkeypatch, tmp_path):
    monkeypatch.setattr(setup, "ROOT", str(root))
    monkeypatch.setattr(setup, "require", lambda name: (_ for _ in ()).throw(
        RuntimeError(f"{name} is not installed")) if name == "bwrap" else name)
    assert not setup.run_step({"systemctl": {"mask": ["x"]}}, "stages.default[1]")
    assert not (root / "etc/systemd").exists()


def test_a_user_named_with_digits_is_added_not_taken_for_a_uid(root, tmp_path, capsys, programs):
    assert apply(root, [{"users": {"1000": {"passwd": "x"}}}], tmp_path, capsys)[0] == 0
    assert [argv[0] for argv in programs] == ["useradd", "usermod"]


# --------------------------------------------------------------------------- one checker

@FUZZ
@given(fuzz_steps | values)
def test_cos_setup_refuses_exactly_what_validate_refuses(tmp_path_factory, capsys, step):
    """A generated step, then a marker step: when validate finds errors in the step,
    cos-setup logs the same errors, changes nothing for it, and still writes the marker."""
    top = tmp_path_factory.mktemp("one")
    root = top / "a/b/root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    text = yaml.safe_dump({"stages": {"boot": [step, {"files": [{"path": "/marker"}]}]}},
                          allow_unicode=True)
    f = top / "f.yaml"
    f.write_text(text)
    errors = [e for e in cloudconfig.check(text, f) if not isinstance(e, CosbuildWarning)]
    before = outside(top, root / "marker")
    capsys.readouterr()
    try:
        status = setup.main(["--root", str(root), "--file", str(f), "--stage", "boot"])
    finally:
        setup.ROOT = "/"
    err = capsys.readouterr().err
    assert (root / "marker").exists()
    if errors:
        assert status == 1
        assert outside(top, root / "marker") == before   # nothing of the step in the root
        assert all(f"cos-setup: {e}\n" in err for e in errors), (errors, err)


@pytest.mark.parametrize("text, message", [
    ("[]\n", "expected a mapping at the top level, got a list"),
    ("0\n", "expected a mapping at the top level, got a number"),
    ("''\n", "expected a mapping at the top level, got a string"),
    ("stages: {boot: [{}]}\nname: [x]\n", "name: expected a string, got a list"),
    ("#cloud-config\n[]\n", "expected a mapping at the top level, got a list"),
    ("#cloud-config\nusers: {bob: {}}\n", "users: expected a list, got a mapping"),
])
def test_a_document_of_the_wrong_shape_is_refused_by_both(root, tmp_path, capsys, text, message):
    f = tmp_path / "d.yaml"
    f.write_text(text)
    found = [str(e) for e in cloudconfig.check(text, f)]
    assert len(found) == 1 and found[0].startswith(f"{f}:") and found[0].endswith(message), found
    try:
        assert setup.main(["--root", str(root), "--file", str(f), "--stage", "boot"]) == 1
    finally:
        setup.ROOT = "/"
    assert capsys.readouterr().err == f"cos-setup: {found[0]}\n"


def test_an_empty_document_is_nothing_to_do(root, tmp_path, capsys):
    for text in ("", "#cloud-config\n", "stages:\n", "stages: {boot: }\n"):
        assert cloudconfig.check(text, "e.yaml") == []
        f = tmp_path / "e.yaml"
        f.write_text(text)
        try:
            assert setup.main(["--root", str(root), "--file", str(f), "--stage", "boot"]) == 0
        finally:
            setup.ROOT = "/"


# --------------------------------------------------------------------------- cos-installer

def test_the_installer_sees_a_disk_in_use_by_any_of_its_names(tmp_path):
    """A disk named by a link (/dev/disk/by-id/...) whose partition is mounted is in use;
    a disk whose name only starts the same is not (the check compared the text)."""
    dev, sys_block = tmp_path / "dev", tmp_path / "sys"
    for name in ("vda", "vda1", "vdab", "vdab1"):
        (dev / name).parent.mkdir(exist_ok=True)
        (dev / name).touch()
    for disk, part in (("vda", "vda1"), ("vdab", "vdab1")):
        (sys_block / disk / part).mkdir(parents=True)
        (sys_block / disk / part / "partition").write_text("1\n")
    (tmp_path / "by-id").mkdir()
    (tmp_path / "by-id/disk-1").symlink_to(dev / "vda")
    mounts = (f"{dev}/vda1 /run/my\\040data ext4 rw 0 0\n{dev}/vdab1 /srv ext4 rw 0 0\n"
              "proc /proc proc rw 0 0\n")
    assert installer.mounted(tmp_path / "by-id/disk-1", mounts, sys_block) == ["/run/my data"]
    assert installer.mounted(dev / "vdab", mounts, sys_block) == ["/srv"]
    assert installer.mounted(dev / "vda1", mounts, sys_block) == ["/run/my data"]
    assert installer.mounted(dev / "vda", "", sys_block) == []
