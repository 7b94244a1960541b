"""cos-setup: run cloud-config ("yip") stages, as cOS does at boot.

  cos-setup STAGE                 run STAGE.before, STAGE, STAGE.after from every file of
                                  /system/oem, /oem, /usr/local/cloud-config (lexical order)
                                  and the files named by cos.setup=URI on the kernel command line
  cos-setup --file F [--stage S]  apply one file (stage "default" when none is given)
  --root DIR                      apply to the system in DIR (files, users, units), e.g. an
                                  image being built; commands then run confined to DIR
                                  (bubblewrap: no network, file capabilities only, a time limit)
                                  and the host's programs a step runs (systemctl, useradd,
                                  systemd-firstboot) see the host read-only, DIR writable

Every path is resolved as inside DIR (a chroot of it: its links never lead out, and a path
whose `..` climbs above / is refused). Each file and each step is checked first (the checker
of `cosbuild validate`, runtime/cloudconfig.py): a malformed one runs nothing. A failing or
malformed step, or a malformed file, is logged and the others still run; the exit status is 1
when anything failed.
"""

import argparse
import hashlib
import http.client
import os
import secrets
import shlex
import string
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

from .. import rootpath, sandbox
from ..errors import CosbuildError
from ..tools import require
from . import cloudconfig
from .cloudconfig import APPLIED, SYSTEMCTL_KEYS

DIRS = ("/system/oem", "/oem", "/usr/local/cloud-config")
# what one download may bring: a `downloads` file (far above a key or a script), and a
# cloud-config file named by cos.setup=URI
DOWNLOAD_LIMIT = 1 << 30
CONFIG_LIMIT = 16 << 20
ROOT = "/"   # --root


def read(path) -> str:
    """The text of the file `path` of the system being set up."""
    return rootpath.read_bytes(ROOT, str(path)).decode()


def write(path, data: bytes, mode: int, owner=None) -> None:
    rootpath.write_file(ROOT, str(path), data, mode=mode, owner=owner)


def live():
    """Setting up the running system (not a folder): kernel settings and services apply."""
    return ROOT == "/"


def log(message):
    print(f"cos-setup: {message}", file=sys.stderr, flush=True)


def sh(command, env=None):
    """Run a shell command: on the running system as it is, in a root confined to it."""
    argv = ["/bin/sh", "-c", command]
    if live():
        return subprocess.run(argv, env={**os.environ, **(env or {})}).returncode
    require("bwrap")
    sandbox.prepare(Path(ROOT))
    try:
        return subprocess.run(sandbox.command(Path(ROOT), argv, env),
                              timeout=sandbox.TIMEOUT).returncode
    except subprocess.TimeoutExpired:
        raise RuntimeError(f"stopped after the time limit of {sandbox.TIMEOUT} s: "
                           f"{command}") from None


def run(argv):
    """Run a step's program, the host's; a missing one is reported with its Debian package.
    On a root (--root) it is confined by sandbox.host_program."""
    command = [require(argv[0]), *argv[1:]]
    if not live():
        require("bwrap")
        command = sandbox.host_program(Path(ROOT), command)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{shlex.join(argv)}: {proc.stderr.strip() or proc.returncode}")


# ----------------------------------------------------------------------------- step keys
# Each action gets a step cloudconfig.check_step found right: the types, names and values are
# as declared there. A path is resolved by rootpath (which refuses one whose `..` climbs
# above /); a name or value given to a program comes after `--` or as `--option=value`, so
# it can never be read as an option of its own.


def _owner(value, database):
    """A numeric id, or a name looked up in the system's /etc/passwd or /etc/group."""
    if value in (None, ""):
        return 0
    if isinstance(value, int) or str(value).isdigit():
        return int(value)
    try:
        for line in read(f"/etc/{database}").splitlines():
            fields = line.split(":")
            if fields[0] == str(value):
                return int(fields[2])
    except OSError:
        pass
    raise ValueError(f"unknown {'user' if database == 'passwd' else 'group'} {value!r}")


def _mode(value, default):
    return default if value is None else int(value, 8) if isinstance(value, str) else value


def do_files(items, env):
    for item in items:
        data = cloudconfig.decode(item.get("content", ""), item.get("encoding", ""))
        owner = (_owner(item.get("owner"), "passwd"), _owner(item.get("group"), "group"))
        write(item["path"], data, _mode(item.get("permissions"), 0o644), owner)


def do_directories(items, env):
    for item in items:
        mode = _mode(item.get("permissions"), 0o755)
        owner = (_owner(item.get("owner"), "passwd"), _owner(item.get("group"), "group"))
        rootpath.make_dirs(ROOT, item["path"], mode=mode, owner=owner)


def do_commands(items, env):
    for command in items:
        code = sh(command, env)
        if code:
            raise RuntimeError(f"command failed with exit code {code}: {command}")


def do_environment(values, env):
    env.update({str(k): str(v) for k, v in values.items()})


def do_environment_file(path, env):
    do_files([{"path": path, "content": "".join(f"{k}={v}\n" for k, v in sorted(env.items())),
               "permissions": 0o644}], env)


def do_hostname(name, env):
    do_files([{"path": "/etc/hostname", "content": f"{name}\n"}], env)
    if live() and os.path.exists("/proc/sys/kernel/hostname"):
        with open("/proc/sys/kernel/hostname", "w") as f:
            f.write(name)


def do_dns(config, env):
    lines = [f"nameserver {n}" for n in config.get("nameservers") or []]
    if config.get("search"):
        lines.append("search " + " ".join(config["search"]))
    do_files([{"path": config.get("path", "/etc/resolv.conf"), "content": "\n".join(lines) + "\n"}], env)


def do_sysctl(values, env):
    if not live():
        raise RuntimeError("sysctl applies to a running system only")
    for key, value in values.items():
        with open("/proc/sys/" + key.replace(".", "/"), "w") as f:
            f.write(str(value))


def do_modules(names, env):
    if not live():
        raise RuntimeError("modules apply to a running system only")
    for name in names:
        run(["modprobe", "--", name])


def do_systemctl(config, env):
    for action in SYSTEMCTL_KEYS:   # start last
        for unit in config.get(action) or []:
            if action != "start":
                run(["systemctl", *([] if live() else [f"--root={ROOT}"]), action, "--", unit])
            elif live():   # units start on a running system only
                # --no-block: stages run inside the boot transaction, which must not wait on itself
                run(["systemctl", "start", "--no-block", "--", unit])


def do_users(users, env):
    root = [] if live() else ["--root", ROOT]
    for name, user in users.items():
        user = user or {}
        try:   # by name: a name of digits is no uid here
            _passwd_entry(name)
        except ValueError:
            argv = ["useradd", *root, "--create-home"]
            if user.get("uid") is not None:
                argv.append(f"--uid={user['uid']}")
            if user.get("shell"):
                argv.append(f"--shell={user['shell']}")
            run([*argv, "--", name])
        if user.get("passwd"):
            run(["usermod", *root, f"--password={user['passwd']}", "--", name])
        if user.get("groups"):   # names: no `,` in them (checked)
            run(["usermod", *root, "--append", f"--groups={','.join(user['groups'])}", "--", name])
        if user.get("ssh_authorized_keys"):
            do_authorized_keys({name: user["ssh_authorized_keys"]}, env)


def do_authorized_keys(keys, env):
    for name, lines in keys.items():
        entry = _passwd_entry(name)
        uid, gid, home = int(entry[2]), int(entry[3]), entry[5]
        try:   # the root's own data: it may not lead out either
            rootpath.check_inside(os.path.join(home, ".ssh"), ROOT)
        except CosbuildError as exc:
            raise ValueError(f"home directory of {name} in /etc/passwd: {exc}") from None
        do_directories([{"path": os.path.join(home, ".ssh"), "permissions": 0o700,
                         "owner": uid, "group": gid}], env)
        do_files([{"path": os.path.join(home, ".ssh/authorized_keys"),
                   "content": "\n".join(lines) + "\n", "permissions": 0o600,
                   "owner": uid, "group": gid}], env)


def _passwd_entry(name):
    for line in read("/etc/passwd").splitlines():
        fields = line.split(":")
        if fields[0] == name and len(fields) >= 7:
            return fields
    raise ValueError(f"unknown user {name!r}")


def do_ensure_entities(items, env):
    """Make sure of each entry (cloudconfig.ENTITY), as mudler/entities (yip's) applies one:
    the entry of the same name is replaced where it is, else added; a group keeps its users
    (the new ones are added), and its password and gid where none is given."""
    for item in items:
        path, name, entry = _entity(item)
        lines, mode = _entries(path)
        same = [n for n, line in enumerate(lines) if line.split(":", 1)[0] == name]
        if not isinstance(entry, str):   # a short (malformed) entry reads as empty fields
            old = (lines[same[0]] + ":" * 3).split(":") if same else None
            entry = _entity_line(entry, old, lines)
        lines = [entry if n == same[0] else line for n, line in enumerate(lines)
                 if n not in same[1:]] if same else [*lines, entry]
        write(path, ("\n".join(lines) + "\n").encode(), mode)


def do_delete_entities(items, env):
    for item in items:
        path, name, _ = _entity(item)
        lines, mode = _entries(path)
        kept = [line for line in lines if line.split(":", 1)[0] != name]
        if kept != lines:
            write(path, "".join(f"{line}\n" for line in kept).encode(), mode)


def _entity(item):
    """(file, name, entry) of a checked entity: `entry` is its line, or its YAML document."""
    doc = cloudconfig.entity_document(item["entity"])
    if doc is None:
        line = item["entity"].strip()
        return item["path"], line.split(":", 1)[0], line
    kind = cloudconfig.entity_kind(doc)
    return item.get("path") or kind.path, doc[kind.name], doc


def _entries(path):
    """The lines of an entries file and its mode (a new shadow file: for root only)."""
    try:
        lines = read(path).splitlines()
        return lines, os.stat(rootpath.resolve(ROOT, str(path), follow_last=True)).st_mode & 0o7777
    except FileNotFoundError:
        return [], 0o600 if "shadow" in os.path.basename(path) else 0o644


def _entity_line(doc, old, lines):
    """The line of an entity document, as mudler/entities writes it; `old`: the fields of
    the entry it replaces, `lines`: the file's entries."""
    kind, entry = doc["kind"], dict(doc)
    if kind == "group" and old:   # merged into the group
        users = old[3].split(",") + doc.get("users", "").split(",")
        entry["users"] = ",".join(dict.fromkeys(u for u in users if u))
        entry["password"] = doc.get("password") or old[1]
        entry.setdefault("gid", old[2])
    id_key = {"user": "uid", "group": "gid"}.get(kind)
    if id_key and entry.get(id_key) == -1:   # an entry keeps its id (entities would pick another)
        entry[id_key] = old[2] if old and old[2].isdigit() else _free_id(lines)
    if kind == "user":
        entry.setdefault("uid", 0)
        entry["gid"] = _owner(doc["group"], "group") if doc.get("group") else doc.get("gid", 0)
        entry["info"] = doc.get("info") or "Created by entities"
    elif kind == "shadow":
        if doc.get("last_changed") == "now":   # days since 1970; never 0 (change at login)
            entry["last_changed"] = max(1, int(time.time()) // 86400)
        entry["password"] = _shadow_password(doc.get("password", ""))
    fields = [key for key in cloudconfig.ENTITY_KINDS[kind].shape.fields
              if key not in ("kind", "group")]
    return ":".join(str(entry.get(key, "")) for key in fields)


def _free_id(lines):
    """The highest id of mudler/entities' dynamic range (ENTITY_DYNAMIC_RANGE=MIN-MAX, else
    500-999) that no entry of `lines` has."""
    low, high = 500, 999
    try:
        first, last = (int(n) for n in os.environ.get("ENTITY_DYNAMIC_RANGE", "").split("-"))
    except ValueError:
        pass
    else:
        if 0 <= first < last < 65534:
            low, high = first, last
    used = {fields[2] for fields in (line.split(":") for line in lines) if len(fields) > 2}
    for n in range(high, low - 1, -1):
        if str(n) not in used:
            return n
    raise ValueError(f"no free id left in {low}-{high}")


def _shadow_password(password):
    """As mudler/entities writes it: a password in clear is hashed (SHA-512 crypt, a random
    salt); a hash (`$...`), a locked one (`!...`), `*` and none are written as they are."""
    if password in ("", "*") or password.startswith(("$", "!")):
        return password
    alphabet = string.ascii_letters + string.digits
    return sha512_crypt(password, "".join(secrets.choice(alphabet) for _ in range(16)))


CRYPT64 = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def sha512_crypt(password: str, salt: str) -> str:
    """crypt(3)'s SHA-512 hash, `$6$salt$...` (5000 rounds), as U. Drepper's specification
    writes it (Python's own crypt module is gone from Python 3.13)."""
    p, s = password.encode(), salt.encode()[:16]
    b = hashlib.sha512(p + s + p).digest()
    a = hashlib.sha512(p + s + (b * (len(p) // 64 + 1))[:len(p)])
    n = len(p)
    while n:
        a.update(b if n & 1 else p)
        n >>= 1
    c = a.digest()
    p_bytes = (hashlib.sha512(p * len(p)).digest() * (len(p) // 64 + 1))[:len(p)]
    s_bytes = hashlib.sha512(s * (16 + c[0])).digest()[:len(s)]
    for i in range(5000):
        h = hashlib.sha512(p_bytes if i & 1 else c)
        if i % 3:
            h.update(s_bytes)
        if i % 7:
            h.update(p_bytes)
        h.update(c if i & 1 else p_bytes)
        c = h.digest()
    out = []
    for i in range(21):   # the digest's bytes in the specification's order, 3 by 3
        first, second, third = ((i, i + 21, i + 42) * 2)[i % 3:i % 3 + 3]
        out.append(_crypt64((c[first] << 16) | (c[second] << 8) | c[third], 4))
    out.append(_crypt64(c[63], 2))
    return f"$6${s.decode()}${''.join(out)}"


def _crypt64(value, count):
    return "".join(CRYPT64[(value >> 6 * k) & 63] for k in range(count))


def do_systemd_firstboot(settings, env):
    """The keys are cloudconfig.FIRSTBOOT_KEYS: each one option, `--key=value`."""
    root = [] if live() else [f"--root={ROOT}"]
    run(["systemd-firstboot", *root, *(f"--{k.replace('_', '-')}={v}" for k, v in settings.items())])


def do_downloads(items, env):
    for item in items:
        path = rootpath.check_inside(item["path"], ROOT)   # before anything is fetched
        data = fetch(item.get("url"), item.get("timeout", 30), DOWNLOAD_LIMIT)
        write(path, data, _mode(item.get("permissions"), 0o644))


def fetch(url, timeout, limit):
    """The body at an http(s) `url`: at most `limit` bytes, within `timeout` seconds in all
    (each read returns what has come, so a server dripping bytes meets the deadline too)."""
    if not isinstance(url, str) or urllib.parse.urlsplit(url).scheme not in ("http", "https"):
        raise RuntimeError(f"download of {url!r}: only http:// and https:// URLs are fetched")
    if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or timeout <= 0:
        raise RuntimeError(f"download of {url}: timeout must be a positive number of seconds")
    deadline = time.monotonic() + timeout
    chunks, size = [], 0
    try:
        with urllib.request.urlopen(url, timeout=min(timeout, 30)) as r:
            while chunk := r.read1(1 << 16):
                size += len(chunk)
                if size > limit:
                    raise RuntimeError(f"download of {url}: larger than {limit} bytes")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"download of {url}: not finished within {timeout} s")
                chunks.append(chunk)
    except (OSError, ValueError, http.client.HTTPException) as exc:
        raise RuntimeError(f"download of {url} failed: {exc}") from None
    return b"".join(chunks)


HANDLERS = {   # step key -> its action; applied in cloudconfig.APPLIED's order
    "environment": do_environment, "environment_file": do_environment_file,
    "files": do_files, "directories": do_directories, "commands": do_commands,
    "hostname": do_hostname, "dns": do_dns, "sysctl": do_sysctl, "modules": do_modules,
    "systemctl": do_systemctl, "users": do_users, "authorized_keys": do_authorized_keys,
    "systemd_firstboot": do_systemd_firstboot, "downloads": do_downloads,
    "ensure_entities": do_ensure_entities, "delete_entities": do_delete_entities,
}


def run_step(step, key, file=None, line=None):
    """Check a step (at `key`, stages.STAGE[N], of `file`) and run it when it is right."""
    findings = cloudconfig.Findings(file)
    right = cloudconfig.check_step(step, key, line, findings)
    report(findings)
    if not right:
        return False
    where = f"{file}: {key}" if file else key
    if step.get("if") and sh(step["if"]) != 0:
        log(f"{where}: skipped ('if' failed)")
        return True
    env = {}
    ok = True
    # in the table's order (as yip runs its plugins), whatever the order of the step's keys
    for name in APPLIED:
        if name not in step:
            continue
        try:
            HANDLERS[name](step[name], env)
        except Exception as exc:  # noqa: BLE001 - a failing step must not stop the others
            log(f"{where}.{name}: {exc}")
            ok = False
    return ok


def report(findings):
    for finding in findings.found:
        log(str(finding))


def classic(doc):
    """A checked #cloud-config file (cloud-init) as the equivalent boot-stage step."""
    step = {"name": "cloud-config"}
    if doc.get("hostname"):
        step["hostname"] = doc["hostname"]
    if doc.get("write_files"):
        step["files"] = doc["write_files"]
    if doc.get("runcmd"):
        step["commands"] = [c if isinstance(c, str) else shlex.join(c) for c in doc["runcmd"]]
    users = {user["name"]: {k: v for k, v in user.items() if k in cloudconfig.USER.fields}
             for user in doc.get("users") or [] if isinstance(user, dict)}   # not 'default'
    if users:
        step["users"] = users
    if doc.get("ssh_authorized_keys"):
        step["authorized_keys"] = {"root": doc["ssh_authorized_keys"]}
    return step


def run_document(text, where, stage):
    """Run one file's steps of `stage`; a malformed file is reported and runs nothing, a
    malformed step is reported and the others run."""
    try:
        doc = cloudconfig.parse(text, where)
    except CosbuildError as exc:
        log(str(exc))
        return False
    findings = cloudconfig.Findings(where)
    is_classic = cloudconfig.is_classic(text)
    right = cloudconfig.check_document(doc, is_classic, findings)
    report(findings)
    if not right:
        return False
    if is_classic:
        steps, line = ([classic(doc)] if stage == "boot" else []), None
    else:
        steps, line = cloudconfig.steps(doc, stage)
    ok = True
    for n, step in enumerate(steps, 1):
        ok = run_step(step, f"stages.{stage}[{n}]", where, line) and ok
    return ok


def cmdline_files():
    try:
        words = open("/proc/cmdline").read().split()
    except OSError:
        return []
    return [w.split("=", 1)[1] for w in words if w.startswith("cos.setup=")]


def read_uri(uri, root="/"):
    """The text of a cloud-config file, a path of `root` or a URL (a regular file: a FIFO
    would block the boot)."""
    if "://" in uri:
        try:
            return fetch(uri, 30, CONFIG_LIMIT).decode()
        except RuntimeError as exc:
            raise ValueError(str(exc)) from None
    return rootpath.read_bytes(Path(root), os.path.abspath(uri) if root == "/" else uri).decode()


def read_source(path, root="/", where=None):
    """read_uri, or None when it cannot be read (reported as `where`)."""
    try:
        return read_uri(path, root)
    except (OSError, ValueError, CosbuildError) as exc:   # ValueError: not UTF-8
        log(f"{where or path}: cannot read: {exc}")
        return None


def run_stage(stage):
    ok = True
    # (path, the root it is read in, where it is): the folders' files are read inside ROOT
    sources = [(f"{d}/{f}", ROOT, str(real / f)) for d in DIRS
               for real in [rootpath.resolve(ROOT, d, follow_last=True)] if real.is_dir()
               for f in sorted(os.listdir(real)) if f.endswith((".yaml", ".yml"))]
    sources += [(uri, "/", uri) for uri in cmdline_files()]
    for sub in (f"{stage}.before", stage, f"{stage}.after"):
        for path, root, where in sources:
            text = read_source(path, root, where)
            ok = text is not None and run_document(text, where, sub) and ok
    return ok


def main(argv=None):
    parser = argparse.ArgumentParser(prog="cos-setup", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("stage", nargs="?")
    parser.add_argument("--file")
    parser.add_argument("--stage", dest="file_stage", default="default")
    parser.add_argument("--root", default="/")
    args = parser.parse_args(argv)
    global ROOT
    ROOT = args.root
    if args.file:
        text = read_source(args.file)
        ok = text is not None and run_document(text, args.file, args.file_stage)
    elif args.stage:
        ok = run_stage(args.stage)
    else:
        parser.error("name a STAGE or --file")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
