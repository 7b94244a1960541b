"""The cloud-config ("yip") schema, and the build-time checking of the cloud-config files
packages ship (SPEC section 5).

The step keys and their shapes are declared once here: the validator checks them, and
`cos-setup` (runtime/setup.py) applies them in this table's order.

A finding is an error where cos-setup (or yip) would fail on the file: a wrong type, a
missing path, an invalid mode or encoding. A key yip does not know it ignores (go-yaml
drops unknown fields), and so does cos-setup: that is a warning (real trees have them, such
as cOS's `systemd:` step key), an error under `cosbuild validate --strict`.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import CosbuildError, CosbuildWarning, did_you_mean
from ..tree.yamlio import loads

# key -> (expected YAML type, what it does), in the order cos-setup applies a step's keys,
# whatever their order in the step (as yip runs its plugins): the environment first, the
# others may use it
STEP_KEYS = {
    "name": (str, "step name, for the log"),
    "if": (str, "shell test; the step is skipped when it fails"),
    "environment": (dict, "variables for the step's commands and environment_file"),
    "environment_file": (str, "file to write the environment to"),
    "files": (list, "files to write: path, permissions, owner, group, content, encoding"),
    "directories": (list, "directories to create: path, permissions, owner, group"),
    "commands": (list, "shell commands"),
    "hostname": (str, "the host name"),
    "dns": (dict, "nameservers, search, path"),
    "sysctl": (dict, "kernel parameters"),
    "modules": (list, "kernel modules to load"),
    "systemctl": (dict, "enable, disable, start, mask: lists of units"),
    "users": (dict, "name -> passwd (hash), groups, shell, uid, ssh_authorized_keys"),
    "authorized_keys": (dict, "user -> ssh keys"),
    "systemd_firstboot": (dict, "systemd-firstboot settings (keymap, timezone, locale, ...)"),
    "downloads": (list, "files to download: url, path, permissions, timeout"),
    "ensure_entities": (list, "passwd/shadow/group lines to make sure of: path, entity"),
    "delete_entities": (list, "passwd/shadow/group entries to remove: path, entity"),
    "timesyncd": (dict, "systemd-timesyncd settings"),
    "datasource": (dict, "cloud datasource (providers, path)"),
    "layout": (dict, "disk layout (handled by the installer)"),
}
# the keys that are no step action of cos-setup: it reads `name` and `if` around the step,
# and accepts the others but leaves them to other tools
NOT_APPLIED = ("name", "if", "timesyncd", "datasource", "layout")
APPLIED = tuple(key for key in STEP_KEYS if key not in NOT_APPLIED)   # in cos-setup's order
FILE_KEYS = {"path", "permissions", "owner", "group", "content", "encoding"}
ENCODINGS = ("", "b64", "base64", "gz", "gzip", "gz+base64", "gzip+base64", "gz+b64", "gzip+b64")
SYSTEMCTL_KEYS = ("enable", "disable", "mask", "start")   # cos-setup's order: start last
CLASSIC_KEYS = {"users", "write_files", "runcmd", "hostname", "ssh_authorized_keys"}


def looks_like_cloud_config(text: str) -> bool:
    return text.lstrip().startswith("#cloud-config") or "\nstages:" in f"\n{text}"


def check(text: str, file: str | Path) -> list[CosbuildError]:
    """Every mistake of one cloud-config file, each with file:line and key; the ignored keys
    are CosbuildWarnings."""
    file = str(file)
    try:
        doc = loads(text, file) or {}
    except CosbuildError as exc:
        return [exc]
    errors: list[CosbuildError] = []

    def err(message, line, key, hint=None):
        errors.append(CosbuildError(message, file=file, line=line, key=key, hint=hint))

    def ignored(message, line, key, hint=None):
        errors.append(CosbuildWarning(f"{message}, ignored", file=file, line=line, key=key,
                                      hint=hint))

    if not isinstance(doc, dict):
        err("expected a mapping at the top level", 1, None)
        return errors
    if text.lstrip().startswith("#cloud-config"):
        for key in doc:
            if key not in CLASSIC_KEYS:
                ignored(f"unknown #cloud-config key '{key}'", doc.line_of(key), key,
                    did_you_mean(str(key), CLASSIC_KEYS) or f"supported: {', '.join(sorted(CLASSIC_KEYS))}")
        return errors
    for key in doc:
        if key not in ("name", "stages"):
            ignored(f"unknown top-level key '{key}'", doc.line_of(key), key,
                did_you_mean(str(key), ("name", "stages")) or "use name and stages")
    stages = doc.get("stages") or {}
    if not isinstance(stages, dict):
        err("'stages' must map stage names to lists of steps", doc.line_of("stages"), "stages")
        return errors
    for stage, steps in stages.items():
        line = stages.line_of(stage)   # any stage name: programs emit their own
        if not isinstance(steps, list):
            err(f"stage '{stage}' must be a list of steps", line, f"stages.{stage}")
            continue
        for n, step in enumerate(steps, 1):
            where = f"stages.{stage}[{n}]"
            if not isinstance(step, dict):
                err("a step must be a mapping", line, where)
                continue
            _check_step(step, where, err, ignored)
    return errors


def _check_step(step: dict, where: str, err, ignored) -> None:
    for key, value in step.items():
        line = step.line_of(key)
        if key not in STEP_KEYS:
            ignored(f"unknown step key '{key}'", line, f"{where}.{key}",
                did_you_mean(str(key), STEP_KEYS) or "see SPEC section 5 for the step keys")
            continue
        expected = STEP_KEYS[key][0]
        if not isinstance(value, expected):
            err(f"expected {_describe(expected)}, got {_describe(type(value))}", line,
                f"{where}.{key}")
            continue
        if key in ("files", "directories", "downloads"):
            for item in value:
                _check_file_entry(item, key, line, f"{where}.{key}", err, ignored)
        elif key == "systemctl":
            for action, units in value.items():
                if action not in SYSTEMCTL_KEYS:
                    ignored(f"unknown systemctl action '{action}'", value.line_of(action),
                        f"{where}.systemctl.{action}", did_you_mean(str(action), SYSTEMCTL_KEYS))
                elif not isinstance(units, list):
                    err("expected a list of units", value.line_of(action), f"{where}.systemctl.{action}")
        elif key == "commands" and not all(isinstance(c, str) for c in value):
            err("every command must be a string", line, f"{where}.commands")


def _check_file_entry(item, kind: str, line: int, where: str, err, ignored) -> None:
    if not isinstance(item, dict):
        err("expected a mapping", line, where)
        return
    line = getattr(item, "line", line)
    if not item.get("path"):
        err("missing 'path'", line, where)
    if kind == "downloads" and not item.get("url"):
        err("missing 'url'", line, where)
    mode = item.get("permissions")
    if mode is not None:
        ok = (isinstance(mode, int) and not isinstance(mode, bool) and 0 <= mode <= 0o7777) or (
            isinstance(mode, str) and mode.isdigit() and set(mode) <= set("01234567"))
        if not ok:
            err(f"invalid permissions {mode!r}", item.line_of("permissions"), f"{where}.permissions",
                "write an octal mode such as 0644")
    if kind == "files":
        for key in item:
            if key not in FILE_KEYS:
                ignored(f"unknown file key '{key}'", item.line_of(key), f"{where}.{key}",
                    did_you_mean(str(key), FILE_KEYS))
        encoding = str(item.get("encoding") or "").lower()
        if encoding not in ENCODINGS:
            err(f"unknown encoding {encoding!r}", item.line_of("encoding"), f"{where}.encoding",
                f"use one of: {', '.join(e for e in ENCODINGS if e)}")


def _describe(kind: type) -> str:
    for base, text in ((bool, "a boolean"), (list, "a list"), (dict, "a mapping"),
                       (str, "a string"), (int, "a number"), (float, "a number"),
                       (type(None), "nothing")):
        if issubclass(kind, base):
            return text
    return kind.__name__


def check_project(project) -> list[CosbuildError]:
    """The findings of every cloud-config file among the YAML files of the packages'
    folders (of every loaded package: one that failed to render still ships its files)."""
    # the tree side is needed at build time only: importing it here keeps cos-setup light
    from ..tree.load import BUILD, COLLECTION, DEFINITION, FINALIZE, context_files
    return check_files(sorted({f for p in project.tree.packages for f in context_files(p.folder)
                               if Path(f).name not in (BUILD, COLLECTION, DEFINITION, FINALIZE)}))


def check_files(names) -> list[CosbuildError]:
    """The findings of the cloud-config files among `names` (YAML files that look like one;
    only regular files are read: a FIFO would block)."""
    errors = []
    for name in names:
        path = Path(name)
        if path.suffix in (".yaml", ".yml") and path.is_file():
            text = path.read_text(encoding="utf-8", errors="replace")
            if looks_like_cloud_config(text):
                errors += check(text, name)
    return errors
