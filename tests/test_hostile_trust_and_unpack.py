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

import io
import logging
import re
import shutil
import stat
import tarfile
from pathlib import Path

import pytest

from cosbuild import luetformat
from cosbuild.errors import CosbuildError
from cosbuild.repos import signing, transaction
from cosbuild.repos.config import TRUST_STATE, RepoConfig, file_name, repositories
from cosbuild.repos.extract import extract_safely
from cosbuild.repos.index import Candidate
from cosbuild.repos.resolve import DB_PATH, Installed, plan
from cosbuild.tree.load import parse_definition
from cosbuild.tree.spec import Finalize

from .hostile_repo import Repo, entry
from .test_repository_client import Sym, Workspace, ref, snapshot
from .test_signed_repositories import (cosbuild, keys, published, sign,  # noqa: F401
                                       version, ws)  # (keys, ws: fixtures)



@pytest.mark.parametrize("name, stored", [
    ("r", "r"), ("../../etc", "______etc"), ("..", "__"), (".hidden", "hidden"), ("", "_"),
    ("a\0b", "a_b"), ("a\nb\x1b[2J", "a_b_[2J"), ("http://host/repo", "http:__host_repo"),
])
def test_a_repository_name_is_one_plain_file_name_of_the_trust_state(name, stored):
    """Names come from luet.yaml and URLs: a NUL (which no file name holds) or a control
    character would be a traceback or a name no one can type."""
    assert file_name(name) == stored


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


# --------------------------------------------------------------------------- tar headers

def pax(name: str = "usr/bin/app", data: bytes = b"x\n", kind: bytes = tarfile.REGTYPE,
        **headers) -> bytes:
    """A tar of one entry whose pax header says `headers` (what any writer may put there)."""
    info = tarfile.TarInfo(name)
    info.type, info.mode = kind, 0o644
    info.size, info.linkname = (len(data), "") if kind == tarfile.REGTYPE else (0, "x")
    info.pax_headers = {k: str(v) for k, v in headers.items()}
    return tar_of([(info, data)])


def raw_field(field: str, value: bytes, kind: bytes = tarfile.REGTYPE) -> bytes:
    """A ustar tar of one entry whose header `field` is `value` (as a hostile writer puts
    it: base-256 or octal beyond what tarfile writes), its checksum fixed."""
    offsets = {"mode": (100, 8), "devmajor": (329, 8), "devminor": (337, 8)}
    info = tarfile.TarInfo("usr/bin/app")
    info.type, info.size = kind, 2 if kind == tarfile.REGTYPE else 0
    data = bytearray(tar_of([(info, b"x\n" if kind == tarfile.REGTYPE else b"")],
                            tarfile.USTAR_FORMAT))
    start, width = offsets[field]
    data[start:start + width] = value.ljust(width, b"\0")
    data[148:156] = b" " * 8
    data[148:156] = b"%06o\0 " % sum(data[:512])
    return bytes(data)


def tar_of(entries, fmt=tarfile.PAX_FORMAT) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as tar:
        for info, data in entries:
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return buf.getvalue()


APP = "'usr/bin/app' has"
HEADERS = {
    "mtime far future": (pax(mtime="1e30"), rf"{APP} mtime 1e\+30 in its header"),
    "mtime infinite": (pax(mtime="inf"), rf"{APP} mtime inf in its header"),
    "mtime NaN": (pax(mtime="nan"), rf"{APP} mtime nan in its header"),
    "mtime negative": (pax(mtime="-100"), rf"{APP} mtime -100\.0 in its header"),
    "uid huge": (pax(uid=2**40), rf"{APP} uid 1099511627776 in its header, not between 0 and"),
    "uid negative": (pax(uid=-5), rf"{APP} uid -5 in its header"),
    "gid huge": (pax(gid=10**20), rf"{APP} gid 100000000000000000000 in its header"),
    "size negative": (pax(size=-5), rf"{APP} size -5 in its header"),
    "mode beyond the file type bits": (raw_field("mode", b"7777777"),
                                       rf"{APP} mode 2097151 in its header, not between 0 "
                                       r"and 65535"),
    "mode negative (base-256)": (raw_field("mode", b"\xff" * 8), rf"{APP} mode -1 in its"),
    "devmajor huge (base-256)": (raw_field("devmajor", b"\x80\x01", tarfile.CHRTYPE),
                                 rf"{APP} devmajor \d+ in its header, not between 0 and "
                                 r"4294967295"),
    "NUL in the name": (pax(path="usr/bin/a\0b"), r"'usr/bin/a\\x00b' has a NUL character in "
                                                  r"its name"),
    "NUL in a link target": (pax(kind=tarfile.SYMTYPE, linkpath="a\0b"),
                             rf"{APP} a NUL character in its link target"),
    "NUL in an xattr name": (pax(**{"SCHILY.xattr.user.a\0b": "v"}),
                             rf"{APP} a NUL character in its pax header 'SCHILY\.xattr\.user\.a"),
}


@pytest.mark.parametrize("case", sorted(HEADERS))
def test_artifact_headers_are_checked_before_use(tmp_path, case):
    data, message = HEADERS[case]
    archive = tmp_path / "app.tar"
    archive.write_bytes(data)
    dest = tmp_path / "dest"
    dest.mkdir()
    with pytest.raises(CosbuildError, match=rf"refusing to install test/app@1\.0: {message}") \
            as info:
        extract_safely(archive, dest, "test/app@1.0", compression=luetformat.NONE,
                       devices=True)
    assert "nothing was installed" in str(info.value)
    assert info.value.__context__ is None or info.value.__suppress_context__
    assert list(dest.iterdir()) == []


def test_go_style_modes_with_the_file_type_bits_install(tmp_path):
    """luet's artifacts come from Go's archive/tar, which keeps c_ISREG in the mode."""
    archive = tmp_path / "app.tar"
    archive.write_bytes(raw_field("mode", b"0100750"))
    dest = tmp_path / "dest"
    dest.mkdir()
    assert extract_safely(archive, dest, "x", compression=luetformat.NONE) == ["/usr/bin/app"]
    assert stat.S_IMODE((dest / "usr/bin/app").stat().st_mode) == 0o750


@pytest.mark.parametrize("headers", [{"mtime": "1e30"}, {"uid": str(2**40)}])
def test_a_hostile_header_through_the_cli_is_one_message(tmp_path, run_cli, headers):
    info = tarfile.TarInfo("usr/bin/app")
    info.size, info.pax_headers = 2, headers
    repo = Repo(tmp_path / "repo", [(info, b"x\n")]).write()
    root = tmp_path / "root"
    code, out, err = run_cli("install", "--root", str(root), "--repo", str(repo.folder),
                             "test/app")
    field = next(iter(headers))
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert f"refusing to install test/app@1.0: 'usr/bin/app' has {field} " in err
    assert not (root / "usr").exists()


# --------------------------------------------------------------------------- unpacking bounds

MiB = 1 << 20


@pytest.fixture
def disk_free(monkeypatch):
    """Makes every disk report `free(n)` bytes free (what the target's disk can hold)."""
    real = shutil.disk_usage

    def free(n: int) -> None:
        monkeypatch.setattr(shutil, "disk_usage",
                            lambda path: real(path)._replace(free=n))
    return free


def zeros_repo(folder: Path, size: int, **record_extra) -> Repo:
    """An unsigned repository whose artifact is `size` zero bytes in one file (a few KiB
    compressed), its index recording `record_extra` (luet's fields and cosbuild's sizes)."""
    repo = Repo(folder, [entry("usr/share/zeros", data=bytes(size))], record_extra=record_extra)
    return repo.write()


def install_from(repo: Repo, root: Path, bounds: luetformat.Bounds = luetformat.DEFAULT_BOUNDS):
    return transaction.install(root, [ref("test/app")], [
        RepoConfig(name="r", urls=(str(repo.folder),), bounds=bounds)])


def test_an_index_cannot_raise_the_fixed_bound(tmp_path, disk_free):
    """The index claims 1 TiB, the disk has room for it: the fixed bound still holds."""
    disk_free(2 << 40)
    repo = zeros_repo(tmp_path / "repo", 8 * MiB, unpacked_size=1 << 40)
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"refusing to install test/app@1\.0: the archive is "
                                            r"larger than 4 MiB once decompressed, more than "
                                            r"any artifact may unpack to"):
        install_from(repo, root, luetformat.Bounds(artifact_unpacked=4 * MiB))
    assert not (root / "usr").exists() and not (root / transaction.TRANSACTION).exists()


def test_unpacking_is_bounded_by_the_free_space_of_the_target(tmp_path, disk_free):
    repo = zeros_repo(tmp_path / "repo", 8 * MiB)   # no sizes recorded: 64 MiB by the floor
    root = tmp_path / "root"
    root.mkdir()
    disk_free(3 * MiB)
    with pytest.raises(CosbuildError, match=r"larger than 3 MiB once decompressed, more than "
                                            r"is free in .*root"):
        install_from(repo, root)
    assert snapshot(root) == {}


def test_header_sizes_are_counted_before_their_data(tmp_path, disk_free):
    """A header announcing 1 TiB is refused by its count, before any of it is read."""
    disk_free(2 << 40)
    info = tarfile.TarInfo("usr/share/zeros")
    info.size, info.pax_headers = 0, {"size": str(1 << 40)}
    repo = Repo(tmp_path / "repo", [(info, b"")], record_extra={"unpacked_size": 1 << 40})
    repo.index[0]["files"] = ["usr/share/zeros"]
    repo.write()
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"the archive is larger than 16384 MiB once "
                                            r"decompressed, more than any artifact may"):
        install_from(repo, root)
    assert not (root / "usr").exists()


def test_within_every_bound_it_installs(tmp_path, disk_free):
    disk_free(2 << 40)
    repo = zeros_repo(tmp_path / "repo", 2 * MiB, unpacked_size=1 << 40)
    root = tmp_path / "root"
    install_from(repo, root, luetformat.Bounds(artifact_unpacked=4 * MiB))
    assert (root / "usr/share/zeros").stat().st_size == 2 * MiB


# --------------------------------------------------------------------------- local data

DATABASES = {
    "not YAML": (b"packages: [\n", r"installed\.yaml"),
    "not UTF-8": (b"\xff\xfe\x00", r"installed\.yaml: not UTF-8 text"),
    "a list": (b"- 1\n", r"installed\.yaml:1: expected a mapping at the top level"),
    "packages a list": (b"packages: [1, 2]\n", r"packages: expected a mapping of packages"),
    "record text": (b"packages: {test/a: x}\n", r"packages\.test/a: expected a mapping"),
    "no version": (b"packages: {test/a: {files: []}}\n",
                   r"missing required keyword 'version' in the record of test/a"),
    "files a number": (b"packages: {test/a: {version: '1', files: 3}}\n",
                       r"packages\.test/a\.files: expected a list, got"),
    "requires a mapping": (b"packages: {test/a: {version: '1', requires: {x: 1}}}\n",
                           r"packages\.test/a\.requires: expected a list"),
    "empty finalizer": (b"packages: {test/a: {version: '1', finalize: [[]]}}\n",
                        r"packages\.test/a\.finalize: an empty command line"),
    "finalized text": (b"packages: {test/a: {version: '1', finalized: maybe}}\n",
                       r"packages\.test/a\.finalized: expected"),
    "id without a category": (b"packages: {app: {version: '1'}}\n",
                              r"packages\.app: not a package name \(category/name\)"),
}


@pytest.mark.parametrize("case", sorted(DATABASES))
@pytest.mark.parametrize("command", ["install", "upgrade", "uninstall"])
def test_a_corrupt_package_database_is_one_message(tmp_path, run_cli, case, command):
    data, message = DATABASES[case]
    repo = Repo(tmp_path / "repo").write()
    root = tmp_path / "root"
    (root / DB_PATH).parent.mkdir(parents=True)
    (root / DB_PATH).write_bytes(data)
    before = snapshot(root)
    args = {"install": ["--repo", str(repo.folder), "test/app"],
            "upgrade": ["--repo", str(repo.folder)], "uninstall": ["test/app"]}[command]
    code, out, err = run_cli(command, "--root", str(root), *args)
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert str(root / DB_PATH) in err and re.search(message, err), err
    assert "the package database is damaged" in err
    assert snapshot(root) == before


JOURNALS = {
    "not YAML": (b"db: [\n", r"journal\.yaml"),
    "no db": (b"remove: []\n", r"missing required keyword 'db' in journal"),
    "db a list": (b"db: [1]\n", r"journal\.yaml:1: db: expected a string"),
    "db not a database": (b"db: '- 1'\n", r"journal\.yaml: db: expected a mapping at the top"),
    "db with a bad record": (b"db: 'packages: {test/a: {files: 3}}'\n",
                             r"journal\.yaml: db:1: version: missing required keyword 'version' "
                             r"in the record of test/a"),
    "remove a mapping": (b"db: ''\nremove: {a: 1}\n", r"remove: expected a list"),
}


@pytest.mark.parametrize("case", sorted(JOURNALS))
def test_a_corrupt_journal_is_one_message_and_nothing_moves(tmp_path, run_cli, case):
    data, message = JOURNALS[case]
    repo = Repo(tmp_path / "repo").write()
    root = tmp_path / "root"
    work = root / transaction.TRANSACTION
    (work / "rootfs/etc").mkdir(parents=True)
    (work / "rootfs/etc/staged").write_text("x\n")
    (work / "journal.yaml").write_bytes(data)
    before = snapshot(root)
    code, out, err = run_cli("install", "--root", str(root), "--repo", str(repo.folder),
                             "test/app")
    assert code == 1 and "Traceback" not in err and err.count("\n") == 1, err
    assert re.search(message, err) and "journal of an interrupted install is damaged" in err, err
    assert snapshot(root) == before   # neither moved nor removed


def test_a_package_requiring_itself_is_installed(ws, tmp_path):
    """As luet: a package satisfies its own requirement (documented in resolve.py)."""
    ws.add("a", files={"usr/bin/a": "a\n"}, requires=["test/a@>=1.0"])
    root = tmp_path / "root"
    done = transaction.install(root, [ref("test/a")], repositories([str(ws.publish())], None))
    assert [str(c) for c in done] == ["test/a@1.0"] and (root / "usr/bin/a").is_file()


def test_a_self_requirement_it_does_not_satisfy_is_a_clear_error(ws, tmp_path):
    ws.add("a", files={"usr/bin/a": "a\n"}, requires=["test/a@>=2"])
    root = tmp_path / "root"
    with pytest.raises(CosbuildError, match=r"test/a@1\.0 requires test/a@>=2, but "
                                            r"test/a@1\.0 is also required"):
        transaction.install(root, [ref("test/a")], repositories([str(ws.publish())], None))
    assert not (root / "usr").exists()


def test_a_requires_cycle_is_installed_together(ws, tmp_path):
    ws.add("a", files={"usr/bin/a": "a\n"}, requires=["test/b"])
    ws.add("b", files={"usr/bin/b": "b\n"}, requires=["test/c"])
    ws.add("c", files={"usr/bin/c": "c\n"}, requires=["test/a"])
    repo = ws.publish()
    root = tmp_path / "root"
    done = transaction.install(root, [ref("test/a")], repositories([str(repo)], None))
    assert [str(c) for c in done] == ["test/c@1.0", "test/b@1.0", "test/a@1.0"]
    with pytest.raises(CosbuildError, match=r"test/a requires test/b"):
        transaction.uninstall(root, ["test/b"])
    transaction.uninstall(root, ["test/a", "test/b", "test/c"])
    assert not (root / "usr/bin/a").exists()


DEPTH = 5000   # far beyond Python's recursion limit


def chain_candidates(depth: int) -> list:
    """p0 requires p1 requires ... p<depth>, as a repository would offer them."""
    repo = RepoConfig(name="r", urls=("x",))
    out = []
    for n in range(depth + 1):
        data = {"name": f"p{n}", "category": "test", "version": "1.0"}
        if n < depth:
            data["requires"] = [{"name": f"p{n + 1}", "category": "test", "version": ">=0"}]
        out.append(Candidate(parse_definition(data, Path("tree")), Finalize(), f"p{n}.tar",
                             "0" * 64, (), luetformat.NONE, repo))
    return out


def test_a_very_deep_requires_chain_is_solved_without_recursion():
    order = plan([ref("test/p0")], chain_candidates(DEPTH), Installed({}))
    assert [c.definition.name for c in order] == [f"p{n}" for n in range(DEPTH, -1, -1)]


def test_a_very_deep_chain_of_unfinalized_packages_is_ordered_without_recursion():
    installed = Installed.parse({"packages": {
        f"test/p{n}": {"version": "1.0", "finalized": n % 2 == 0,
                       "requires": [f"test/p{n + 1}"] if n < DEPTH else []}
        for n in range(DEPTH + 1)}}, "db")
    assert installed.unfinalized() == [f"test/p{n}" for n in range(DEPTH, -1, -1) if n % 2]


def test_a_requires_cycle_in_the_database_is_ordered_once():
    installed = Installed.parse({"packages": {
        "test/a": {"version": "1", "finalized": False, "requires": ["test/b", "test/a"]},
        "test/b": {"version": "1", "finalized": False, "requires": ["test/a"]}}}, "db")
    assert installed.unfinalized() == ["test/b", "test/a"]
