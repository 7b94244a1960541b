"""Invocation settings, declared once: each has a command-line option, a doit variable
(`doit values=values/trixie.yaml ...`) and an environment variable, in that precedence."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from . import arches
from .errors import CosbuildError


@dataclass(frozen=True)
class Setting:
    name: str            # attribute, doit variable and (with dashes) the --option
    env: str
    default: str
    doc: str
    multiple: bool = False   # repeatable option; the env/doit variable is `separator`-separated
    separator: str = ":"     # ',' for registry names and URLs, which contain ':'
    flag: bool = False       # an on/off option without a value (the variables take 1/yes)
    spec_file: bool = False  # a file the project may have: the default may be absent, a file
                             # named by the option or a variable must be there
    unset: str = "none"      # what an empty default stands for, in the settings page


SETTINGS = (
    Setting("tree", "COSBUILD_TREE", "tree", "package tree folder (repeatable)", multiple=True),
    Setting("values", "COSBUILD_VALUES", "",
            "values file (repeatable, rightmost wins); default values/<flavor>.yaml", multiple=True),
    FLAVOR := Setting("flavor", "COSBUILD_FLAVOR", "bookworm",
                      "flavor whose values/<flavor>.yaml is used when no values file is given"),
    Setting("arch", "COSBUILD_ARCH", "", "architecture to build for, by Debian's name (amd64, "
            "arm64): values.arch in templates, the bootstraps', images', ISO's and disk's "
            "architecture (docs/builds.md, Architectures); another than the host's runs "
            "through qemu-user (set up by `scripts/install-deps`)", unset="the host's"),
    Setting("build_dir", "COSBUILD_BUILD_DIR", "build",
            "output folder for specs, artifacts and logs; `build-ARCH` when `--arch` is not "
            "amd64, so that both architectures' outputs stay side by side"),
    Setting("image_repository", "COSBUILD_IMAGE_REPOSITORY", "luet/cache",
            "repository of the cache images, tagged by build hash: luet/cache is local storage "
            "only; naming a registry (HOST[:PORT]/PATH) makes it a shared cache, looked up "
            "before building and pushed to (builds.md, Shared build cache)"),
    Setting("pull_repositories", "COSBUILD_PULL_REPOSITORIES", "",
            "read-only cache image repositories in registries (HOST/PATH), looked up after "
            "the image repository (repeatable; ','-separated)", multiple=True, separator=","),
    Setting("push", "COSBUILD_PUSH", "", "push the images of every build to the image repository "
            "(1/yes)", flag=True),
    Setting("from_cache_only", "COSBUILD_FROM_CACHE_ONLY", "",
            "build nothing that the image cache (local storage, the image and pull "
            "repositories) does not have, but the packages `cosbuild build` names: a CI job "
            "that runs before the jobs it needs fails, naming what is missing (1/yes)",
            flag=True),
    Setting("insecure_registries", "COSBUILD_INSECURE_REGISTRIES", "",
            "registries (HOST[:PORT]) reached without TLS verification, for local testing "
            "(repeatable; ','-separated)", multiple=True, separator=","),
    Setting("cache_trusted_root", "COSBUILD_CACHE_TRUSTED_ROOT", "",
            "TUF root (a key set's root.json) the cache images pulled from registries must be "
            "signed under: images it does not vouch for are built instead, a cache whose "
            "metadata fails verification is an error"),
    Setting("build_repo", "COSBUILD_BUILD_REPO", "",
            "a repository (URL or folder) that build deps no local tree provides come from, "
            "before those of the project's .luet.yaml or luet.yaml (repeatable; ','-separated)",
            multiple=True, separator=","),
    Setting("isolation", "COSBUILD_ISOLATION", "chroot",
            "buildah --isolation: chroot (works everywhere; OCI isolation fails on cgroups-v1 "
            "hybrid hosts), oci or rootless"),
    Setting("storage_driver", "COSBUILD_STORAGE_DRIVER", "",
            "buildah --storage-driver (default: buildah's own, overlay on Debian)"),
    Setting("template_engine", "COSBUILD_TEMPLATE_ENGINE", "auto",
            "template engine of build.yaml/finalize.yaml/templates: auto (per file, then per "
            "tree), helm (luet's) or jinja2"),
    Setting("strict", "COSBUILD_STRICT", "", "validate: warnings (keys that luet, luet-makeiso "
            "or yip ignore) are errors (1/yes)", flag=True),
    Setting("verbose", "COSBUILD_VERBOSE", "", "stream container output live (1/yes)", flag=True),
    Setting("keep_failed", "COSBUILD_KEEP_FAILED", "", "keep the container of a failed prelude "
            "or step as cosbuild-failed-CATEGORY-NAME, for `cosbuild shell CAT/NAME` (1/yes)",
            flag=True),
    Setting("iso", "COSBUILD_ISO", "iso.yaml", "ISO specification (luet-makeiso format); "
            "`iso-ARCH.yaml` when `--arch` is not amd64", spec_file=True),
    Setting("disk", "COSBUILD_DISK", "disk.yaml", "disk specification (system image and "
            "disk); `disk-ARCH.yaml` when `--arch` is not amd64", spec_file=True),
    Setting("repo_name", "COSBUILD_REPO_NAME", "cosbuild", "name of the repository `doit repo` makes"),
    Setting("repo_description", "COSBUILD_REPO_DESCRIPTION", "", "its description"),
    Setting("repo_type", "COSBUILD_REPO_TYPE", "disk", "its type: disk or http (docker: see create-repo)"),
    Setting("repo_urls", "COSBUILD_REPO_URLS", "",
            "where its clients find it (repeatable; ','-separated)", multiple=True, separator=","),
    Setting("signing_keys", "COSBUILD_SIGNING_KEYS", "",
            "TUF key set (`cosbuild keys generate DIR`) that `doit repo` and create-repo sign "
            "the repository with, and a build signs the cache images it pushes with"),
    Setting("signing_expiry", "COSBUILD_SIGNING_EXPIRY", "1d",
            "how long a signed repository's timestamp is valid (1d, 12h, 90m); snapshot 7x, "
            "targets 30x that"),
)


@dataclass(frozen=True)
class Signing:
    """How a repository is signed (repos/signing.py)."""
    keys: Path
    expiry: timedelta
    refresh: bool = False   # sign a new timestamp even when nothing changed


@dataclass(frozen=True)
class RepoInfo:
    """What `doit repo` / `create-repo` write into repository.yaml."""
    name: str
    description: str = ""
    type: str = "disk"
    urls: tuple[str, ...] = ()
    signing: Signing | None = None


@dataclass(frozen=True)
class Settings:
    trees: tuple[Path, ...]
    values: tuple[Path, ...]
    flavor: str
    build_dir: Path
    arch: str = arches.ORIGINAL
    image_repository: str = "luet/cache"
    pull_repositories: tuple[str, ...] = ()
    push: bool = False
    from_cache_only: bool = False
    insecure_registries: tuple[str, ...] = ()
    build_repo: tuple[str, ...] = ()
    isolation: str = "chroot"
    storage_driver: str = ""
    verbose: bool = False
    keep_failed: bool = False
    template_engine: str = "auto"
    strict: bool = False
    iso: Path = Path("iso.yaml")
    disk: Path = Path("disk.yaml")
    repo_name: str = "cosbuild"
    repo_description: str = ""
    repo_type: str = "disk"
    repo_urls: tuple[str, ...] = ()
    signing_keys: Path | None = None
    cache_trusted_root: Path | None = None
    signing_expiry: timedelta = timedelta(days=1)

    @property
    def specs_dir(self) -> Path:
        return self.build_dir / "specs"

    @property
    def logs_dir(self) -> Path:
        return self.build_dir / "logs"

    def repo_info(self, **overrides) -> RepoInfo:
        """The repository `doit repo` / `create-repo` writes; None overrides keep the setting."""
        given = {k: v for k, v in overrides.items() if v is not None}
        keys = self.signing_keys
        return RepoInfo(name=given.get("name", self.repo_name),
                        description=given.get("description", self.repo_description),
                        type=given.get("type", self.repo_type),
                        urls=tuple(given.get("urls", self.repo_urls)),
                        signing=Signing(keys, self.signing_expiry,
                                        bool(given.get("resign"))) if keys else None)


def _value(s: Setting, options: dict, env, doit_vars: dict):
    """One setting's value by the precedence, and whether it was given at all."""
    value = options.get(s.name)
    if value not in (None, [], ()):
        return value, value
    given = doit_vars.get(s.name) or env.get(s.env)
    text = given or s.default
    return ([p for p in text.split(s.separator) if p] if s.multiple else text), given


def value_of(name: str, options: dict) -> str | list[str]:
    """One setting alone, for a command that needs no others (the client's: no tree)."""
    return _value(next(s for s in SETTINGS if s.name == name), options, os.environ, {})[0]


def given(options: dict | None = None, env: dict | None = None,
          doit_vars: dict | None = None) -> dict[str, str]:
    """The settings given (not left at their defaults), as the environment variables that
    give them elsewhere, and SOURCE_DATE_EPOCH when set: what a CI job of `cosbuild plan`
    must run with to make what this machine would."""
    options, env, doit_vars = options or {}, os.environ if env is None else env, doit_vars or {}
    out = {"SOURCE_DATE_EPOCH": env["SOURCE_DATE_EPOCH"]} if env.get("SOURCE_DATE_EPOCH") else {}
    for s in SETTINGS:
        value, was_given = _value(s, options, env, doit_vars)
        if was_given:
            out[s.env] = s.separator.join(value) if s.multiple else str(value)
    return out


def resolve(options: dict | None = None, env: dict | None = None,
            doit_vars: dict | None = None) -> Settings:
    """Merge option > doit variable > environment > default for every setting."""
    options, env, doit_vars = options or {}, os.environ if env is None else env, doit_vars or {}
    source_date_epoch(env)   # checked before any step: the steps stamp their artifacts with it
    raw, given_names = {}, set()
    for s in SETTINGS:
        value, given = _value(s, options, env, doit_vars)
        if s.spec_file and given and not Path(value).is_file():
            raise CosbuildError("not found" if not Path(value).exists() else "not a file",
                                file=value, key=f"--{s.name} / {s.env}",
                                hint=f"name an existing {s.doc.split(' (')[0]}")
        raw[s.name] = value
        if given:
            given_names.add(s.name)
    arch = arches.get(raw["arch"] or arches.host()).name
    for name in ("build_dir", "iso", "disk"):
        if arch != arches.ORIGINAL and name not in given_names:
            # another architecture's outputs and specifications: build-arm64, iso-arm64.yaml
            default = Path(raw[name])
            raw[name] = str(default.with_name(f"{default.stem}-{arch}{default.suffix}"))
    values = [Path(v) for v in raw["values"]]
    if not values:
        # a tree outside this repository may have no values/ folder: then no values file,
        # unless a flavor was asked for explicitly
        default = Path("values") / f"{raw['flavor']}.yaml"
        if default.is_file():
            values = [default]
        elif raw["flavor"] != FLAVOR.default:
            raise CosbuildError(f"no values file for flavor '{raw['flavor']}'", file=default,
                                hint="create it or pick another --flavor / COSBUILD_FLAVOR")
    return Settings(trees=tuple(Path(t) for t in raw["tree"]), values=tuple(values),
                    flavor=raw["flavor"], build_dir=Path(raw["build_dir"]), arch=arch,
                    image_repository=raw["image_repository"],
                    pull_repositories=tuple(raw["pull_repositories"]), push=_yes(raw["push"]),
                    from_cache_only=_yes(raw["from_cache_only"]),
                    insecure_registries=tuple(raw["insecure_registries"]),
                    build_repo=tuple(raw["build_repo"]),
                    isolation=_choice(raw["isolation"], "isolation",
                                      ("chroot", "oci", "rootless")),
                    storage_driver=raw["storage_driver"], iso=Path(raw["iso"]), disk=Path(raw["disk"]),
                    repo_name=raw["repo_name"],
                    repo_description=raw["repo_description"], repo_type=raw["repo_type"],
                    repo_urls=tuple(raw["repo_urls"]),
                    signing_keys=Path(raw["signing_keys"]) if raw["signing_keys"] else None,
                    cache_trusted_root=(Path(raw["cache_trusted_root"])
                                        if raw["cache_trusted_root"] else None),
                    signing_expiry=duration(raw["signing_expiry"], "signing_expiry"),
                    template_engine=_choice(raw["template_engine"], "template_engine",
                                            ("auto", "helm", "jinja2")),
                    verbose=_yes(raw["verbose"]), keep_failed=_yes(raw["keep_failed"]),
                    strict=_yes(raw["strict"]))


# the latest time stamp every artifact holds: squashfs stores unsigned 32-bit seconds (2106)
EPOCH_MAX = 2**32 - 1


def source_date_epoch(env=None) -> int:
    """SOURCE_DATE_EPOCH, the time stamp of every artifact; 0 when unset or empty, so that
    builds are reproducible by default. Not decimal seconds from 0 to EPOCH_MAX: an error,
    not a silent 0 or a stamp a file system would wrap."""
    text = (os.environ if env is None else env).get("SOURCE_DATE_EPOCH", "")
    if text and not (text.isascii() and text.isdigit() and len(text) <= len(str(EPOCH_MAX))
                     and int(text) <= EPOCH_MAX):
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise CosbuildError(f"{shown!r} is not a time stamp", key="SOURCE_DATE_EPOCH",
                            hint=f"seconds since 1970 in decimal digits, 0 to {EPOCH_MAX} "
                                 "(the latest squashfs holds), or unset")
    return int(text or 0)


def _choice(value: str, name: str, choices: tuple[str, ...]) -> str:
    if value not in choices:
        setting = next(s for s in SETTINGS if s.name == name)
        raise CosbuildError(f"unknown value '{value}' for --{name.replace('_', '-')} / "
                            f"{setting.env}", hint=f"one of: {', '.join(choices)}")
    return value


# a signed repository's targets live 30 times the expiry: with this they end before the year
# 2330, a date python-tuf writes (a larger one overflowed)
DURATION_MAX = timedelta(days=3650)


def duration(text: str, name: str) -> timedelta:
    """A duration setting: a positive number of days, hours or minutes (1d, 12h, 90m)."""
    match = re.fullmatch(r"(\d{1,9})([dhm])", text.strip())   # 9 digits: a timedelta
    unit = match and {"d": "days", "h": "hours", "m": "minutes"}[match.group(2)]
    value = timedelta(**{unit: int(match.group(1))}) if match else None
    if not value or value > DURATION_MAX:
        setting = next(s for s in SETTINGS if s.name == name)
        shown = text if len(text) <= 40 else f"{text[:40]}..."
        raise CosbuildError(f"'{shown}' is not a duration for --{name.replace('_', '-')} / "
                            f"{setting.env}", hint="a positive number of days, hours or "
                                                   "minutes up to 3650d: 1d, 12h, 90m")
    return value


def _yes(value) -> bool:
    return str(value).lower() in ("1", "yes", "true", "on")


SETTINGS_PAGE = """\
# Settings

```sh
cosbuild --flavor trixie build system/sampleOS     # an option
doit flavor=trixie build:system/sampleOS           # a doit variable
COSBUILD_FLAVOR=trixie make iso                    # an environment variable
```

Every setting is a command-line option of `cosbuild` (before or after the command), a doit
variable (`doit NAME=VALUE TASK`) and an environment variable, in that precedence. A
repeatable option is given once per value; its variables take the values joined by the
separator shown. An on/off setting takes `1`, `yes`, `true` or `on` in its variables.
`-v` is `--verbose`. The command-line reference is [cli.md](cli.md).

This page is generated from `cosbuild/settings.py` (`cosbuild docs settings`).
"""


def settings_page() -> str:
    """docs/settings.md: each setting of the one table, with its three spellings."""
    rows = []
    for s in SETTINGS:
        option = f"--{s.name.replace('_', '-')}"
        value = "" if s.flag else " VALUE"
        spelled = (f"`{option}`" + (" (repeatable)" if s.multiple else "")
                   + f", `doit {s.name}={'1' if s.flag else '...'}`, `{s.env}`")
        if s.multiple:
            spelled += f" (`{s.separator}`-separated)"
        default = "off" if s.flag else (f"`{s.default}`" if s.default else s.unset)
        rows.append(f"## {option}{value}\n\n{spelled}; default {default}.\n\n{s.doc[0].upper()}{s.doc[1:]}.\n")
    return SETTINGS_PAGE + "\n" + "\n".join(rows)
