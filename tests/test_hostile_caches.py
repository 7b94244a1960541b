"""Caches in the build folder are code-on-load (issue #14): a planted project pickle or Jinja2
bytecode file does not run, and the project still loads. The project cache is verified with
an HMAC under the user's own key; Jinja2 compiles templates afresh (no bytecode cache)."""

from __future__ import annotations

import hmac
import os
import pickle
import stat

import pytest

from cosbuild import settings
from cosbuild.tree import project as project_module
from cosbuild.tree.project import CACHE_NAME, load_project
from cosbuild.tree.sealed import cache_key

from .conftest import BASIC


@pytest.fixture
def key_home(tmp_path_factory, monkeypatch):
    home = tmp_path_factory.mktemp("xdg-cache")
    monkeypatch.setenv("XDG_CACHE_HOME", str(home))
    return home


class _Plant:
    """Unpickling this runs `open(sentinel, "w")`: what an attacker would put in the cache."""

    def __init__(self, sentinel):
        self.sentinel = str(sentinel)

    def __reduce__(self):
        return (open, (self.sentinel, "w"))


def _settings(root):
    return settings.resolve({"tree": [str(root / "tree")], "build_dir": str(root / "build")}, env={})


def _sentinel(root):
    return root.parent / f"{root.name}-sentinel"


@pytest.mark.parametrize("signed_with", ["nothing", "another key"])
def test_planted_project_pickle_does_not_run(signed_with, project, key_home):
    root = project(BASIC)
    config = _settings(root)
    load_project(config, use_cache=True)          # writes a genuine cache
    cache = config.build_dir / ".cache" / CACHE_NAME
    genuine = cache.read_bytes()
    payload = pickle.dumps(_Plant(_sentinel(root)))
    mac = b"" if signed_with == "nothing" else hmac.digest(b"k" * 32, payload, "sha256")
    cache.write_bytes(mac + payload)
    loaded = load_project(config, use_cache=True)
    assert not _sentinel(root).exists()
    assert {p.key for p in loaded.tree.packages} == {"app/app@0.1", "distro/base@1.0"}
    assert cache.read_bytes() != mac + payload    # replaced by a genuine one again
    assert len(cache.read_bytes()) == len(genuine)


def test_genuine_cache_is_used(project, key_home, monkeypatch):
    config = _settings(project(BASIC))
    first = load_project(config, use_cache=True)

    def no_load(*args, **kwargs):
        raise AssertionError("the tree was loaded again: the cache was not used")
    monkeypatch.setattr(project_module, "load_trees", no_load)
    assert load_project(config, use_cache=True).graph == first.graph


def _plant_bytecode(folder, name: str, source: str, sentinel):
    """What jinja2.FileSystemBytecodeCache loads for template `name`: the template as Jinja2
    compiles it plus one line, so it renders as ever and writes the sentinel."""
    import jinja2
    from jinja2.bccache import Bucket, FileSystemBytecodeCache

    folder.mkdir(parents=True, exist_ok=True)
    cache = FileSystemBytecodeCache(str(folder))
    bucket = Bucket(jinja2.Environment(), cache.get_cache_key(name, name),
                    cache.get_source_checksum(source))
    plain = jinja2.Environment().compile(source, name, name, raw=True)
    bucket.code = compile(f"open({str(sentinel)!r}, 'w').close()\n{plain}", name, "exec")
    path = folder / (cache.pattern % bucket.key)
    with open(path, "wb") as out:
        bucket.write_bytecode(out)
    return cache, path


def test_planted_jinja_bytecode_does_not_run(project, run_cli, key_home, tmp_path_factory):
    import jinja2

    build = "# cosbuild-engine: jinja2\nimage: x\nsteps: [echo {{ values.name }}]\n"
    root = project({**BASIC, "tree/app/build.yaml": build})
    name = "tree/app/build.yaml"
    _, planted = _plant_bytecode(root / "build" / ".cache" / "jinja", name, build, _sentinel(root))
    # the plant is real: an environment with a plain bytecode cache runs it
    proof = tmp_path_factory.mktemp("proof")
    cache, _ = _plant_bytecode(proof / "jinja", name, build, proof / "ran")
    jinja2.Environment(loader=jinja2.FunctionLoader(lambda n: (build, n, lambda: True)),
                       bytecode_cache=cache).get_template(name)
    assert (proof / "ran").exists()

    for command in (["validate"], ["render", "app/app"]):
        code, out, err = run_cli(*command)
        assert code == 0, err
    assert "echo app" in out
    assert not _sentinel(root).exists()
    # cosbuild keeps its own sealed bytecode beside it (keyed by its compiler too)
    sealed = [p.read_bytes() for p in planted.parent.iterdir() if p != planted]
    assert sealed and all(b[:32] == hmac.digest(cache_key(), b[32:], "sha256") for b in sealed)


def test_cache_key_is_the_user_s_own(key_home):
    key = cache_key()
    path = key_home / "cosbuild" / "cache.key"
    assert key is not None and len(key) == 32 and path.read_bytes() == key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert cache_key() == key                     # made once, then read


@pytest.mark.parametrize("planted", ["world-readable", "a symlink", "short"])
def test_a_doubtful_key_means_no_cache(planted, key_home, tmp_path, project):
    path = key_home / "cosbuild" / "cache.key"
    path.parent.mkdir(parents=True)
    if planted == "a symlink":
        (tmp_path / "known").write_bytes(b"k" * 32)
        os.chmod(tmp_path / "known", 0o600)
        os.symlink(tmp_path / "known", path)
    else:
        path.write_bytes(b"k" * (32 if planted == "world-readable" else 5))
        os.chmod(path, 0o644 if planted == "world-readable" else 0o600)
    assert cache_key() is None
    config = _settings(project(BASIC))
    assert load_project(config, use_cache=True).tree.packages   # loads, only uncached
    assert not (config.build_dir / ".cache" / CACHE_NAME).exists()
