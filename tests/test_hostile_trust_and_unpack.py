"""The client's trust state and unpacking against hostile roots, repositories and artifacts
(issue #32 and the unpacking bounds):

- the trust state kept in a root (var/lib/cosbuild/tuf) is written by packages, finalizers and
  cloud-config of that root as much as by the client: the trusted root the user gives always
  anchors verification, packages may not hold files there, and a planted state is discarded;
- artifact tar headers are checked before they are used (times, owners, sizes, modes);
- unpacking is bounded by what is really written, whatever an unsigned index claims;
- a corrupt package database or journal, and requirement cycles, are one clear message.
"""

from __future__ import annotations

import logging
import shutil
import tarfile
from pathlib import Path

import pytest
import yaml

from cosbuild.errors import CosbuildError
from cosbuild.repos import signing, transaction
from cosbuild.repos.config import TRUST_STATE, file_name, repositories
from cosbuild.repos.resolve import DB_PATH

from .test_repository_client import Workspace, lib_and_app, ref, snapshot
from .test_signed_repositories import cosbuild, published, sign, version



@pytest.fixture
def ws(project) -> Workspace:
    return Workspace(project.path)


@pytest.fixture
def keys(tmp_path) -> Path:
    signing.generate(tmp_path / "keys")
    return tmp_path / "keys"


@pytest.fixture
def foreign(tmp_path) -> Path:
    """Another key set, rotated to root version 3: an attacker's, newer than the real root."""
    signing.generate(tmp_path / "foreign")
    signing.rotate(tmp_path / "foreign")
    signing.rotate(tmp_path / "foreign")
    return tmp_path / "foreign"


def signed(repo: Path, root: Path, trusted: Path):
    return repositories([str(repo)], None, root, trusted_root=trusted)


def state_of(root: Path, repo: Path) -> Path:
    return root / TRUST_STATE / file_name(str(repo))


def plant_state(state: Path, keys: Path) -> None:
    """What a package, a finalizer or cloud-config of the root could write: the trust state
    of another key set (its root, as a client trusting it would keep it)."""
    state.mkdir(parents=True, exist_ok=True)
    shutil.copy(keys / "root.json", state / "root.json")


def discarded(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "trust state" in r.getMessage()]


# --------------------------------------------------------------------------- issue #32

def test_a_package_may_not_install_a_trust_state(ws, keys, foreign, tmp_path):
    """The attack: an unsigned repository's package ships a forged trust state."""
    name = file_name("signed")
    ws.add("evil", files={f"{TRUST_STATE}/{name}/root.json": (foreign / "root.json").read_text()})
    unsigned = ws.publish("unsigned")
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=rf"refusing to install test/evil@1\.0: it has "
                                            rf"/{TRUST_STATE}/{name}/root\.json, in the place of "
                                            r"cosbuild's trust state"):
        transaction.install(root, [ref("test/evil")], repositories([str(unsigned)], None, root))
    assert snapshot(root) == {}


@pytest.mark.parametrize("path", [
    f"{TRUST_STATE}/x/timestamp.json",   # any file of any repository's state
    f"{TRUST_STATE}",                     # a file where the folder is
    "var/lib/cosbuild",                  # a link there would move the state elsewhere
    "var",                               # ... and so would one higher up
    DB_PATH,                             # the package database
])
def test_no_package_file_in_or_over_the_clients_state(ws, tmp_path, path):
    ws.add("evil", files={path: "x\n", "usr/bin/evil": "x\n"})
    repo = ws.publish()
    root = tmp_path / "root"
    root.mkdir()
    with pytest.raises(CosbuildError, match=rf"test/evil@1\.0: it has /{path}, in the place of "
                                            r"cosbuild's .* nothing was installed"):
        transaction.install(root, [ref("test/evil")], repositories([str(repo)], None, root))
    assert snapshot(root) == {}


def test_a_link_over_the_state_folder_is_refused(ws, tmp_path):
    from .test_repository_client import Sym
    ws.add("evil", files={"var/lib/cosbuild": Sym("/usr/share/evil"), "usr/share/evil/x": "x"})
    repo = ws.publish()
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"it has /var/lib/cosbuild, in the place of"):
        transaction.install(root, [ref("test/evil")], repositories([str(repo)], None, root))
    assert not (root / "var").exists()


def test_a_planted_newer_state_does_not_beat_the_trusted_root(ws, keys, foreign, tmp_path,
                                                              caplog):
    """The attack, whoever planted the state (a finalizer, cloud-config, an older client):
    a repository signed with another key set is refused under the real trusted root."""
    repo = published(ws, foreign)          # signed by the attacker's keys, roots 1..3
    root = tmp_path / "root"
    state = state_of(root, repo)
    plant_state(state, foreign)             # root version 3 > the real root's 1
    before = snapshot(root, skip=(TRUST_STATE,))
    with caplog.at_level(logging.WARNING), \
            pytest.raises(CosbuildError, match=r"tuf-2\.root\.json: refused \(signature\)"):
        transaction.install(root, [ref("test/app")], signed(repo, root, keys / "root.json"))
    assert snapshot(root, skip=(TRUST_STATE,)) == before
    [warning] = discarded(caplog)
    assert str(state) in warning and "does not chain to the trusted root" in warning
    assert (state / "root.json").read_bytes() != (foreign / "root.json").read_bytes()
    assert version(state / "root.json") == 1   # the real root again


def test_a_planted_state_of_the_same_version_is_discarded(ws, keys, tmp_path, caplog):
    other = tmp_path / "other"
    signing.generate(other)                 # version 1, like the real root
    repo = published(ws, other)
    root = tmp_path / "root"
    plant_state(state_of(root, repo), other)
    with caplog.at_level(logging.WARNING), \
            pytest.raises(CosbuildError, match=r"tuf-timestamp\.json: refused \(signature\)"):
        transaction.install(root, [ref("test/app")], signed(repo, root, keys / "root.json"))
    assert len(discarded(caplog)) == 1
    assert not (root / "usr").exists()


def test_a_planted_rotation_record_is_not_followed(ws, keys, foreign, tmp_path, caplog):
    """N.root.json next to the state's root must be signed by the root before it."""
    repo = published(ws, foreign)
    root = tmp_path / "root"
    state = state_of(root, repo)
    state.mkdir(parents=True)
    shutil.copy(keys / "root.json", state / "root.json")
    for n in (2, 3):
        shutil.copy(foreign / f"{n}.root.json", state / f"{n}.root.json")
    with caplog.at_level(logging.WARNING), pytest.raises(CosbuildError, match=r"\(signature\)"):
        transaction.install(root, [ref("test/app")], signed(repo, root, keys / "root.json"))
    assert discarded(caplog) == []          # the real root itself: kept
    assert not (root / "usr").exists()


@pytest.mark.parametrize("plant", ["garbage", "not a folder", "link out"])
def test_a_damaged_or_linked_state_is_discarded_and_verification_starts_again(
        ws, keys, tmp_path, caplog, plant):
    repo = published(ws, keys)
    root = tmp_path / "root"
    state = state_of(root, repo)
    state.parent.mkdir(parents=True)
    outside = tmp_path / "outside"
    outside.mkdir()
    if plant == "garbage":
        state.mkdir()
        (state / "root.json").write_bytes(b"\x00{not json")
    elif plant == "not a folder":
        state.write_text("x")
    else:
        state.symlink_to(outside)
    with caplog.at_level(logging.WARNING):
        done = transaction.install(root, [ref("test/app")], signed(repo, root, keys / "root.json"))
    assert [str(c) for c in done] == ["test/lib@1.0", "test/app@1.0"]
    assert len(discarded(caplog)) == 1
    assert state.is_dir() and not state.is_symlink() and (state / "timestamp.json").is_file()
    assert list(outside.iterdir()) == []    # nothing written through the link


def test_a_state_that_chains_to_the_trusted_root_keeps_working(ws, keys, tmp_path, caplog):
    """The legit path: install, then a key rotation, then upgrades with the old root."""
    repo = published(ws, keys)
    old_root = tmp_path / "old-root.json"
    shutil.copy(keys / "root.json", old_root)
    root = tmp_path / "root"
    state = state_of(root, repo)
    with caplog.at_level(logging.WARNING):
        transaction.install(root, [ref("test/app")], signed(repo, root, old_root))
        assert signing.rotate(keys, ("timestamp",)) == 2
        ws.add("app", "2.0", files={"usr/bin/app": "v2\n"}, requires=["test/lib"])
        ws.publish()
        assert sign(ws, keys)
        done = transaction.upgrade(root, signed(repo, root, old_root))
        assert [str(c) for c in done] == ["test/app@2.0"]
        assert version(state / "root.json") == 2 and (state / "2.root.json").is_file()
        # the next run walks the recorded rotation from the old trusted root: no warning
        assert transaction.upgrade(root, signed(repo, root, old_root)) == []
        # and the new root given directly anchors as well
        assert transaction.upgrade(root, signed(repo, root, keys / "root.json")) == []
    assert discarded(caplog) == []
    assert (root / "usr/bin/app").read_text() == "v2\n"


def test_a_newer_trusted_root_replaces_an_older_state_silently(ws, keys, tmp_path, caplog):
    repo = published(ws, keys)
    root = tmp_path / "root"
    transaction.install(root, [ref("test/lib")], signed(repo, root, keys / "root.json"))
    signing.rotate(keys)
    assert sign(ws, keys)
    with caplog.at_level(logging.WARNING):
        transaction.install(root, [ref("test/app")], signed(repo, root, keys / "root.json"))
    assert discarded(caplog) == []
    assert version(state_of(root, repo) / "root.json") == 2


def test_a_rotated_state_without_its_record_starts_again_once(ws, keys, tmp_path, caplog):
    """A state an older client wrote after a rotation has no N.root.json: it cannot be
    checked, so it is discarded once; the rotation is walked again and recorded."""
    repo = published(ws, keys)
    old_root = tmp_path / "old-root.json"
    shutil.copy(keys / "root.json", old_root)
    signing.rotate(keys)
    assert sign(ws, keys)
    root = tmp_path / "root"
    plant_state(state_of(root, repo), keys)   # root version 2, no 2.root.json
    with caplog.at_level(logging.WARNING):
        transaction.install(root, [ref("test/lib")], signed(repo, root, old_root))
        assert len(discarded(caplog)) == 1
        transaction.install(root, [ref("test/app")], signed(repo, root, old_root))
    assert len(discarded(caplog)) == 1
    assert (state_of(root, repo) / "2.root.json").is_file()


def test_the_cli_warns_and_refuses_the_foreign_repository(ws, keys, foreign, tmp_path):
    repo = published(ws, foreign)
    root = tmp_path / "root"
    plant_state(state_of(root, repo), foreign)
    result = cosbuild("upgrade", "--root", str(root), "--repo", str(repo),
                      "--trusted-root", str(keys / "root.json"))
    code, err = result.returncode, result.stderr
    assert code == 1 and "Traceback" not in err
    assert "trust state of repository" in err and "discarded" in err
    assert "refused (signature)" in err and "nothing was installed" in err
