"""The cloud-config stage runner (`cos-setup`, cosbuild.runtime.setup), on temporary roots,
and the build-time checks of cloud-config files (`cosbuild validate`)."""

from __future__ import annotations

import base64
import gzip
import os
import subprocess
import sys
import textwrap
import time

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.runtime import cloudconfig
from cosbuild.runtime import setup as runner

from .conftest import BASIC, REPO

LAUNCHERS = REPO / "tree/system/cos/files"


@pytest.fixture
def cos_setup(tmp_path, monkeypatch):
    """The runner module, set up for a temporary root with a few users and groups."""
    module = runner
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nalice:x:1000:1000::/home/alice:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\nalice:x:1000:\nstaff:x:50:\n")
    monkeypatch.setattr(module, "ROOT", str(root))
    monkeypatch.setattr(module, "cmdline_files", lambda: [])
    monkeypatch.setattr(module, "root", root, raising=False)
    return module


def step(module, text: str, stage: str = "default") -> bool:
    return module.run_document(textwrap.dedent(text), "test.yaml", stage)


def test_files_with_modes_owners_and_encodings(cos_setup):
    root = cos_setup.root
    payload = base64.b64encode(gzip.compress(b"zipped\n")).decode()
    assert step(cos_setup, f"""\
        stages:
          default:
            - files:
                - {{path: /etc/a.conf, content: "hello\\n", permissions: 0600, owner: alice, group: staff}}
                - {{path: /etc/b.conf, content: aGk=, encoding: b64, permissions: "0640"}}
                - {{path: /srv/c, content: "{payload}", encoding: gzip+base64}}
        """)
    st = os.stat(root / "etc/a.conf")
    assert (root / "etc/a.conf").read_text() == "hello\n"
    assert (st.st_mode & 0o7777, st.st_uid, st.st_gid) == (0o600, 1000, 50)
    assert (root / "etc/b.conf").read_bytes() == b"hi"
    assert os.stat(root / "etc/b.conf").st_mode & 0o7777 == 0o640
    assert (root / "srv/c").read_bytes() == b"zipped\n"


@pytest.mark.parametrize("entry, message", [
    ("{path: /etc/x, content: a, permissions: 99999}", "invalid permissions"),
    ("{path: /etc/x, content: a, owner: nobody-here}", "unknown user 'nobody-here'"),
    ("{path: /etc/x, content: a, encoding: rot13}", "unknown encoding 'rot13'"),
])
def test_bad_file_entries_are_reported_and_skipped(cos_setup, capsys, entry, message):
    ok = step(cos_setup, f"""\
        stages:
          default:
            - files:
                - {entry}
            - files:
                - {{path: /etc/after, content: still written}}
        """)
    assert not ok
    assert message in capsys.readouterr().err
    assert not (cos_setup.root / "etc/x").exists()
    assert (cos_setup.root / "etc/after").read_text() == "still written"


def test_directories_hostname_dns_environment(cos_setup):
    root = cos_setup.root
    assert step(cos_setup, """\
        stages:
          default:
            - directories: [{path: /var/data, permissions: 0750, owner: alice}]
              hostname: myhost
              dns: {nameservers: [1.1.1.1], search: [example.org]}
              environment_file: /etc/environment.d/test.conf
              environment: {A: "1", B: two}
        """)   # the file gets the step's environment whatever the key order (00_rootfs.yaml)
    assert os.stat(root / "var/data").st_mode & 0o7777 == 0o750
    assert os.stat(root / "var/data").st_uid == 1000
    assert (root / "etc/hostname").read_text() == "myhost\n"
    assert (root / "etc/resolv.conf").read_text() == "nameserver 1.1.1.1\nsearch example.org\n"
    assert (root / "etc/environment.d/test.conf").read_text() == "A=1\nB=two\n"


def test_commands_if_and_environment(cos_setup, monkeypatch, tmp_path):
    monkeypatch.setattr(cos_setup, "ROOT", "/")   # commands of the running system
    out = tmp_path / "out"
    assert step(cos_setup, f"""\
        stages:
          default:
            - if: "false"
              commands: ["echo skipped >> {out}"]
            - environment: {{WHO: world}}
              commands: ["echo hello $WHO >> {out}"]
        """)
    assert out.read_text() == "hello world\n"
    assert not step(cos_setup, "stages: {default: [{commands: ['exit 3']}]}")


def test_entities_and_authorized_keys(cos_setup):
    root = cos_setup.root
    assert step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - {path: /etc/passwd, entity: "bob:x:1001:1001::/home/bob:/bin/sh"}
                - {path: /etc/passwd, entity: "alice:x:1000:1000::/home/al:/bin/bash"}
            - delete_entities:
                - {path: /etc/group, entity: "staff"}
            - authorized_keys: {bob: ["ssh-ed25519 AAAA bob@host"]}
        """)
    passwd = (root / "etc/passwd").read_text().splitlines()
    assert "bob:x:1001:1001::/home/bob:/bin/sh" in passwd
    assert "alice:x:1000:1000::/home/al:/bin/bash" in passwd and len(passwd) == 3
    assert "staff" not in (root / "etc/group").read_text()
    keys = root / "home/bob/.ssh/authorized_keys"
    assert keys.read_text() == "ssh-ed25519 AAAA bob@host\n"
    assert os.stat(keys).st_mode & 0o777 == 0o600 and os.stat(keys).st_uid == 1001


# elemental-toolkit v0.8.14's entities, as written there (yip's format: mudler/entities)
ACCOUNTING = """\
name: "Default user"
stages:
   initramfs:
     - name: "Setup users"
       ensure_entities:
       - path: /etc/shadow
         entity: |
            kind: "shadow"
            username: "root"
            password: "cos"
"""
VAGRANT = """\
stages:
   network:
     - name: "Setup users"
       ensure_entities:
       - path: /etc/passwd
         entity: |
            kind: "user"
            username: "vagrant"
            password: "x"
            homedir: "/run/tmp/vagrant"
            shell: "/bin/bash"
       - path: /etc/shadow
         entity: |
            kind: "shadow"
            username: "vagrant"
            password: ""
"""


def test_elemental_entity_documents_validate_and_apply_as_yip_does(cos_setup):
    root = cos_setup.root
    assert cloudconfig.check(ACCOUNTING, "04_accounting.yaml") == []
    assert cloudconfig.check(VAGRANT, "vagrant.yaml") == []
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\nalice:!:19000::::::\n")
    os.chmod(root / "etc/shadow", 0o640)
    assert step(cos_setup, ACCOUNTING, "initramfs") and step(cos_setup, VAGRANT, "network")
    shadow = (root / "etc/shadow").read_text().splitlines()
    # the entry is replaced whole (entities' Apply), its password in clear hashed
    name, hashed, *rest = shadow[0].split(":")
    assert name == "root" and rest == [""] * 7
    salt = hashed.split("$")[2]
    assert hashed.startswith("$6$") and cos_setup.sha512_crypt("cos", salt) == hashed
    assert shadow[1:] == ["alice:!:19000::::::", "vagrant::::::::"]
    assert os.stat(root / "etc/shadow").st_mode & 0o777 == 0o640
    assert (root / "etc/passwd").read_text().splitlines()[2] == \
        "vagrant:x:0:0:Created by entities:/run/tmp/vagrant:/bin/bash"


def test_sha512_crypt_is_crypt3s():
    # U. Drepper's specification's example
    assert runner.sha512_crypt("Hello world!", "saltstring") == (
        "$6$saltstring$svn8UoSVapNtMuq1ukKS4tPQd8iKwSMHWjl/O817G3uBnIFNjnQJuesI68u4OTLiBFdcbYE"
        "dFCoEOfaS35inz1")


def test_entity_documents_of_each_kind(cos_setup, monkeypatch):
    root = cos_setup.root
    monkeypatch.delenv("ENTITY_DYNAMIC_RANGE", raising=False)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\nsvc:x:999:999::/:/bin/sh\n")
    assert step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - entity: |
                    kind: user
                    username: bob
                    uid: -1
                    group: staff
                    info: Bob
                    homedir: /home/bob
                    shell: /bin/sh
                - entity: |
                    kind: user
                    username: svc
                    uid: -1
                    homedir: /srv
                - entity: |
                    kind: group
                    group_name: staff
                    users: bob,carol
                - entity: |
                    kind: group
                    group_name: staff
                    users: carol,dave
                - entity: |
                    kind: group
                    group_name: new
                    gid: -1
                - entity: |
                    kind: shadow
                    username: bob
                    password: "$6$abc$def"
                    last_changed: now
                    maximum_changed: 99999
                    warn: "7"
                - entity: |
                    kind: gshadow
                    name: staff
                    password: "!"
                    members: bob
        """)
    # a free uid counts down from 999 (entities' dynamic range); a user keeps its own
    assert (root / "etc/passwd").read_text().splitlines() == [
        "root:x:0:0:root:/root:/bin/sh", "svc::999:0:Created by entities:/srv:",
        "bob::998:50:Bob:/home/bob:/bin/sh"]
    # a group's users are merged, its password and gid kept
    assert (root / "etc/group").read_text().splitlines() == [
        "root:x:0:", "alice:x:1000:", "staff:x:50:bob,carol,dave", "new::999:"]
    days = int(time.time()) // 86400
    assert (root / "etc/shadow").read_text() in (
        f"bob:$6$abc$def:{d}::99999:7:::\n" for d in (days, days + 1))
    assert (root / "etc/gshadow").read_text() == "staff:!::bob\n"
    assert os.stat(root / "etc/gshadow").st_mode & 0o777 == 0o600   # a new shadow file

    monkeypatch.setenv("ENTITY_DYNAMIC_RANGE", "2000-2001")
    assert step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - entity: "{kind: group, group_name: ops, gid: -1}"
            - delete_entities:
                - entity: "{kind: user, username: bob}"
                - {path: /etc/group, entity: "kind: group\\ngroup_name: new\\n"}
                - entity: "{kind: gshadow, name: nobody}"
                - {path: /etc/missing, entity: nobody}
        """)
    assert not (root / "etc/missing").exists()   # nothing to remove: no file written
    assert "bob" not in (root / "etc/passwd").read_text()
    assert (root / "etc/group").read_text().splitlines()[-2:] == [
        "staff:x:50:bob,carol,dave", "ops::2001:"]
    assert (root / "etc/gshadow").read_text() == "staff:!::bob\n"


def test_an_entity_replaces_every_entry_of_its_name_and_reads_a_short_one(cos_setup):
    root = cos_setup.root
    (root / "etc/group").write_text("staff:x:50:ann\nbroken\nstaff:x:51:bob\n")
    assert step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - entity: "{kind: group, group_name: staff, users: carl}"
                - entity: "{kind: group, group_name: broken, gid: -1, users: dan}"
        """)
    assert (root / "etc/group").read_text() == "staff:x:50:ann,carl\nbroken::999:dan\n"


def test_an_unknown_entity_key_is_a_warning_and_the_entity_applies(cos_setup, capsys):
    assert step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - entity: "{kind: user, username: eve, uid: 1001, gid: 1001, home: /x}"
        """)
    assert "entity.home: unknown entity key 'home', ignored" in capsys.readouterr().err
    assert (cos_setup.root / "etc/passwd").read_text().splitlines()[-1] == \
        "eve::1001:1001:Created by entities::"


def test_a_users_group_must_exist(cos_setup, capsys):
    assert not step(cos_setup, """\
        stages:
          default:
            - ensure_entities:
                - entity: "{kind: user, username: eve, group: nogroup}"
        """)
    assert "ensure_entities: unknown group 'nogroup'" in capsys.readouterr().err
    assert "eve" not in (cos_setup.root / "etc/passwd").read_text()


def test_systemctl_enable_in_a_root(cos_setup):
    root = cos_setup.root
    unit = root / "etc/systemd/system/demo.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    assert step(cos_setup, "stages: {default: [{systemctl: {enable: [demo]}}]}")
    assert (root / "etc/systemd/system/multi-user.target.wants/demo.service").is_symlink()


def test_unknown_step_key_and_failing_download(cos_setup, capsys):
    assert not step(cos_setup, """\
        stages:
          default:
            - fiels: []
            - downloads: [{url: "http://127.0.0.1:9/nothing", path: /x, timeout: 2}]
        """)
    err = capsys.readouterr().err
    assert "unknown step key 'fiels'" in err
    assert "download of http://127.0.0.1:9/nothing failed" in err


def test_classic_cloud_config_runs_at_boot(cos_setup):
    doc = "#cloud-config\nhostname: classic\nwrite_files:\n  - {path: /etc/motd, content: hi}\n"
    assert cos_setup.run_document(doc, "c.yaml", "initramfs")
    assert not (cos_setup.root / "etc/hostname").exists()
    assert cos_setup.run_document(doc, "c.yaml", "boot")
    assert (cos_setup.root / "etc/hostname").read_text() == "classic\n"
    assert (cos_setup.root / "etc/motd").read_text() == "hi"


def test_stage_order_and_a_broken_file_does_not_stop_the_others(cos_setup, monkeypatch, tmp_path):
    root = cos_setup.root
    oem = root / "system/oem"
    oem.mkdir(parents=True)
    monkeypatch.setattr(cos_setup, "ROOT", str(root))
    (oem / "10_a.yaml").write_text(
        "stages:\n  boot.after: [{files: [{path: /a-after, content: x}]}]\n"
        "  boot: [{files: [{path: /a, content: x}]}]\n")
    (oem / "20_broken.yaml").write_text("stages: [unclosed\n")
    (oem / "30_b.yaml").write_text("stages:\n  boot.before: [{files: [{path: /b-before, content: x}]}]\n")
    cmdline = tmp_path / "extra.yaml"
    cmdline.write_text("stages:\n  boot: [{files: [{path: /from-cmdline, content: x}]}]\n")
    monkeypatch.setattr(cos_setup, "cmdline_files", lambda: [str(cmdline)])
    assert cos_setup.run_stage("boot") is False          # the broken file is reported
    for name in ("a", "a-after", "b-before", "from-cmdline"):
        assert (root / name).exists(), name
    mtimes = {n: os.stat(root / n).st_mtime_ns for n in ("b-before", "a", "a-after")}
    assert mtimes["b-before"] <= mtimes["a"] <= mtimes["a-after"]


def test_command_line_interface(tmp_path):
    root = tmp_path / "root"
    (root / "etc").mkdir(parents=True)
    f = tmp_path / "one.yaml"
    f.write_text("stages:\n  default: [{files: [{path: /etc/one, content: '1'}]}]\n")
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--root", str(root),
                           "--file", str(f)])
    assert proc.returncode == 0 and (root / "etc/one").read_text() == "1"
    f.write_text("stages:\n  default: [{commands: ['exit 1']}]\n")
    proc = subprocess.run([sys.executable, "-m", "cosbuild.runtime.setup", "--file", str(f)],
                          capture_output=True)
    assert proc.returncode == 1


@pytest.mark.parametrize("launcher", ["cos-setup", "cos-upgrade", "cos-installer"])
def test_the_launchers_in_the_image_run_the_package(launcher):
    """/usr/bin/cos-setup, cos-upgrade and cos-installer only start cosbuild.runtime's code."""
    path = LAUNCHERS / launcher
    assert path.read_text().startswith("#!/usr/bin/python3\n") and os.access(path, os.X_OK)
    proc = subprocess.run([sys.executable, str(path), "--help"], capture_output=True, text=True)
    assert proc.returncode == 0 and f"usage: {launcher}" in proc.stdout, proc.stderr


def test_every_declared_step_key_has_a_handler_and_every_handler_a_key():
    assert set(cloudconfig.NOT_APPLIED) <= set(cloudconfig.STEP_KEYS)
    assert set(runner.HANDLERS) == set(cloudconfig.APPLIED)
    assert cloudconfig.APPLIED[:2] == ("environment", "environment_file")   # the others use it


def test_every_declared_encoding_is_known_to_the_runner(cos_setup, capsys):
    for n, encoding in enumerate(cloudconfig.ENCODINGS):
        b64 = "b64" in encoding or "base64" in encoding
        data = gzip.compress(b"hi") if "gz" in encoding else b"hi"
        content = base64.b64encode(data).decode() if b64 else "hi"
        ok = runner.run_step({"files": [{"path": f"/etc/e{n}", "content": content,
                                         "encoding": encoding}]}, "test")
        if b64 or "gz" not in encoding:
            assert ok and (cos_setup.root / f"etc/e{n}").read_bytes() == b"hi", encoding
        # plain gz: YAML text cannot carry the compressed bytes, but the encoding is known
        assert "unknown encoding" not in capsys.readouterr().err, encoding


# ----------------------------------------------------------------------------- validation

def test_the_sample_oem_files_are_valid():
    for path in sorted(REPO.glob("tree/**/*.yaml")):
        text = path.read_text()
        if cloudconfig.looks_like_cloud_config(text):
            assert cloudconfig.check(text, path) == [], path


@pytest.mark.parametrize("text, fragments", [
    ("stages:\n  boot:\n    - fiels: []\n", [":3:", "unknown step key 'fiels'", "did you mean 'files'?"]),
    ("stages:\n  boot:\n    - commands: echo\n", [":3:", "commands", "expected a list"]),
    ("stages:\n  boot:\n    - files:\n        - path: /x\n          permissions: 99999\n",
     [":5:", "invalid permissions 99999"]),
    ("stages:\n  boot:\n    - files:\n        - {path: /x, encoding: rot13}\n", ["unknown encoding 'rot13'"]),
    ("stages:\n  boot:\n    - systemctl: {enabel: [x]}\n", ["unknown systemctl action 'enabel'",
                                                            "did you mean 'enable'?"]),
    ("stags:\n  boot: []\n", [":1:", "unknown top-level key 'stags'", "did you mean 'stages'?"]),
    ("stages:\n  boot: [unclosed\n", ["invalid YAML"]),
    ("#cloud-config\nrun_cmd: [x]\n", ["unknown #cloud-config key 'run_cmd'", "did you mean 'runcmd'?"]),
])
def test_broken_cloud_config_is_rejected(tmp_path, text, fragments):
    errors = cloudconfig.check(text, tmp_path / "50_x.yaml")
    message = "\n".join(map(str, errors))
    assert errors
    for fragment in fragments:
        assert fragment in message, message


def test_validate_rejects_a_broken_oem_file(project, run_cli):
    project({**BASIC, "tree/app/oem/50_app.yaml": "name: app\nstages:\n  boot:\n    - commands: echo\n"})
    code, _, err = run_cli("validate")
    assert code == 1
    assert "tree/app/oem/50_app.yaml:4: stages.boot[1].commands: expected a list" in err


def test_keys_yip_ignores_are_warnings_and_errors_when_strict(project, run_cli, monkeypatch,
                                                              caplog):
    # cOS's setup.yaml has a `systemd:` step key, which yip (and cos-setup) ignore
    project({**BASIC, "tree/app/oem/50_app.yaml": """\
        stages:
          boot:
            - systemd: {enable: [x]}
              files:
                - {path: /etc/x, permission: 0644}
        """})
    expected = ["tree/app/oem/50_app.yaml:3: stages.boot[1].systemd: unknown step key 'systemd', "
                "ignored (did you mean 'systemctl'?)",
                "50_app.yaml:5: stages.boot[1].files[1].permission: unknown file key 'permission', "
                "ignored (did you mean 'permissions'?)"]
    code, out, _ = run_cli("validate")
    assert code == 0 and "2 warnings" in out
    assert all(e in caplog.text for e in expected), caplog.text
    caplog.clear()
    code, _, err = run_cli("validate", "--strict")
    assert code == 1 and all(e in err for e in expected) and not caplog.text, err
    monkeypatch.setenv("COSBUILD_STRICT", "1")
    assert run_cli("validate")[0] == 1


def test_cos_setup_ignores_unknown_step_keys_as_yip_does(cos_setup, capsys):
    assert step(cos_setup, "stages: {default: [{systemd: {enable: [x]}, directories: [{path: /d}]}]}")
    assert "unknown step key 'systemd', ignored" in capsys.readouterr().err
    assert (cos_setup.root / "d").is_dir()


def test_users_with_password_hash_groups_shell_uid_and_keys(cos_setup):
    root = cos_setup.root
    (root / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
    (root / "etc/gshadow").write_text("root:*::\nstaff:*::\n")
    assert step(cos_setup, """\
        stages:
          default:
            - users:
                carol:
                  passwd: "$6$salt$hash"
                  groups: [staff]
                  shell: /bin/sh
                  uid: 1500
                  ssh_authorized_keys: ["ssh-ed25519 AAAA carol"]
        """)
    assert "carol:x:1500:" in (root / "etc/passwd").read_text()
    assert "carol:$6$salt$hash:" in (root / "etc/shadow").read_text()
    assert "staff:x:50:carol" in (root / "etc/group").read_text()
    assert (root / "home/carol/.ssh/authorized_keys").read_text() == "ssh-ed25519 AAAA carol\n"


def test_systemd_firstboot_and_systemctl_disable_and_mask(cos_setup):
    root = cos_setup.root
    unit = root / "etc/systemd/system/demo.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\nExecStart=/bin/true\n[Install]\nWantedBy=multi-user.target\n")
    assert step(cos_setup, """\
        stages:
          default:
            - systemd_firstboot: {timezone: UTC, keymap: us}
            - systemctl: {enable: [demo]}
            - systemctl: {disable: [demo], mask: [other.service]}
        """)
    assert os.readlink(root / "etc/localtime").endswith("zoneinfo/UTC")
    assert "KEYMAP=us" in (root / "etc/vconsole.conf").read_text()
    assert not (root / "etc/systemd/system/multi-user.target.wants/demo.service").exists()
    assert os.readlink(root / "etc/systemd/system/other.service") == "/dev/null"


def test_kernel_settings_apply_to_a_running_system_only(cos_setup, capsys):
    assert not step(cos_setup, "stages: {default: [{sysctl: {vm.swappiness: 10}}, {modules: [loop]}]}")
    err = capsys.readouterr().err
    assert "sysctl applies to a running system only" in err
    assert "modules apply to a running system only" in err


def test_a_missing_program_is_named_with_its_package(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(CosbuildError, match="modprobe is not installed.*apt-get install kmod"):
        runner.run(["modprobe", "dummy"])
