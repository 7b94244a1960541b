"""Boot assessment without booting: GRUB's environment block (images/grubenv.py) against
grub-editenv, the health checks and the try counter of cos-boot-assessment
(runtime/assessment.py) on a COS_STATE folder, what cos-upgrade does after a rollback and
what `cos-upgrade status` says. GRUB's side of the counting runs in grub-emu
(tests/test_grub_menu.py); the QEMU rollbacks in tests/test_disk_boot.py."""

from __future__ import annotations

import argparse
import contextlib
import subprocess

import pytest

from cosbuild.errors import CosbuildError
from cosbuild.images import fsimage, grubenv, layout
from cosbuild.runtime import assessment, upgrade
from cosbuild.tools import TaskLog

# --------------------------------------------------------------------------- the block


def test_the_block_is_what_grub_editenv_reads_and_writes(tmp_path):
    ours = tmp_path / "ours"
    grubenv.write(ours, {"boot_tries": "3", "active_tries": "", "assessed": "good:active.img"})
    assert len(ours.read_bytes()) == 1024
    listed = subprocess.run(["grub-editenv", str(ours), "list"], capture_output=True,
                            text=True, check=True).stdout.splitlines()
    assert listed == ["active_tries=", "assessed=good:active.img", "boot_tries=3"]
    theirs = tmp_path / "theirs"
    subprocess.run(["grub-editenv", str(theirs), "create"], check=True)
    subprocess.run(["grub-editenv", str(theirs), "set", "active_tries=2", "passive_tries=3"],
                   check=True)
    assert grubenv.read(theirs) == {"active_tries": "2", "passive_tries": "3"}
    assert grubenv.block({"b": "1", "a": "2"}) == grubenv.block({"a": "2", "b": "1"})


@pytest.mark.parametrize("data", [b"", b"# GRUB Environment Block\n", b"x" * 1024,
                                  b"# GRUB Environment Block\n".ljust(1025, b"#")])
def test_a_file_that_is_not_a_block_is_one_error_naming_it(tmp_path, data):
    path = tmp_path / "boot_assessment"
    path.write_bytes(data)
    with pytest.raises(CosbuildError) as exc:
        grubenv.read(path)
    assert exc.value.file == str(path) and "not a GRUB environment block" in exc.value.message


@pytest.mark.parametrize("values", [{"a": "x y"}, {"a": "1\n2"}, {"": "1"}, {"a=b": "1"},
                                    {"a": "1" * 1100}])
def test_what_grub_could_misread_is_never_written(values):
    with pytest.raises(ValueError):
        grubenv.block(values)


def test_the_disk_and_the_installer_write_a_block_with_the_boot_tries(tmp_path):
    layout.write_assessment(tmp_path, 5)
    assert grubenv.read(tmp_path / layout.ASSESSMENT_FILE) == {"boot_tries": "5"}


# --------------------------------------------------------------------------- the commands

@pytest.fixture
def system(tmp_path):
    """A COS_STATE folder, health checks and /run/cos of a system booted from `image`."""
    class System:
        state = tmp_path / "state"
        health = tmp_path / "health.d"
        run = tmp_path / "run"
        console = tmp_path / "console"
        reboots: list[float] = []

        def env(self, values=None):
            path = self.state / layout.ASSESSMENT_FILE
            if values is not None:
                grubenv.write(path, values)
            return grubenv.read(path)

        def checks(self, **scripts):
            for name, text in scripts.items():
                kind, _, base = name.partition("__")
                path = self.health / kind / base
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text("#!/bin/sh\n" + text + "\n")
                path.chmod(0o755)

        def boot(self, image):
            (self.run / "active_image").parent.mkdir(parents=True, exist_ok=True)
            (self.run / "active_image").write_text(f"/cOS/{image}\n")

        def report(self):
            return dict(assessment.lines_of(self.run / "boot_assessment"))

        def command(self, action):
            """The command as its unit runs it (main() would reboot this machine)."""
            ns = argparse.Namespace(action=action, state=self.state, health_dir=self.health,
                                    booted=self.run / "active_image",
                                    report=self.run / "boot_assessment", console=self.console,
                                    check_seconds=2.0, reboot_delay=0.0)
            with TaskLog(tmp_path / "log") as log:
                if action == "success":
                    return assessment.success(ns, log)
                return assessment.check(ns, log, lambda: self.reboots.append(1))
    s = System()
    s.reboots = []
    layout.write_assessment(s.state, 3)
    return s


def test_passing_checks_then_success_clear_the_try_counter(system):
    system.env(assessment.after_upgrade(system.env()))
    system.checks(required__10_ok="exit 0", wanted__20_warn="echo slow disk; exit 3")
    system.boot("active.img")
    system.env({**system.env(), "active_tries": "2"})   # GRUB counted this boot
    assert system.command("check") == 0 and system.reboots == []
    assert system.report()["result"] == "checks passed"
    assert system.report()["checks"] == "required/10_ok=passed, wanted/20_warn=failed"
    assert "wanted/20_warn: FAILED (exit status 3: slow disk)" in system.console.read_text()
    assert system.command("success") == 0
    assert system.env() == {"boot_tries": "3", "active_tries": "", "passive_tries": "3",
                            "assessed": "good:active.img"}
    assert system.report()["result"] == "good" and system.report()["booted"] == "active.img"


def test_a_failed_required_check_on_a_counted_try_reboots(system):
    system.env({**assessment.after_upgrade(system.env()), "active_tries": "1"})
    system.checks(required__50_service="echo no answer >&2; exit 1")
    system.boot("active.img")
    assert system.command("check") == 1 and system.reboots == [1]
    assert system.env()["assessed"] == "failed:active.img:50_service"
    assert system.env()["active_tries"] == "1"   # GRUB counts the next try, not this
    console = system.console.read_text()
    assert "required/50_service: FAILED (exit status 1: no answer)" in console
    assert "active.img has 1 tries left; rebooting in 0 s" in console
    assert system.report()["result"] == "failed: required/50_service"


@pytest.mark.parametrize("script, reason", [
    ("sleep 30", "did not end within 2 s"),
    ("exit 0", None),
])
def test_a_check_that_hangs_is_a_failed_one(system, script, reason):
    system.checks(required__hang=script)
    system.boot("active.img")   # not being assessed: a failure is reported, no reboot
    assert system.command("check") == (1 if reason else 0) and system.reboots == []
    if reason:
        assert reason in system.console.read_text()
        assert "not being assessed: no reboot" in system.console.read_text()


def test_a_rollback_is_reported(system):
    """active.img used its tries; GRUB booted passive.img, which passes."""
    system.env({"boot_tries": "3", "active_tries": "0", "passive_tries": "2"})
    system.checks(required__ok="true")
    system.boot("passive.img")
    assert system.command("check") == 0
    said = "active.img failed its boot assessment (3 tries): running passive.img"
    assert system.report()["rollback"] == said and said in system.console.read_text()
    assert system.command("success") == 0
    assert system.env()["passive_tries"] == "" and system.env()["active_tries"] == "0"
    assert system.report()["rollback"] == said   # success keeps what check found


def test_a_live_system_has_nothing_to_assess(system, capsys):
    system.checks(required__fail="exit 1")
    assert system.command("check") == 0 and system.command("success") == 0
    assert "nothing to assess" in capsys.readouterr().out and system.reboots == []


# --------------------------------------------------------------------------- cos-upgrade

@pytest.fixture
def upgrading(tmp_path, monkeypatch):
    """cos-upgrade on a COS_STATE folder with 8 MiB images: the channel offers
    system/sampleOS `offered`; everything real but the partition's mount (a folder), the
    repository (a stub choice) and the loop mount of the new image (its folder)."""
    state = tmp_path / "state"
    images = state / "cOS"
    images.mkdir(parents=True)
    layout.write_assessment(state, 3)
    log_file = tmp_path / "log"
    make_ext = fsimage.make_ext   # the real one: cos-upgrade's own is stubbed below

    def image(name, version):
        root = tmp_path / f"root-{name}"
        db = root / "var/lib/cosbuild/installed.yaml"
        db.parent.mkdir(parents=True, exist_ok=True)
        db.write_text(f"packages:\n  system/sampleOS:\n    version: {version}\n    files: []\n")
        with TaskLog(log_file) as log:
            (images / name).unlink(missing_ok=True)
            make_ext(images / name, root, label="X", size_mib=8, log=log, fs_type="ext2")

    class Chosen:
        id = "system/sampleOS"
        repo = type("R", (), {"name": "channel"})

    offered = {}

    def newest(ref_text, repos):
        c = Chosen()
        c.version = offered["version"]
        return ref_text, c

    @contextlib.contextmanager
    def unmounted(img, log):
        yield tmp_path / "filled"

    def fill(root, ref, repos):
        # what the transition image would hold: the offered version's package database
        image("transition.img", offered["version"])

    monkeypatch.setattr(upgrade, "partition", lambda label, log, writable=True:
                        contextlib.nullcontext(state))
    monkeypatch.setattr(upgrade, "repositories", lambda *a, **k: [])
    monkeypatch.setattr(upgrade, "newest", newest)
    monkeypatch.setattr(upgrade, "loop_mounted", unmounted)
    monkeypatch.setattr(upgrade, "fill_from_channel", fill)
    monkeypatch.setattr(upgrade.fsimage, "make_ext", lambda *a, **k: None)

    def run(version, *extra):
        offered["version"] = version
        config = tmp_path / "cos-upgrade-image"
        config.write_text("UPGRADE_IMAGE=system/sampleOS\n")
        ns = argparse.Namespace(config=config, repo_config=tmp_path / "luet.yaml",
                                        recovery=False, image=None, container=False,
                                        no_verify=False, force="--force" in extra, size=8)
        with TaskLog(log_file) as log:
            return upgrade.upgrade(ns, log)

    def version(name):
        with TaskLog(log_file) as log:
            return upgrade.installed_version(images / name, "system/sampleOS", log)

    image("active.img", "0.1.1")   # the upgrade that failed its assessment
    image("passive.img", "0.1.0")  # the system that runs
    return state, run, version


def test_after_a_rollback_the_same_image_is_not_applied_again_but_a_newer_one_is(upgrading):
    """The newer one replaces the failed image; the running passive.img stays the previous
    system, and both are counted anew."""
    state, run, version = upgrading
    env = state / layout.ASSESSMENT_FILE
    grubenv.write(env, {"boot_tries": "3", "active_tries": "0", "passive_tries": ""})
    said = run("0.1.1")
    assert "0.1.1, which failed its boot assessment" in said and "nothing to do" in said
    assert version("active.img") == "0.1.1" and version("passive.img") == "0.1.0"
    assert grubenv.read(env)["active_tries"] == "0"
    said = run("0.1.2")
    assert "active.img is now system/sampleOS 0.1.2" in said
    assert "passive.img stays the previous system" in said and "3 boots" in said
    assert version("active.img") == "0.1.2" and version("passive.img") == "0.1.0"
    assert grubenv.read(env) == {"boot_tries": "3", "active_tries": "3", "passive_tries": "3"}


def test_an_upgrade_of_a_good_system_rotates_and_counts_the_new_image(upgrading):
    state, run, version = upgrading
    env = state / layout.ASSESSMENT_FILE
    grubenv.write(env, {"boot_tries": "2", "active_tries": "", "passive_tries": ""})
    said = run("0.1.2")
    assert "the previous system is passive.img" in said and "2 boots" in said
    assert version("active.img") == "0.1.2" and version("passive.img") == "0.1.1"
    assert grubenv.read(env)["active_tries"] == "2"


def test_status_names_versions_tries_and_the_last_assessment(upgrading, tmp_path, monkeypatch):
    state, _, _ = upgrading
    recovery = tmp_path / "recovery"
    (recovery / "cOS").mkdir(parents=True)
    (state / "cOS/passive.img").rename(recovery / "cOS/recovery.img")
    grubenv.write(state / layout.ASSESSMENT_FILE,
                  {"boot_tries": "3", "active_tries": "0", "passive_tries": "",
                   "assessed": "failed:active.img:50-sampleOSService"})
    monkeypatch.setattr(upgrade, "partition", lambda label, log, writable=True:
                        contextlib.nullcontext(state if label == "COS_STATE" else recovery))
    report = tmp_path / "boot_assessment"
    report.write_text("booted=recovery.img\nresult=checks passed\n"
                      "rollback=active.img failed its boot assessment (3 tries)\n")
    config = tmp_path / "cos-upgrade-image"
    config.write_text("UPGRADE_IMAGE=system/sampleOS\n")
    ns = argparse.Namespace(config=config, report=report)
    with TaskLog(tmp_path / "log") as log:
        text = upgrade.status(ns, log)
    assert text.splitlines() == [
        "active.img: system/sampleOS 0.1.1, 0 tries left (failed its boot assessment)",
        "boot tries of a new image: 3",
        "last assessment: failed:active.img:50-sampleOSService",
        "recovery.img: system/sampleOS 0.1.0",
        "this boot: recovery.img, checks passed",
        "rollback: active.img failed its boot assessment (3 tries)"]
