"""Real builds of the small tree for both architectures, side by side in one project: an
arm64 build on this amd64 host runs its bootstrap and steps through qemu-user, makes aarch64
binaries, other hashes and metadata, and the same bytes again when built anew. Slow:
marked `integration` (run by `make test`)."""

from __future__ import annotations

import re
import subprocess

import pytest
import yaml

from .buildtree import SMALL_TREE
from .conftest import write_files
from .test_build_integration import cosbuild, ran, read_member, repo_env  # noqa: F401 (a fixture)

pytestmark = pytest.mark.integration

ELF_MACHINE = {"amd64": 62, "arm64": 183}   # e_machine: EM_X86_64, EM_AARCH64
FOLDER = {"amd64": "build", "arm64": "build-arm64"}
TREE = {
    **{k: v for k, v in SMALL_TREE.items() if k.startswith(("tree/base/", "tree/app/"))},
    "tree/where/definition.yaml": "name: where\ncategory: apps\nversion: '1'\n",
    "tree/where/build.yaml": """\
requires:
  - {name: base, category: distro}
steps:
  - mkdir -p /out && echo "{{ values.arch }} $(uname -m)" > /out/where
package_dir: /out
""",
}
TARGETS = ("build:distro/base", "build:apps/app", "build:apps/where")


def build(root, env, arch):
    return cosbuild(root, "run", "-n", "2", "-P", "thread", *TARGETS,
                    env={**env, "COSBUILD_ARCH": arch})


def meta(root, arch, stem):
    return yaml.safe_load((root / FOLDER[arch] / f"{stem}.metadata.yaml").read_text())


@pytest.fixture(scope="module")
def built(tmp_path_factory, repo_env):
    """The tree built for amd64 and for arm64, in one project folder."""
    root = write_files(tmp_path_factory.mktemp("arches"), TREE)
    for arch in ("amd64", "arm64"):
        assert ran(build(root, repo_env, arch)) == set(TARGETS)
    return root


def test_each_architecture_has_its_own_binaries_and_values(built):
    for arch, folder in FOLDER.items():
        # a binary the bootstrap installed and one a step copied
        base = built / folder / "base-distro-1.package.tar.zst"
        for name in ("usr/bin/bash", "usr/local/bin/capped"):
            head = read_member(base, name)[:20]
            assert head[:4] == b"\x7fELF" and int.from_bytes(head[18:20], "little") == \
                ELF_MACHINE[arch], (arch, name)
        # values.arch in the template; uname in the step: qemu-user on this host
        machine = {"amd64": "x86_64", "arm64": "aarch64"}[arch]
        where = read_member(built / folder / "where-apps-1.package.tar.zst", "where")
        assert where == f"{arch} {machine}\n".encode()


def test_hashes_metadata_and_images_differ_by_architecture(built, repo_env):
    for stem in ("base-distro-1", "app-apps-1.0", "where-apps-1"):
        amd64, arm64 = meta(built, "amd64", stem), meta(built, "arm64", stem)
        assert amd64["build_hash"] != arm64["build_hash"], stem
        assert amd64["package_cacheimage"] != arm64["package_cacheimage"], stem
        # app's files (a script, a text) are the same for both: only its metadata differs
        assert (amd64["checksums"] == arm64["checksums"]) == (stem == "app-apps-1.0"), stem
        for arch, m in (("amd64", amd64), ("arm64", arm64)):
            image = subprocess.run(["buildah", "inspect", "--type", "image", "--format",
                                    "{{.OCIv1.Architecture}}", m["package_cacheimage"]],
                                   capture_output=True, text=True, check=True).stdout.strip()
            assert image == arch, (stem, m["package_cacheimage"])
    # the same tree, reused: nothing rebuilds for either
    for arch in FOLDER:
        assert ran(build(built, repo_env, arch)) == set()


def test_an_arm64_build_made_anew_is_byte_identical(built, repo_env):
    """Every image of the arm64 build removed, the bootstrap's too: mmdebstrap and the
    steps run again under emulation and write the same artifacts."""
    stems = ("base-distro-1", "app-apps-1.0", "where-apps-1")
    before = {s: (built / "build-arm64" / f"{s}.package.tar.zst").read_bytes() for s in stems}
    log = (built / "build-arm64/logs/base-distro-1.log").read_text()
    bootstrap = re.search(r"(?:bootstrapping Debian \S+ \(\S+\) into|bootstrap image) "
                          r"(cosbuild/bootstrap:[0-9a-f]{64})", log).group(1)
    images = [bootstrap, *(meta(built, "arm64", s)["package_cacheimage"] for s in stems)]
    images += [f"{i}-builder" for i in images[1:]]
    subprocess.run(["buildah", "rmi", "-f", *images], capture_output=True)
    for s in stems:
        (built / "build-arm64" / f"{s}.package.tar.zst").unlink()
    assert ran(build(built, repo_env, "arm64")) == set(TARGETS)
    assert "bootstrapping Debian bookworm" in \
        (built / "build-arm64/logs/base-distro-1.log").read_text()
    for s in stems:
        assert (built / "build-arm64" / f"{s}.package.tar.zst").read_bytes() == before[s], s


def test_an_image_or_bootstrap_of_the_other_architecture_is_refused(built, repo_env):
    root = built.parent / "wrong-arch"
    amd64_base = meta(built, "amd64", "base-distro-1")["package_cacheimage"]
    write_files(root, {
        **TREE,
        "tree/base/build.yaml": TREE["tree/base/build.yaml"].replace(
            "  suite: bookworm\n", "  suite: bookworm\n  architecture: amd64\n"),
        "tree/where/build.yaml": f"image: {amd64_base}\nsteps: ['true']\n"})
    proc = cosbuild(root, "run", "build:distro/base", env={**repo_env, "COSBUILD_ARCH": "arm64"},
                    check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert "distro/base@1: bootstrap.architecture amd64 is not the architecture this build " \
           "is for (arm64)" in out and "tree/base/build.yaml" in out, out
    proc = cosbuild(root, "run", "build:apps/where", env={**repo_env, "COSBUILD_ARCH": "arm64"},
                    check=False)
    out = proc.stdout + proc.stderr
    assert proc.returncode != 0 and "Traceback" not in out
    assert f"image {amd64_base} in local storage is for amd64, not for arm64" in out, out
