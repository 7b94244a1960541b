"""The reference Helm renderer of the differential tests: tests/helmref/main.go, luet 0.20's
rendering of a build.yaml rebuilt from Debian's Go sources (golang-go and the library
packages of `go` in cosbuild/programs.py), run once per input."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import yaml

from cosbuild import programs

SOURCE = Path(__file__).resolve().parent / "helmref" / "main.go"
GOPATH = "/usr/share/gocode"   # where Debian's golang-*-dev packages put their sources


class ReferenceRenderError(Exception):
    """The reference renderer refused the input (luet would fail too): its message."""


def build(cache: Path) -> Path:
    """The binary for the current main.go, built into `cache` unless it is there already
    (the name carries a hash of the source, so an edit rebuilds)."""
    digest = hashlib.sha256(SOURCE.read_bytes()).hexdigest()[:16]
    binary = cache / f"helmref-{digest}"
    if binary.exists():
        return binary
    # Debian's library sources are a GOPATH tree, not modules
    env = {**os.environ, "GO111MODULE": "off", "GOPATH": GOPATH, "GOFLAGS": "",
           "GOCACHE": str(cache / "gocache")}
    partial = binary.with_suffix(f".partial-{os.getpid()}")   # test workers may race here
    proc = subprocess.run(["go", "build", "-o", str(partial), str(SOURCE)], env=env,
                          capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"building {SOURCE} failed:\n{proc.stderr}")
    partial.rename(binary)
    return binary


def unavailable() -> str | None:
    """Why the reference cannot be built here, or None."""
    go = programs.BY_NAME["go"]
    if shutil.which("go") is None:
        return f"go is not installed ({programs.install_hint('go')})"
    missing = go.missing_libraries()
    if missing:
        return f"Go libraries missing: apt-get install {' '.join(missing)} (or run `make deps`)"
    return None


@dataclass(frozen=True)
class HelmReference:
    binary: Path

    def _run(self, request: dict) -> str:
        proc = subprocess.run([str(self.binary)], input=json.dumps(request),
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise ReferenceRenderError(proc.stderr.strip())
        return proc.stdout

    def render(self, sources: list[tuple[str, str]], values: dict) -> str:
        """Render like luet: the sources concatenated, `values` as the package's
        definition.yaml (so read by go-yaml v2 as luet reads it), no values files."""
        # as JSON (which go-yaml reads too): its strings stay strings, where a plain `y`
        # would be go-yaml's boolean
        return self.render_package(sources, json.dumps(values))

    def render_package(self, sources: list[tuple[str, str]], definition: str,
                       values_files: tuple[str, ...] = (),
                       collection: dict | None = None) -> str:
        """Render a package as luet's FromPackage does: `definition` is the text of its
        definition.yaml, or of its collection.yaml with `collection` naming the stanza
        ({name, category, version}); `values_files` the texts of the --values files."""
        return self._run(self._request(sources, definition, values_files, collection))

    def values(self, definition: str, values_files: tuple[str, ...] = (),
               collection: dict | None = None) -> dict:
        """What such a package's template sees as .Values."""
        request = self._request([], definition, values_files, collection)
        return yaml.safe_load(self._run({**request, "output": "values"}))

    @staticmethod
    def _request(sources, definition, values_files, collection) -> dict:
        return {"sources": [list(s) for s in sources], "definition": definition,
                "values_files": list(values_files), "collection": collection}
