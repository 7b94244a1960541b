"""Two architectures from one tree, without building (fast): the `arch` setting, the value
templates see, the build hashes and folders that keep the architectures apart, and the
check that the host can run the other architecture's programs. The builds are
tests/test_arch_builds.py."""

from __future__ import annotations

import pytest

from cosbuild import arches, settings
from cosbuild.errors import CosbuildError
from cosbuild.tree.project import load_project

TREE = {
    # Jinja2 and Helm (luet's) templates, each naming values.arch
    "tree/j/definition.yaml": "name: j\ncategory: apps\nversion: '1'\n",
    "tree/j/build.yaml": "image: debian\nsteps:\n  - echo {{ values.arch }}\n",
    "tree/h/definition.yaml": "name: h\ncategory: apps\nversion: '1'\n",
    "tree/h/build.yaml": "image: debian\nsteps:\n  - echo {{ .Values.arch }}\n",
    # a spec that does not name the architecture builds other binaries all the same
    "tree/plain/definition.yaml": "name: plain\ncategory: apps\nversion: '1'\n",
    "tree/plain/build.yaml": "image: debian\nsteps:\n  - make\n",
}


def load(**options):
    return load_project(settings.resolve({"tree": ["tree"], **options}, env={})).graph


def steps(graph, name):
    return graph.packages[f"apps/{name}@1"].rendered.build.steps


def test_the_setting_defaults_to_the_host_and_names_a_known_architecture(monkeypatch):
    monkeypatch.setattr(arches.platform, "machine", lambda: "aarch64")
    assert settings.resolve({}, env={}).arch == "arm64"
    monkeypatch.setattr(arches.platform, "machine", lambda: "x86_64")
    assert settings.resolve({}, env={}).arch == "amd64"
    assert settings.resolve({}, env={"COSBUILD_ARCH": "arm64"}).arch == "arm64"
    assert settings.resolve({}, env={}, doit_vars={"arch": "arm64"}).arch == "arm64"
    assert settings.resolve({"arch": "amd64"}, env={"COSBUILD_ARCH": "arm64"}).arch == "amd64"
    with pytest.raises(CosbuildError, match="unknown architecture 'x86_64' for --arch") as exc:
        settings.resolve({}, env={"COSBUILD_ARCH": "x86_64"})
    assert exc.value.hint == "one of: amd64, arm64"


def test_each_architecture_builds_into_its_own_folder():
    assert settings.resolve({"arch": "amd64"}, env={}).build_dir.as_posix() == "build"
    assert settings.resolve({"arch": "arm64"}, env={}).build_dir.as_posix() == "build-arm64"
    assert settings.resolve({"arch": "arm64"}, env={"COSBUILD_BUILD_DIR": "out"}).build_dir \
        .as_posix() == "out"


def test_templates_see_the_architecture_under_the_trees_own_values(project):
    project(TREE)
    for arch in ("amd64", "arm64"):
        g = load(arch=arch)
        assert steps(g, "j") == (f"echo {arch}",) and steps(g, "h") == (f"echo {arch}",)
    # a tree that sets `arch` itself (elemental's values files: aarch64) keeps its value,
    # in the definition as in a values file, with either engine
    project({"tree/j/definition.yaml": "name: j\ncategory: apps\nversion: '1'\narch: own\n",
             "tree/h/definition.yaml": "name: h\ncategory: apps\nversion: '1'\narch: own\n"})
    g = load(arch="arm64")
    assert steps(g, "j") == ("echo own",) and steps(g, "h") == ("echo own",)
    project({"values/x.yaml": "arch: aarch64\n"})
    g = load(arch="arm64", values=["values/x.yaml"])
    assert steps(g, "j") == ("echo aarch64",) and steps(g, "h") == ("echo aarch64",)


def test_the_architecture_is_part_of_every_build_hash_but_the_originals(project):
    project(TREE)
    amd64, arm64 = load(arch="amd64"), load(arch="arm64")
    for key, pkg in amd64.packages.items():
        assert arm64.packages[key].hash != pkg.hash, key
    # amd64 hashes are those cosbuild gave before it had the setting: the same spec hashed
    # without any architecture (existing caches stay valid)
    from cosbuild.tree.graph import content_digest, image_hash
    plain = amd64.packages["apps/plain@1"]
    digest = content_digest(plain.rendered, plain.source.folder, plain.files)
    assert plain.content == digest and plain.hash == image_hash(plain, amd64.packages, None)
    assert arm64.packages["apps/plain@1"].content != digest


def fake_binfmt(tmp_path, entry: str | None, status: bool = True):
    folder = tmp_path / "binfmt_misc"
    folder.mkdir()
    if status:
        (folder / "status").write_text("enabled\n")
    if entry is not None:
        (folder / "qemu-aarch64").write_text(entry)
    return folder


REGISTERED = ("enabled\ninterpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P\n"
              "flags: PF\noffset 0\nmagic 7f454c46\n")


@pytest.mark.parametrize("entry, status, message", [
    (REGISTERED, True, None),
    (REGISTERED, False, "binfmt_misc is not mounted at"),
    (None, True, "no qemu-user interpreter for aarch64 is registered"),
    (REGISTERED.replace("enabled", "disabled", 1), True, "qemu-aarch64 is not enabled"),
    (REGISTERED.replace("flags: PF", "flags: P"), True, "registered without the F flag"),
])
def test_another_architecture_needs_qemu_user_registered(tmp_path, monkeypatch, entry,
                                                         status, message):
    monkeypatch.setattr(arches.platform, "machine", lambda: "x86_64")
    binfmt = fake_binfmt(tmp_path, entry, status)
    arches.require_runnable("amd64", binfmt)   # the host's own: nothing to check
    if message is None:
        arches.require_runnable("arm64", binfmt)
        return
    with pytest.raises(CosbuildError, match=f"cannot build for arm64 on this amd64 host: .*"
                                            f"{message}") as exc:
        arches.require_runnable("arm64", binfmt)
    assert "scripts/install-deps" in exc.value.hint


def test_one_client_config_lists_each_architectures_repository(tmp_path, monkeypatch):
    """luet's multi-architecture layout: each architecture's repository disabled, with its
    `arch`; a machine uses its own and every enabled one."""
    from cosbuild.repos.config import repositories
    config = tmp_path / "luet.yaml"
    config.write_text("""\
repositories:
  - {name: os-amd64, type: disk, urls: [/srv/amd64], enable: false, arch: amd64}
  - {name: os-arm64, type: disk, urls: [/srv/arm64], enable: false, arch: arm64}
  - {name: extra, type: disk, urls: [/srv/extra]}
  - {name: off, type: disk, urls: [/srv/off], enable: false}
""")
    for machine, own in (("x86_64", "os-amd64"), ("aarch64", "os-arm64")):
        monkeypatch.setattr(arches.platform, "machine", lambda: machine)
        assert [r.name for r in repositories([], config)] == [own, "extra"]
