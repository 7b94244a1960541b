"""doit entry point for this repository: the same tasks as `cosbuild run/list`, and the
sample's `keys`.

Choose values without editing files: `doit values=values/trixie.yaml list`,
`COSBUILD_FLAVOR=trixie doit`, see README.md.
"""

import os
import shutil
import sys
from pathlib import Path

from doit import get_var
from doit.exceptions import TaskFailed

from cosbuild import settings
from cosbuild.tasks import dodo_namespace

# The sample signs its repository with the key set in keys/ (git-ignored, made by `doit keys`,
# README "Signed upgrades"); a doit variable or COSBUILD_SIGNING_KEYS names another folder.
os.environ.setdefault("COSBUILD_SIGNING_KEYS", "keys")
DOIT_VARS = {s.name: get_var(s.name) for s in settings.SETTINGS if get_var(s.name)}
# What the system image ships as /etc/cos/trusted-root.json: a copy of the public root inside
# sampleOS's own folder (git-ignored), because the tree reads only its own regular files and
# the copy makes new or rotated keys change sampleOS's build hash.
TRUSTED_ROOT = Path("tree/system/sampleOS/files/trusted-root.json")

globals().update(dodo_namespace(doit_vars=DOIT_VARS))


def task_keys():
    """The sample's signing keys, made once, and their public root where sampleOS ships it."""
    keys = settings.resolve(doit_vars=DOIT_VARS).signing_keys
    if keys is None:
        return {"actions": [lambda: TaskFailed(
            "signing_keys is empty, but the sample's image trusts only a signed channel: "
            "name a key folder (doit signing_keys=DIR) or leave it at keys")]}
    root = keys / "root.json"

    def installed() -> bool:
        return TRUSTED_ROOT.is_file() and root.is_file() \
            and TRUSTED_ROOT.read_bytes() == root.read_bytes()

    def install() -> None:
        shutil.copyfile(root, TRUSTED_ROOT)
        print(f"keys: {TRUSTED_ROOT} is the public root of {keys}/", flush=True)

    generate = [] if root.is_file() else \
        [[sys.executable, "-m", "cosbuild.cli", "keys", "generate", str(keys)]]
    # doit loads the project, and computes its build hashes, before any task runs: `make`
    # runs this task alone first, so that the builds after it see the copy
    return {"actions": [*generate, install], "uptodate": [installed], "verbosity": 2}
