"""The SPDX SBOM beside the ISO and the disk (images/sbom.py): what it lists, that spdx-tools
finds it valid, that it is reproducible, and that a hostile dpkg status is refused with one
message naming the file."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from spdx_tools.spdx.model import RelationshipType, SpdxNoAssertion
from spdx_tools.spdx.parser.parse_anything import parse_file
from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document

from cosbuild import settings
from cosbuild.errors import CosbuildError
from cosbuild.images import sbom
from cosbuild.tree.project import load_project

from .conftest import DISK_NAME, REPO, cosbuild_ok

STATUS = """\
Package: systemd
Status: install ok installed
Priority: important
Architecture: amd64
Version: 252.22-1~deb12u1
Description: system and service manager
 systemd is a system and service manager for Linux.
 .
 It provides aggressive parallelization capabilities.

Package: libstdc++6
Status: install ok installed
Architecture: amd64
Multi-Arch: same
Source: gcc-12 (12.2.0-14)
Version: 1:2.3-4+b1
Depends: gcc-12-base (= 12.2.0-14), libc6 (>= 2.36)
Description: GNU Standard C++ Library v3

Package: linux-image-6.1.0-18-amd64
Status: hold ok installed
Architecture: amd64
Version: 6.1.76-1
Description: Linux 6.1 for 64-bit PCs (signed)
\t(a tab continues a field too)

Package: removed
Status: deinstall ok config-files
Architecture: amd64
Version: 1.0-1
Description: only its configuration files are left

Package: unpacked-only
Status: install ok unpacked
Architecture: all
Version: 2.0
"""

INSTALLED = [("libstdc++6", "1:2.3-4+b1", "amd64"),
             ("linux-image-6.1.0-18-amd64", "6.1.76-1", "amd64"),
             ("systemd", "252.22-1~deb12u1", "amd64")]

# a tree like the sample's: an OS package made of the final artifacts of a service and a
# Debian base (requires_final_images + unpack), one of them with a free-text license
TREE = {
    "tree/base/definition.yaml": "name: base\ncategory: distro\nversion: '1.0'\nlicense: various\n",
    "tree/base/build.yaml": "image: debian:bookworm\nunpack: true\n",
    "tree/svc/definition.yaml": ("name: svc\ncategory: app\nversion: '0.1'\n"
                                 "license: Apache-2.0\nrequires:\n"
                                 "  - {name: base, category: distro}\n"),
    "tree/svc/build.yaml": "image: golang\nsteps: [make]\n",
    "tree/os/definition.yaml": "name: os\ncategory: system\nversion: '2.0'\n",
    "tree/os/build.yaml": ("requires:\n  - {name: svc, category: app}\n"
                           "requires_final_images: true\nsteps: [brand]\nunpack: true\n"),
    # built on svc's image (a chain), its own files only (no unpack): it holds nothing
    "tree/tool/definition.yaml": "name: tool\ncategory: dev\nversion: '3'\n",
    "tree/tool/build.yaml": "requires:\n  - {name: svc, category: app}\nsteps: [make]\n",
    # the same, its whole image: it holds svc and what svc's image was made of
    "tree/full/definition.yaml": "name: full\ncategory: dev\nversion: '4'\n",
    "tree/full/build.yaml": "requires:\n  - {name: tool, category: dev}\nunpack: true\n",
}
OS_SHA = "ab" * 32


def dpkg_root(folder: Path, status: str | bytes = STATUS) -> Path:
    """A staged root with `status` as its dpkg status."""
    (folder / "var/lib/dpkg").mkdir(parents=True)
    target = folder / sbom.DPKG_STATUS
    target.write_bytes(status.encode() if isinstance(status, str) else status)
    return folder


@pytest.fixture
def sample_like(project):
    """(project, manifest, root): the tree above loaded, its artifacts in build/ (os's
    installed, as the manifest says), a staged root with the dpkg status above."""
    root = project(TREE)
    loaded = load_project(settings.resolve({}, env={}))
    build = loaded.settings.build_dir
    build.mkdir(exist_ok=True)
    for key, pkg in loaded.graph.packages.items():
        (build / pkg.artifact_file).write_bytes(f"artifact of {key}".encode())
    manifest = build / "rootfs.manifest"
    manifest.write_text(f"packages:\n  system/os@2.0: {OS_SHA}\n")
    return loaded, manifest, dpkg_root(root / "rootfs")


def write(sample_like, target: Path) -> Path:
    loaded, manifest, root = sample_like
    sbom.write_sbom(target, "sample-0.live", loaded, [manifest], root)
    return target


def debs(doc) -> list[tuple[str, str, str]]:
    return sorted((p.name, p.version, p.external_references[0].locator)
                  for p in doc.packages if p.spdx_id.startswith("SPDXRef-deb-"))


# ----------------------------------------------------------------------------- the dpkg status

def test_dpkg_status_lists_the_installed_packages_only():
    found = sbom.parse_dpkg_status(STATUS, "status")
    assert [(d.name, d.version, d.arch) for d in found] == INSTALLED


def test_purls_are_escaped_but_for_the_epoch_colon():
    libstdc = sbom.DebPackage("libstdc++6", "1:2.3-4+b1", "amd64")
    assert libstdc.purl == "pkg:deb/debian/libstdc%2B%2B6@1:2.3-4%2Bb1?arch=amd64"
    assert sbom.DebPackage("gnupg", "2.2.40-1.1~bpo", "all").purl == \
        "pkg:deb/debian/gnupg@2.2.40-1.1~bpo?arch=all"


def test_a_root_without_dpkg_has_no_debian_packages(tmp_path):
    assert sbom.read_dpkg_status(tmp_path) == []


def test_the_status_is_read_through_links_inside_the_root(tmp_path):
    root = tmp_path / "root"
    (root / "srv/dpkg").mkdir(parents=True)
    (root / "srv/dpkg/status").write_text(STATUS)
    (root / "var/lib").mkdir(parents=True)
    (root / "var/lib/dpkg").symlink_to("/srv/dpkg")   # absolute: from the root, not the host
    assert [d.name for d in sbom.read_dpkg_status(root)] == [n for n, _, _ in INSTALLED]


BAD_STATUS = {
    "not a field": ("Package: a\nStatus: install ok installed\nthis line has no colon\n", 3,
                    "is not a field"),
    "continuation first": (" continued\nPackage: a\n", 1, "continuation line"),
    "a comment": ("Package: a\n# dpkg has no comments\n", 2, "is not a field"),
    "a field twice": ("Package: a\nStatus: install ok installed\nVersion: 1\nVersion: 2\n", 4,
                      "Version twice"),
    "no version": ("Package: a\nStatus: install ok installed\nArchitecture: all\n", 1,
                   "has no Version"),
    "no status": ("Package: a\nVersion: 1\nArchitecture: all\n", 1, "has no Status"),
    "bad status": ("Package: a\nStatus: installed\nVersion: 1\nArchitecture: all\n", 2,
                   "'want flag status'"),
    "bad name": ("Package: A/../b\nStatus: install ok installed\nVersion: 1\n"
                 "Architecture: all\n", 1, "not a valid Package"),
    "bad version": ("\n\nPackage: a\nStatus: install ok installed\nVersion: 1 2\n"
                    "Architecture: all\n", 5, "not a valid Version"),
    "bad architecture": ("Package: a\nStatus: install ok installed\nVersion: 1\n"
                         "Architecture: amd64?x=1\n", 4, "not a valid Architecture"),
}


@pytest.mark.parametrize("case", sorted(BAD_STATUS))
def test_a_malformed_status_is_one_message_with_the_file_and_line(tmp_path, case):
    text, line, says = BAD_STATUS[case]
    root = dpkg_root(tmp_path, STATUS + "\n" + text)
    with pytest.raises(CosbuildError) as caught:
        sbom.read_dpkg_status(root)
    message = str(caught.value)
    shifted = line + STATUS.count("\n") + 1
    assert message.startswith(f"{root / sbom.DPKG_STATUS}:{shifted}: ") and says in message
    assert "\n" not in message


def test_undecodable_bytes_outside_the_fields_read_do_not_matter(tmp_path):
    root = dpkg_root(tmp_path, STATUS.encode().replace(b"aggressive", b"\xff\xfe"))
    assert len(sbom.read_dpkg_status(root)) == len(INSTALLED)


def test_an_oversize_status_is_refused_unread(tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "STATUS_LIMIT", len(STATUS) - 1)
    root = dpkg_root(tmp_path)
    with pytest.raises(CosbuildError, match="larger than") as caught:
        sbom.read_dpkg_status(root)
    assert str(caught.value).startswith(f"{root / sbom.DPKG_STATUS}: ")


def test_too_many_packages_are_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(sbom, "PACKAGES_LIMIT", 2)
    with pytest.raises(CosbuildError, match="more than 2 installed packages"):
        sbom.read_dpkg_status(dpkg_root(tmp_path))


@pytest.mark.parametrize("link", ["absolute", "relative"])
def test_a_status_linked_out_of_the_root_is_not_read(tmp_path, link):
    """The link is resolved inside the root, where nothing is there: an error naming the
    file, and the host file (a valid status) is never read."""
    outside = tmp_path / "host-status"
    outside.write_text(STATUS)
    root = tmp_path / "root"
    (root / "var/lib/dpkg").mkdir(parents=True)
    target = str(outside) if link == "absolute" else os.path.relpath(outside, root / "var/lib/dpkg")
    (root / sbom.DPKG_STATUS).symlink_to(target)
    with pytest.raises(CosbuildError) as caught:
        sbom.read_dpkg_status(root)
    assert str(caught.value) == (f"{root / sbom.DPKG_STATUS}: cannot read the dpkg status: a "
                                 "link that leads nowhere inside the root (it is read inside "
                                 "the image's root only)")


def test_a_link_loop_on_the_way_is_an_error_naming_the_file(tmp_path):
    (tmp_path / "var/lib").mkdir(parents=True)
    (tmp_path / "var/lib/dpkg").symlink_to("../lib/dpkg")
    with pytest.raises(CosbuildError, match="too many symbolic links") as caught:
        sbom.read_dpkg_status(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / sbom.DPKG_STATUS}: ")


def test_a_status_that_is_a_fifo_is_refused_without_blocking(tmp_path):
    (tmp_path / "var/lib/dpkg").mkdir(parents=True)
    os.mkfifo(tmp_path / sbom.DPKG_STATUS)
    with pytest.raises(CosbuildError, match="not a regular file") as caught:
        sbom.read_dpkg_status(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path / sbom.DPKG_STATUS}: ")


# ----------------------------------------------------------------------------- the packages

def test_an_unpack_package_holds_what_its_image_was_made_of(project):
    project(TREE)
    graph = load_project(settings.resolve({}, env={})).graph
    assert sbom.held(graph, "system/os@2.0") == {"app/svc@0.1", "distro/base@1.0"}
    assert sbom.held(graph, "dev/full@4") == {"app/svc@0.1", "dev/tool@3"}
    for key in ("distro/base@1.0", "app/svc@0.1", "dev/tool@3"):
        assert sbom.held(graph, key) == set(), key


def test_the_sample_os_package_holds_the_service_and_the_base(monkeypatch):
    monkeypatch.chdir(REPO)
    graph = load_project(settings.resolve({}, env={})).graph
    assert sbom.held(graph, "system/sampleOS@0.1.0") == {
        "app/sampleOSService@0.1.0", "system/cos@0.1.0", "distro/base@1.0.0",
        "system/cosbuild-client@0.1.0", "system/grub2-efi@0.2.0", "system/cos-initrd@0.1.0"}


# ----------------------------------------------------------------------------- the document

def test_the_sbom_lists_every_package_and_validates(sample_like, tmp_path):
    doc = parse_file(str(write(sample_like, tmp_path / "x.spdx.json")))
    assert validate_full_spdx_document(doc) == []
    assert doc.creation_info.spdx_version == "SPDX-2.3"
    by_name = {p.name: p for p in doc.packages}
    image = by_name["sample-0.live"]
    artifact = lambda key: hashlib.sha256(f"artifact of {key}".encode()).hexdigest()  # noqa: E731
    cosbuild = {name: (p.version, p.checksums[0].value, str(p.license_declared))
                for name, p in by_name.items() if p.spdx_id.startswith("SPDXRef-cosbuild-")}
    assert cosbuild == {
        "system/os": ("2.0", OS_SHA, "NOASSERTION"),   # installed: the manifest's sha256
        "app/svc": ("0.1", artifact("app/svc@0.1"), "Apache-2.0"),
        "distro/base": ("1.0", artifact("distro/base@1.0"), "LicenseRef-various")}
    assert [(e.license_id, e.extracted_text) for e in doc.extracted_licensing_info] == [
        ("LicenseRef-various", "various")]
    assert debs(doc) == [(n, v, sbom.DebPackage(n, v, a).purl) for n, v, a in INSTALLED]
    assert all(p.license_declared == SpdxNoAssertion() for p in doc.packages
               if p.spdx_id.startswith("SPDXRef-deb-"))
    contains = {(r.spdx_element_id, r.related_spdx_element_id) for r in doc.relationships
                if r.relationship_type == RelationshipType.CONTAINS}
    ids = {name: p.spdx_id for name, p in by_name.items()}
    assert {(image.spdx_id, p.spdx_id) for p in doc.packages if p is not image} <= contains
    assert {(ids["system/os"], ids["app/svc"]), (ids["system/os"], ids["distro/base"])} <= contains
    assert [(r.spdx_element_id, r.related_spdx_element_id) for r in doc.relationships
            if r.relationship_type == RelationshipType.DESCRIBES] == [
        ("SPDXRef-DOCUMENT", image.spdx_id)]


def test_the_sbom_is_reproducible(sample_like, tmp_path, monkeypatch):
    """Byte-identical again, in another process with other hash seeds too; SOURCE_DATE_EPOCH
    is its time; a change of content is a new namespace."""
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    first = write(sample_like, tmp_path / "first.json").read_bytes()
    assert write(sample_like, tmp_path / "again.json").read_bytes() == first
    assert b'"created": "2023-11-14T22:13:20Z"' in first
    loaded, manifest, root = sample_like
    script = textwrap.dedent(f"""\
        from pathlib import Path
        from cosbuild import settings
        from cosbuild.images import sbom
        from cosbuild.tree.project import load_project
        loaded = load_project(settings.resolve({{}}))
        sbom.write_sbom(Path({str(tmp_path / 'other.json')!r}), "sample-0.live", loaded,
                        [Path({str(manifest)!r})], Path({str(root)!r}))
        """)
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(REPO)}
        subprocess.run([sys.executable, "-c", script], check=True, env=env, capture_output=True)
        assert (tmp_path / "other.json").read_bytes() == first
    namespace = parse_file(str(tmp_path / "first.json")).creation_info.document_namespace
    manifest.write_text(f"packages:\n  system/os@2.0: {'cd' * 32}\n")
    changed = parse_file(str(write(sample_like, tmp_path / "changed.json")))
    assert changed.creation_info.document_namespace != namespace


def test_a_license_that_is_not_spdx_becomes_a_license_ref():
    packages = [sbom.CosbuildPackage("a/gpl", "1", "00" * 32, "GPL-2.0+"),
                sbom.CosbuildPackage("a/free", "1", "11" * 32, "GPL v2 & friends"),
                sbom.CosbuildPackage("a/broken", "1", "22" * 32, "MIT and")]
    doc = sbom.document("img", packages, [], 0)
    assert validate_full_spdx_document(doc) == []
    declared = {p.name: str(p.license_declared) for p in doc.packages[1:]}
    assert declared["a/gpl"] == "GPL-2.0-or-later"
    refs = {e.extracted_text: e.license_id for e in doc.extracted_licensing_info}
    assert set(refs) == {"GPL v2 & friends", "MIT and"}
    assert declared["a/free"] == refs["GPL v2 & friends"]
    assert refs["GPL v2 & friends"].startswith("LicenseRef-GPL-v2---friends-")


def test_an_invalid_document_is_an_error_naming_the_problem(tmp_path):
    doc = sbom.document("img", [sbom.CosbuildPackage("a/b", "1", "not-a-digest")], [], 0)
    with pytest.raises(CosbuildError) as caught:
        sbom.render(doc, tmp_path / "img.spdx.json")
    message = str(caught.value)
    assert message.startswith(f"{tmp_path / 'img.spdx.json'}: not a valid SPDX document: "
                              "SPDXRef-cosbuild-a-b-")
    assert "not-a-digest" in message and "\n" not in message
    assert not (tmp_path / "img.spdx.json").exists()


def test_the_sbom_tasks_depend_on_what_the_image_is_made_of(project):
    """iso:sbom (and disk:sbom): the manifests of the staged roots, the artifacts installed
    and those they hold; the SBOM beside the ISO, named after it."""
    from cosbuild.tasks import task_definitions
    project({**TREE, "iso.yaml": "packages:\n  rootfs: [system/os]\n  isoimage: [dev/tool]\n"
                                 "image_prefix: sample-\nimage_name: live\n",
             "disk.yaml": "system: [system/os]\nname: sample.disk\n"})
    loaded = load_project(settings.resolve({}, env={}))
    tasks = task_definitions(loaded)
    iso = {t["name"]: t for t in tasks["task_iso"]()}["sbom"]
    disk = {t["name"]: t for t in tasks["task_disk"]()}["sbom"]
    assert iso["targets"] == ["build/sample-live.spdx.json"]
    assert disk["targets"] == ["build/sample.disk.spdx.json"]
    def artifacts(*keys: str) -> set[str]:
        return {f"build/{loaded.graph.packages[k].artifact_file}" for k in keys}

    made_of = artifacts("system/os@2.0", "app/svc@0.1", "distro/base@1.0")
    manifests = {f"build/iso/{kind}.manifest" for kind in ("rootfs", "uefi", "isoimage")}
    assert manifests | made_of | artifacts("dev/tool@3") <= set(iso["file_dep"])
    assert {"build/disk/rootfs.manifest"} | made_of <= set(disk["file_dep"])
    assert not artifacts("dev/tool@3") & set(disk["file_dep"])


# ----------------------------------------------------------------------------- the sample

def check_sample_sbom(path: Path) -> None:
    """What the sample's SBOM (ISO or disk) must show: valid SPDX listing systemd, a kernel
    and the sample service, each with its version, contained in the image."""
    doc = parse_file(str(path))
    assert validate_full_spdx_document(doc) == []
    by_name = {p.name: p for p in doc.packages}
    kernels = [p for name, p in by_name.items() if name.startswith("linux-image-")]
    assert kernels, sorted(by_name)
    for package in (by_name["systemd"], by_name["app/sampleOSService"], *kernels):
        assert package.version, package.name
    assert by_name["systemd"].external_references[0].locator.startswith("pkg:deb/debian/systemd@")
    image = by_name[path.name.removesuffix(sbom.SUFFIX)]
    contained = {r.related_spdx_element_id for r in doc.relationships
                 if r.relationship_type == RelationshipType.CONTAINS
                 and r.spdx_element_id == image.spdx_id}
    assert {by_name["systemd"].spdx_id, by_name["app/sampleOSService"].spdx_id} <= contained


@pytest.mark.integration
def test_the_sample_iso_and_disk_have_reproducible_sboms(sample, iso, disk):
    paths = {"iso": iso.with_name(iso.name.removesuffix(".iso") + sbom.SUFFIX),
             "image disk:sbom": sample / "build" / f"{DISK_NAME}{sbom.SUFFIX}"}
    for tasks, path in paths.items():
        check_sample_sbom(path)
        before = path.read_bytes()
        path.unlink()
        cosbuild_ok(sample, "run", *tasks.split())
        assert path.read_bytes() == before, path
