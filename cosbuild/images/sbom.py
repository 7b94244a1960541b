"""The bill of materials of an image: an SPDX 2.3 JSON document, build/<image>.spdx.json.

It describes one package, the image, which CONTAINS every cosbuild package installed into
it (from the manifests of its staged roots: id, version, artifact sha256, the license its
definition declares), every package whose files an installed artifact holds (an `unpack`
package's artifact is its whole image), and every Debian package installed in its root (from
the root's dpkg status: name, version, architecture, as a `pkg:deb/debian/...` purl).

spdx-tools builds, validates and writes the document. It is reproducible: the time stamp is
SOURCE_DATE_EPOCH, the namespace and the SPDX ids are derived from the content, and every
list is sorted, so the same packages give the same bytes.

The dpkg status is the image's data, not cosbuild's: it is read inside the root only
(rootpath.py), bounded, and parsed strictly; a mistake names the file and the line.
"""

from __future__ import annotations

import datetime
import errno
import hashlib
import io
import json
import os
import re
import uuid
from dataclasses import astuple, dataclass
from pathlib import Path
from urllib.parse import quote

from .. import __version__, rootpath
from ..builds.artifact import sha256_file
from ..errors import CosbuildError
from ..fsutil import atomic_write
from ..settings import source_date_epoch
from ..terminal import say
from ..tree.yamlio import load_mapping

SUFFIX = ".spdx.json"
DPKG_STATUS = "var/lib/dpkg/status"
# a real status file holds about 1 KB a package; spdx-tools validates in a time quadratic
# in the packages (some 3 s for 2000), so a status of millions would never end
STATUS_LIMIT = 32 << 20
PACKAGES_LIMIT = 20_000

# Debian policy 5.6.1, 5.6.12 and dpkg's architecture names, bounded
_DEB_NAME = re.compile(r"[a-z0-9][a-z0-9+.-]{0,127}")
_DEB_VERSION = re.compile(r"(?:[0-9]{1,10}:)?[A-Za-z0-9][A-Za-z0-9.+~:-]{0,255}")
_DEB_ARCH = re.compile(r"[a-z0-9][a-z0-9-]{0,63}")
# deb822: a field name is printable ASCII but for space and colon, not starting with # or -
_FIELD = re.compile(r"([!\"$-,.-9;-~][!-9;-~]*):(.*)")


@dataclass(frozen=True, order=True)
class CosbuildPackage:
    """A cosbuild package of the image: installed, or held by the artifact of one that is."""
    id: str                         # category/name
    version: str
    sha256: str                     # of its artifact
    license: str = ""               # as its definition declares it (free text)
    holds: tuple[str, ...] = ()     # id@version of the packages its artifact holds

    @property
    def key(self) -> str:
        return f"{self.id}@{self.version}"


@dataclass(frozen=True, order=True)
class DebPackage:
    """A Debian package installed in the image's root."""
    name: str
    version: str
    arch: str

    @property
    def purl(self) -> str:
        # purl: each part percent-encoded but for ':' (an epoch keeps its colon)
        part = lambda text: quote(text, safe=":")   # noqa: E731
        return f"pkg:deb/debian/{part(self.name)}@{part(self.version)}?arch={part(self.arch)}"


def sbom_path(build_dir: Path, image: str) -> Path:
    return build_dir / f"{image}{SUFFIX}"


# --------------------------------------------------------------------------- what is inside

def read_manifests(manifests: list[Path]) -> dict[str, str]:
    """id@version -> artifact sha256 of the packages installed into the staged roots whose
    manifests ({"packages": {id@version: sha256}}) these are."""
    return {key: sha256 for manifest in manifests
            for key, sha256 in (load_mapping(manifest).get("packages") or {}).items()}


def held(graph, key: str) -> set[str]:
    """The packages whose files the artifact of `key` holds besides its own: an `unpack`
    build's artifact is its whole image (includes and excludes aside), and so holds what
    that image was made of. Nothing is known of a remote package's build."""
    pkg = graph.packages[key]
    return _in_image(graph, pkg) if pkg.rendered.build.unpack and not pkg.remote else set()


def _in_image(graph, pkg) -> set[str]:
    """The packages a package image is made of, by its source as the builder picks it: the
    final artifacts it starts from, or the package images of its chain; none for a base
    image or a bootstrapped Debian (whose packages the dpkg status lists)."""
    b = pkg.rendered.build
    if pkg.remote or b.bootstrap:
        return set()
    if b.final_image_deps:
        closure = graph.resolver.runtime_closure(b.final_image_deps, pkg.key)
        return set(closure).union(*(held(graph, k) for k in closure))
    if b.image:
        return set()
    chain = [step.key for step in pkg.chain]
    return set(chain) | _in_image(graph, graph.packages[chain[0]])


def cosbuild_packages(graph, installed: dict[str, str], build_dir: Path
                      ) -> list[CosbuildPackage]:
    """The `installed` packages (id@version -> sha256) and the packages their artifacts
    hold (whose artifacts are in `build_dir`), with the licenses of their definitions."""
    def known(key: str) -> set[str]:   # a package of iso.yaml's repositories is not
        return held(graph, key) if key in graph.packages else set()

    holds = {key: known(key) for key in installed}
    for key in set().union(*holds.values()) - set(installed):
        holds[key] = known(key)
    sha256 = {key: installed.get(key) or sha256_file(build_dir / graph.packages[key].artifact_file)
              for key in holds}
    return sorted(CosbuildPackage(*key.partition("@")[::2], sha256[key],
                                  graph.packages[key].definition.license
                                  if key in graph.packages else "", tuple(sorted(inside)))
                  for key, inside in holds.items())


def read_dpkg_status(root: Path) -> list[DebPackage]:
    """The Debian packages installed in `root`: none when it has no dpkg status."""
    shown = root / DPKG_STATUS
    try:
        # the entry itself, its folders' links resolved inside the root
        if not os.path.lexists(rootpath.resolve(root, DPKG_STATUS)):
            return []
        data = rootpath.read_bytes(root, DPKG_STATUS, limit=STATUS_LIMIT)
    except CosbuildError as exc:
        raise CosbuildError(exc.message, file=shown, hint="the image's dpkg database is "
                            "damaged: fix the package that writes it") from None
    except OSError as exc:
        reason = ("a link that leads nowhere inside the root" if exc.errno == errno.ENOENT
                  else exc.strerror)
        raise CosbuildError(f"cannot read the dpkg status: {reason}", file=shown,
                            hint="it is read inside the image's root only") from None
    return parse_dpkg_status(data.decode(errors="replace"), shown)


def parse_dpkg_status(text: str, file: Path | str) -> list[DebPackage]:
    """The installed packages of a dpkg status file: deb822 paragraphs, of which those whose
    Status ends in `installed` (`install ok installed`; `hold ok installed` when held)."""
    found = set()
    for start, fields in _paragraphs(text, file):
        status = _value(fields, "Status", start, file).split()
        if len(status) != 3:
            raise CosbuildError(f"Status {' '.join(status)[:60]!r} is not 'want flag status'",
                                file=file, line=fields["status"][0])
        if status[2] == "installed":
            found.add(DebPackage(*(_value(fields, name, start, file, pattern) for name, pattern in
                                   (("Package", _DEB_NAME), ("Version", _DEB_VERSION),
                                    ("Architecture", _DEB_ARCH)))))
            if len(found) > PACKAGES_LIMIT:
                raise CosbuildError(f"more than {PACKAGES_LIMIT} installed packages", file=file,
                                    line=start)
    return sorted(found)


def _value(fields: dict, name: str, start: int, file, pattern: re.Pattern | None = None) -> str:
    """The field `name` of the paragraph at line `start`: there, and matching `pattern`."""
    line, value = fields.get(name.lower(), (start, ""))
    value = value.strip()
    if not value:
        raise CosbuildError(f"the package at line {start} has no {name}", file=file, line=line)
    if pattern and not pattern.fullmatch(value):
        raise CosbuildError(f"{value[:60]!r} is not a valid {name}", file=file, line=line)
    return value


def _paragraphs(text: str, file):
    """(first line, {lower-case field name: (line, value)}) of each paragraph."""
    fields, start, last = {}, 0, None
    for n, line in enumerate(text.split("\n"), 1):
        if not line.strip(" \t"):   # a blank line (deb822 allows spaces and tabs) ends one
            if fields:
                yield start, fields
            fields, last = {}, None
        elif line[0] in " \t":      # a continuation line: kept only for the error check
            if last is None:
                raise CosbuildError("a continuation line with no field before it", file=file,
                                    line=n)
        else:
            match = _FIELD.fullmatch(line)
            if not match:
                raise CosbuildError(f"{line[:60]!r} is not a field (Name: value)", file=file,
                                    line=n)
            last = match[1].lower()
            if last in fields:
                raise CosbuildError(f"the field {match[1]} twice in one package", file=file,
                                    line=n)
            start = start if fields else n
            fields[last] = (n, match[2])
    if fields:
        yield start, fields


# --------------------------------------------------------------------------- the document

def _token(text: str) -> str:
    """`text` with the characters an SPDX id may not hold replaced."""
    return re.sub(r"[^A-Za-z0-9.-]", "-", text)


def _digest(*parts: str) -> str:
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()


def _license(text: str):
    """(the license expression of a definition's `license`, the ExtractedLicensingInfo it
    needs or None). Free text that is not an SPDX expression (e.g. "various") becomes a
    LicenseRef carrying the text; none is NOASSERTION."""
    from spdx_tools.common.spdx_licensing import spdx_licensing
    from spdx_tools.spdx.model import ExtractedLicensingInfo, SpdxNoAssertion
    if not text.strip():
        return SpdxNoAssertion(), None
    try:
        checked = spdx_licensing.validate(text)
        if not checked.errors and checked.normalized_expression:
            return spdx_licensing.parse(checked.normalized_expression), None
    except Exception:   # noqa: BLE001 license_expression fails on some malformed text
        pass            # with AttributeError: any failure means "not an SPDX expression"
    token = _token(text)
    ref = f"LicenseRef-{token}" if token == text else f"LicenseRef-{token}-{_digest(text)[:8]}"
    return (spdx_licensing.parse(ref),
            ExtractedLicensingInfo(ref, text, text, comment="the license its definition names"))


def document(image: str, packages: list[CosbuildPackage], debs: list[DebPackage],
             epoch: int):
    """The SPDX document of the image `image` made of `packages` and `debs`."""
    from spdx_tools.spdx.model import (Actor, ActorType, Checksum, ChecksumAlgorithm,
                                       CreationInfo, Document, ExternalPackageRef,
                                       ExternalPackageRefCategory, Package, PackagePurpose,
                                       Relationship, RelationshipType, SpdxNoAssertion)
    packages, debs = sorted(set(packages)), sorted(set(debs))
    content = json.dumps([image, [astuple(p) for p in packages], [astuple(d) for d in debs]])

    def package(spdx_id: str, name: str, version: str | None, **more) -> Package:
        return Package(spdx_id, name, SpdxNoAssertion(), version, supplier=SpdxNoAssertion(),
                       files_analyzed=False, **more)

    image_id = f"SPDXRef-image-{_token(image)}"
    listed, licenses = [package(image_id, image, None,
                                primary_package_purpose=PackagePurpose.OPERATING_SYSTEM)], {}
    ids = {p.key: f"SPDXRef-cosbuild-{_token(p.id)}-{_digest(p.id, p.version)[:12]}"
           for p in packages}
    for p in packages:
        declared, extracted = _license(p.license)
        if extracted:
            licenses[extracted.license_id] = extracted
        listed.append(package(ids[p.key], p.id, p.version,
                              checksums=[Checksum(ChecksumAlgorithm.SHA256, p.sha256)],
                              license_concluded=SpdxNoAssertion(), license_declared=declared))
    for d in debs:
        listed.append(package(
            f"SPDXRef-deb-{_token(d.name)}-{_digest(d.name, d.version, d.arch)[:12]}", d.name,
            d.version, license_concluded=SpdxNoAssertion(), license_declared=SpdxNoAssertion(),
            external_references=[ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER,
                                                    "purl", d.purl)]))
    created = datetime.datetime.fromtimestamp(epoch, datetime.timezone.utc)
    info = CreationInfo(
        "SPDX-2.3", "SPDXRef-DOCUMENT", image,
        f"https://spdx.org/spdxdocs/{_token(image)}-{uuid.uuid5(uuid.NAMESPACE_URL, content)}",
        [Actor(ActorType.TOOL, f"cosbuild-{__version__}")], created)
    relationships = [Relationship("SPDXRef-DOCUMENT", RelationshipType.DESCRIBES, image_id)]
    relationships += [Relationship(image_id, RelationshipType.CONTAINS, p.spdx_id)
                      for p in listed[1:]]
    relationships += [Relationship(ids[p.key], RelationshipType.CONTAINS, ids[inside])
                      for p in packages for inside in p.holds]
    return Document(info, packages=listed, relationships=relationships,
                    extracted_licensing_info=[licenses[k] for k in sorted(licenses)])


def render(doc, file: Path) -> str:
    """The document as JSON, once spdx-tools finds it valid (else an error naming `file`)."""
    from spdx_tools.spdx.validation.document_validator import validate_full_spdx_document
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream
    problems = validate_full_spdx_document(doc)
    if problems:
        first = problems[0]
        where = first.context.spdx_id or first.context.parent_id or "the document"
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise CosbuildError(f"not a valid SPDX document: {where}: "
                            f"{first.validation_message}{more}", file=file)
    out = io.StringIO()
    # json.dump keeps the converter's key order and the document's list order: stable
    write_document_to_stream(doc, out, validate=False)
    return out.getvalue() + "\n"


def write_sbom(target: Path, image: str, project, manifests: list[Path], root: Path) -> None:
    """build/<image>.spdx.json of the image whose staged roots the `manifests` describe, the
    Debian packages of `root` (the one with a dpkg status)."""
    packages = cosbuild_packages(project.graph, read_manifests(manifests),
                                 project.settings.build_dir)
    doc = document(image, packages, read_dpkg_status(root), source_date_epoch())
    atomic_write(target, render(doc, target))
    say(f"SBOM: {target} ({len(doc.packages) - 1} packages)")
