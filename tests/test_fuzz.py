"""Fuzzing the readers of untrusted input: whatever comes in, the answer is a result or one
clear CosbuildError (cos-setup: a logged failure), never a traceback, and nothing is
written outside the root.

Deterministic (a fixed seed): CI sees the same examples every run. For a longer hunt,
`COSBUILD_FUZZ_EXAMPLES=5000 COSBUILD_FUZZ_RANDOM=1 pytest tests/test_fuzz.py`.
"""

from __future__ import annotations

import contextlib
import email.message
import hashlib
import io
import json
import os
import re
import tarfile
import urllib.error
from pathlib import Path

import pytest
import yaml
import zstandard
from hypothesis import HealthCheck, event, given, settings, strategies as st

from cosbuild import luetformat
from cosbuild.errors import CosbuildError
from cosbuild.oci import layers, registry
from cosbuild.repos.config import RepoConfig
from cosbuild.repos.extract import extract_safely
from cosbuild.repos.index import load_repository
from cosbuild.runtime import cloudconfig, setup
from cosbuild.tree import spec, yamlio
from cosbuild.tree.load import parse_definition

EXAMPLES = int(os.environ.get("COSBUILD_FUZZ_EXAMPLES", "150"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None,
                derandomize=not os.environ.get("COSBUILD_FUZZ_RANDOM"),
                suppress_health_check=list(HealthCheck))

# --------------------------------------------------------------------------- generators

# keys the readers look for, so that the examples reach past the first check
KEYS = ("name", "category", "version", "requires", "conflicts", "provides", "path", "files",
        "checksums", "sha256", "compilationspec", "package", "compressiontype", "index",
        "repo_files", "tree", "meta", "filename", "stages", "default", "boot", "entity",
        "permissions", "owner", "group", "content", "encoding", "nameservers", "install",
        "shell", "steps", "image", "package_cacheimage", *cloudconfig.STEP_KEYS)
scalars = (st.none() | st.booleans() | st.integers(-2**70, 2**70)
           | st.floats(allow_nan=False) | st.text(max_size=12)
           | st.sampled_from(["", "1.0", "0.20.1-3", ">=1.0", "../../x", "/etc/passwd", "zstd",
                              "gzip", "none", "a/b", "0o777", "0755", "b64", "root", "-1"]))
values = st.recursive(
    scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(KEYS) | st.text(max_size=6), inner, max_size=5),
    max_leaves=25)
# YAML-ish text: valid documents of odd shapes, and fragments of YAML syntax
TOKENS = ("a", ": ", "- ", "\n", "  ", "\t", "{", "}", "[", "]", ",", "&x ", "*x", "<<: ",
          "!!python/object:os.system ", "!!binary ", "%YAML 1.1\n", "---\n", "...\n", "'",
          '"', "\\u", "#", "|\n", ">-\n", "? ", "!tag ", "y", "n", "1.10", "0x1F", "~",
          "\ufeff", "\x00", "\udcff")
texts = (st.text(max_size=200)
         | st.lists(st.sampled_from(TOKENS), max_size=40).map("".join)
         | values.map(lambda v: yaml.safe_dump(v, allow_unicode=True)))


def surrogate_safe(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace")


# --------------------------------------------------------------------------- YAML and specs

@FUZZ
@given(texts)
def test_yaml_loader_gives_data_or_a_clear_error(text):
    try:
        yamlio.loads(surrogate_safe(text), "fuzz.yaml")
    except CosbuildError:
        pass


@FUZZ
@given(values, st.sampled_from(["definition", "build", "finalize"]))
def test_spec_parsers_give_a_spec_or_a_clear_error(data, kind):
    where = f"fuzz/{kind}.yaml"
    if not isinstance(data, dict):
        return   # the loaders check the shape first (yamlio.load_mapping, index._mapping)
    try:
        if kind == "definition":
            parse_definition(yamlio.LineMap(data), where)
        else:
            table = spec.FINALIZE_KEYWORDS if kind == "finalize" else spec.BUILD_KEYWORDS
            spec.parse(table, yamlio.LineMap(data), where, what=f"{kind}.yaml")
    except CosbuildError:
        pass


@FUZZ
@given(texts)
def test_cloud_config_checker_gives_findings_not_tracebacks(text):
    findings = cloudconfig.check(surrogate_safe(text), "fuzz.yaml")
    assert all(isinstance(f, CosbuildError) for f in findings)


# --------------------------------------------------------------------------- repositories

def _tar_zst(members: dict[str, bytes]) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return zstandard.ZstdCompressor().compress(raw.getvalue())


def _repository(folder: Path, *, index_yaml: str, tree: dict[str, bytes], meta: str | None,
                raw_tree: bytes | None, right_sums: bool) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    blobs = {"tree": raw_tree if raw_tree is not None else _tar_zst(tree),
             "meta": _tar_zst({luetformat.META_MEMBER: meta.encode()} if meta is not None else {})}
    for kind, blob in blobs.items():
        (folder / f"{kind}.tar.zst").write_bytes(blob)
    if index_yaml:
        (folder / luetformat.REPOSITORY_FILE).write_text(index_yaml)
        return
    repo_files = {kind: {"filename": f"{kind}.tar.zst", "compressiontype": "zstd",
                         "checksums": {"sha256": hashlib.sha256(blob).hexdigest()
                                       if right_sums else "0" * 64}}
                  for kind, blob in blobs.items()}
    (folder / luetformat.REPOSITORY_FILE).write_text(
        yaml.safe_dump({"name": "fuzz", "type": "disk", "repo_files": repo_files}))


SPOIL = st.sampled_from([False] * 15 + [True])


def _maybe(draw, good, bad=values):
    """Mostly the well-formed value (to get past the first checks), sometimes anything."""
    return draw(bad) if draw(SPOIL) else good


@st.composite
def repository_parts(draw):
    """A tree and an index made of the same packages, each field possibly spoiled."""
    tree, index = {}, []
    for n in range(draw(st.integers(0, 3))):
        name, category, version = f"p{n}", "c", draw(st.sampled_from(["1.0", "2", "0.1-3"]))
        folder = _maybe(draw, f"{category}/{name}/{version}", st.text(max_size=12))
        definition = {k: _maybe(draw, v) for k, v in
                      {"name": name, "category": category, "version": version,
                       "requires": [{"name": "p0", "category": "c"}] if n else []}.items()}
        tree[f"{folder}/definition.yaml"] = _maybe(draw, yaml.safe_dump(definition), texts)
        if draw(st.booleans()):
            finalize = {"install": _maybe(draw, ["true"]), "shell": _maybe(draw, ["sh", "-c"])}
            tree[f"{folder}/finalize.yaml"] = _maybe(draw, yaml.safe_dump(finalize), texts)
        package = {"name": name, "category": category, "version": version}
        index.append({k: _maybe(draw, v) for k, v in {
            "path": f"{category}-{name}-{version}.package.tar.zst",
            "checksums": {"sha256": "0" * 64}, "compressiontype": "zstd",
            "files": [f"usr/bin/{name}"],
            "compilationspec": {"package": {k: _maybe(draw, v) for k, v in package.items()}},
        }.items()})
    meta = _maybe(draw, yaml.safe_dump({"index": _maybe(draw, index)}), st.none() | texts)
    return (tree, meta, _maybe(draw, "", texts), _maybe(draw, None, st.binary(max_size=64)),
            _maybe(draw, True, st.just(False)))


@FUZZ
@given(parts=repository_parts())
def test_repository_reader_gives_packages_or_a_clear_error(tmp_path_factory, parts):
    top = tmp_path_factory.mktemp("repo")
    tree, meta, index_yaml, raw_tree, right_sums = parts
    tree = {name: surrogate_safe(text).encode() for name, text in tree.items()}
    _repository(top / "repo", index_yaml=surrogate_safe(index_yaml) if index_yaml else "",
                tree=tree, meta=surrogate_safe(meta) if meta is not None else None,
                raw_tree=raw_tree, right_sums=right_sums)
    repo = RepoConfig(name="fuzz", urls=(str(top / "repo"),))
    try:
        found = load_repository(repo, top / "work")
        event(f"{len(found)} packages")
    except CosbuildError as exc:
        event(f"refused: {exc.message[:40]}")
    assert sorted(p.name for p in top.iterdir()) == ["repo", "work"]


# --------------------------------------------------------------------------- cos-setup

# what cos-setup --root applies without programs from the root: files and the text edits
ROOT_STEP_KEYS = ("name", "environment", "environment_file", "files", "directories", "dns",
                  "authorized_keys", "ensure_entities", "delete_entities")
# paths: inside, with `..` enough to leave the root but not the test's own folder
paths = (st.sampled_from(["/etc/x", "etc/y", "/a/b/c", "../x", "../../y", "/../z", ".", "/",
                          "/etc/passwd", "/etc", "", "a\x00b"])
         | st.lists(st.sampled_from(["a", "..", ".", "etc", ""]), max_size=4).map("/".join))
file_entries = st.fixed_dictionaries(
    {}, optional={"path": paths | scalars, "content": st.text(max_size=20) | scalars,
                  "permissions": st.sampled_from([0o644, "0600", 0o7777, -1, "x"]) | scalars,
                  "owner": st.sampled_from([0, "root", "nobody", "1000"]) | scalars,
                  "group": scalars, "encoding": st.sampled_from(cloudconfig.ENCODINGS) | scalars,
                  "entity": st.sampled_from(["root:x:0:0::/root:/bin/sh", "u:x:1:1::/../../h:/bin/sh",
                                             ""]) | scalars})
steps = st.fixed_dictionaries(
    {}, optional={"name": scalars, "environment": st.dictionaries(st.text(max_size=5), scalars)
                  | values,
                  "environment_file": paths | scalars,
                  "files": st.lists(file_entries | values, max_size=3) | values,
                  "directories": st.lists(file_entries | values, max_size=3) | values,
                  "dns": st.fixed_dictionaries({}, optional={"path": paths, "nameservers": values})
                  | values,
                  "authorized_keys": st.dictionaries(st.sampled_from(["root", "u", "nobody"]),
                                                     st.lists(st.text(max_size=8)) | values)
                  | values,
                  "ensure_entities": st.lists(file_entries | values, max_size=2) | values,
                  "delete_entities": st.lists(file_entries | values, max_size=2) | values})
documents = (st.dictionaries(st.sampled_from(["default", "boot"]) | st.text(max_size=4),
                             st.lists(steps | values, max_size=3) | values, max_size=2)
             .map(lambda stages: {"stages": stages}) | values)


@FUZZ
@given(documents, st.booleans())
def test_cos_setup_never_raises_nor_writes_outside_its_root(tmp_path_factory, doc, classic):
    top = tmp_path_factory.mktemp("setup")
    # `..` in the generated paths climbs at most three levels: from top/a/b/root it stays in top
    root = top / "a" / "b" / "root"
    (root / "etc").mkdir(parents=True)
    (root / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n"
                                     "u:x:1000:1000::/../../../home/u:/bin/sh\n")
    (root / "etc/group").write_text("root:x:0:\n")
    cfg = top / "a" / "cfg.yaml"
    text = ("#cloud-config\n" if classic else "") + yaml.safe_dump(doc, allow_unicode=True)
    cfg.write_text(surrogate_safe(text))
    before = _outside(top, root)
    try:
        status = setup.main(["--root", str(root), "--file", str(cfg)])
    finally:
        setup.ROOT = "/"
    assert status in (0, 1)
    assert _outside(top, root) == before


def _outside(top: Path, root: Path) -> list[str]:
    """Every path under `top` that is not inside `root`."""
    return sorted(str(p.relative_to(top)) for p in top.rglob("*")
                  if root not in (p, *p.parents))


# --------------------------------------------------------------------------- artifacts

member_names = (st.sampled_from(["a", "a/b", "./a", "/a", "../a", "a/../../b", "l", "l/x",
                                 "d", "d/f", "", ".", "a//b"])
                | st.lists(st.sampled_from(["a", "l", "..", ".", "d"]), min_size=1,
                           max_size=3).map("/".join))
members = st.lists(st.tuples(member_names,
                             st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE,
                                              tarfile.LNKTYPE, tarfile.FIFOTYPE, b"Z"]),
                             st.sampled_from(["", "a", "/", "/etc", "../..", "../../x", "l",
                                              "d/f"]),
                             st.sampled_from([0o644, 0o755, 0o4755, 0o000, 0o7777])),
                   max_size=6)


@FUZZ
@given(members, st.sampled_from(["artifact", "layer"]))
def test_artifact_and_layer_extraction_stay_in_their_folder(tmp_path_factory, entries, kind):
    top = tmp_path_factory.mktemp("extract")
    dest = top / "a" / "b" / "dest"
    dest.mkdir(parents=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, kind, link, mode in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname, info.mode = kind, link, mode
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    archive = top / "artifact.tar"
    archive.write_bytes(raw.getvalue())
    before = _outside(top, dest)
    try:
        if kind == "layer":
            with archive.open("rb") as stream:
                layers.apply_layer(stream, dest, "fuzz")
        else:
            extract_safely(archive, dest, "fuzz",
                                  compression=luetformat.compression("none", "fuzz"))
    except CosbuildError:
        pass
    assert _outside(top, dest) == before


# --------------------------------------------------------------------------- image layers

# whiteouts and markers among the names: each may name the folder, its parent or nothing
layer_parts = st.sampled_from(["a", "d", "l", ".", "..", "", ".wh.", ".wh..", ".wh...", ".wh.a",
                               ".wh.l", ".wh.d", ".wh..wh..opq", ".wh..layers", ".layers",
                               "sentinel", ".wh.sentinel", ".wh.etc"])
layer_entries = st.lists(
    st.tuples(st.lists(layer_parts, min_size=1, max_size=4).map("/".join)
              | st.sampled_from(["./.wh.", "/.wh...", "etc/.wh..", "./", "/"]),
              st.sampled_from([tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE]),
              st.sampled_from(["", ".", "..", "/", "../..", "../../..", "a", "etc/passwd", "l",
                               ".layers", ".layers/blob", "/etc"])),
    max_size=8)


def _state(top: Path, dest: Path) -> dict[str, str]:
    """What is under `top` outside `dest`, contents included."""
    return {str(p.relative_to(top)): os.readlink(p) if p.is_symlink() else
            "dir" if p.is_dir() else p.read_text()
            for p in top.rglob("*") if dest not in (p, *p.parents)}


@FUZZ
@given(layer_entries, st.booleans())
def test_layers_never_touch_what_is_outside_nor_the_folder_itself(tmp_path_factory, entries, keep):
    top = tmp_path_factory.mktemp("layer")
    dest = top / "a" / "b" / "dest"
    (dest / "etc").mkdir(parents=True)
    (dest / "etc/passwd").write_text("root")
    (dest / ".layers").mkdir()
    (dest / ".layers/blob").write_text("blob")
    for sentinel in (top / "sentinel", top / "a/sentinel", top / "a/b/sentinel"):
        sentinel.write_text("outside")
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, kind, link in entries:
            info = tarfile.TarInfo(name)
            info.type, info.linkname = kind, link
            data = b"x" if kind == tarfile.REGTYPE else b""
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    raw.seek(0)
    before = _state(top, dest)
    try:
        layers.apply_layer(raw, dest, "fuzz", keep=".layers" if keep else "")
    except CosbuildError as exc:
        event(f"refused: {exc.message.partition(':')[2][:30]}")
    assert _state(top, dest) == before
    assert dest.is_dir() and not dest.is_symlink()
    if keep:
        assert (dest / ".layers/blob").read_text() == "blob"


# --------------------------------------------------------------------------- registry answers

DIGEST = "sha256:" + "0" * 64
INNER = b'{"layers": []}'   # what an index names, by its digest
INNER_DIGEST = f"sha256:{hashlib.sha256(INNER).hexdigest()}"
REGISTRY_KEYS = ("layers", "manifests", "digest", "size", "mediaType", "platform", "os",
                 "architecture", "token", "access_token", "config", "schemaVersion")
registry_scalars = scalars | st.sampled_from(
    [DIGEST, DIGEST.upper(), "sha256:", "sha512:" + "0" * 128, "sha256:../../x", "linux",
     registry.OCI_INDEX, registry.DOCKER_LIST, registry.DOCKER_MANIFEST, registry._goarch(),
     "T0K", "T0K\r\nX: y", 0, 2, -1, 2**63])
registry_values = st.recursive(
    registry_scalars, lambda inner: st.lists(inner, max_size=4)
    | st.dictionaries(st.sampled_from(REGISTRY_KEYS) | st.text(max_size=4), inner, max_size=5),
    max_leaves=30)
answers = (registry_values.map(lambda v: json.dumps(v).encode())
           | st.binary(max_size=64)
           | st.lists(st.sampled_from(['{"layers": [', '{"manifests": [', '{"digest": "' + DIGEST
                                       + '"', '"size": 1', "}", "]", ",", "[", "{", "NaN", "1e999",
                                       '"token": "T"', "null", "\\ud800", '"']),
                      max_size=30).map(lambda parts: "".join(parts).encode()))


class _Answers:
    """An opener in place of the network: the manifests path wants a token first; by
    digest, it is INNER."""

    def __init__(self, manifest: bytes, token: bytes):
        self.manifest, self.token = manifest, token

    def open(self, request, timeout):
        if "/token" in request.full_url:
            return _Response(self.token)
        if request.unredirected_hdrs.get("Authorization") is None:
            headers = email.message.Message()
            headers["WWW-Authenticate"] = 'Bearer realm="http://registry.test/token"'
            raise urllib.error.HTTPError(request.full_url, 401, "token", headers, io.BytesIO())
        return _Response(INNER if "/manifests/sha256:" in request.full_url else self.manifest)


class _Response(io.BytesIO):
    status = 200


@st.composite
def registry_answers(draw):
    """(manifest, token answer): mostly well-formed, each part possibly spoiled."""
    def spoiled(good):
        return _maybe(draw, good, registry_values)
    if draw(st.booleans()):
        doc = {"schemaVersion": 2, "mediaType": registry.DOCKER_MANIFEST,
               "layers": spoiled([spoiled({"digest": spoiled(DIGEST), "size": spoiled(1)})
                                  for _ in range(draw(st.integers(0, 3)))])}
    else:
        platform = {"os": spoiled("linux"), "architecture": spoiled(registry._goarch())}
        doc = {"mediaType": registry.OCI_INDEX,
               "manifests": spoiled([spoiled({"digest": spoiled(INNER_DIGEST),
                                              "platform": spoiled(platform)})])}
    manifest = draw(answers) if draw(SPOIL) else json.dumps(spoiled(doc)).encode()
    return manifest, draw(answers) if draw(SPOIL) else b'{"token": "T0K"}'


@FUZZ
@given(registry_answers())
def test_registry_answers_give_a_manifest_or_a_clear_error(monkeypatch, parts):
    manifest, token = parts
    monkeypatch.setenv("REGISTRY_AUTH_FILE", "/nonexistent/auth.json")
    client_ = registry.Registry("registry.test", _base="http://registry.test")
    client_._opener = _Answers(manifest, token)
    try:
        found = client_.manifest(registry.parse_reference("registry.test/x/y:t"))
    except CosbuildError as exc:
        event(f"refused: {exc.message.partition(': ')[2][:40]}")
    else:
        assert isinstance(found, registry.Manifest)
        assert all(re.fullmatch(r"sha256:[0-9a-f]{64}", layer.digest) and layer.size >= 0
                   for layer in found.layers)
        event("a manifest")
