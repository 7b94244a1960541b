"""Generate a synthetic tree of N packages (default 500) for the no-op benchmark.

Each package has a definition, a templated build.yaml (Jinja2 or Helm) and two payload files; each depends
(through `retrieve`) on up to three earlier packages, so the graph is a realistic DAG. The
packages need no container (no image source, no steps): the benchmark measures cosbuild's
own no-op check, not buildah.
"""

from __future__ import annotations

import random
import sys
from pathlib import Path


# the same build.yaml in each engine: a shared template, values with a default, a package key
TEMPLATES = {
    "jinja2": "{% macro greet(who) %}echo hello {{ who }}{% endmacro %}\n",
    "helm": '{{- define "greet" }}echo hello {{ . }}{{ end }}\n',
}
BUILD = {
    "jinja2": ("env:\n  - SUITE={{ values.suite }}\n  - LEVEL={{ values.level | default(1) }}\n"
               "  - HELLO={{ greet(values.name) }}\n"
               "includes:\n  - ^/usr/share/{{ values.name }}/\n"),
    "helm": ("env:\n  - SUITE={{ .Values.suite }}\n  - LEVEL={{ .Values.level | default 1 }}\n"
             '  - HELLO={{ include "greet" .Values.name }}\n'
             "includes:\n  - ^/usr/share/{{ .Values.name }}/\n"),
}


def generate(root: Path, count: int = 500, seed: int = 1, engine: str = "jinja2") -> None:
    rng = random.Random(seed)
    (root / "tree/templates").mkdir(parents=True, exist_ok=True)
    (root / "tree/templates/macros.yaml").write_text(TEMPLATES[engine])
    (root / "values").mkdir(exist_ok=True)
    (root / "values/bookworm.yaml").write_text("suite: bookworm\nlevel: 3\n")
    for i in range(count):
        folder = root / "tree" / f"cat{i % 10}" / f"pkg{i}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "definition.yaml").write_text(
            f"name: pkg{i}\ncategory: cat{i % 10}\nversion: '1.{i}.0+{i % 3}'\n"
            f"description: synthetic package {i}\nlabels:\n  package.checksum: '{i:08x}'\n")
        deps = sorted(rng.sample(range(i), min(i, 3))) if i else []
        retrieve = "".join(f"  - pkg{d}-cat{d % 10}-*\n" for d in deps)
        (folder / "build.yaml").write_text(
            ("retrieve:\n" + retrieve if retrieve else "")
            + BUILD[engine])
        (folder / "payload.txt").write_text(f"payload {i}\n" * 50)
        (folder / "script.sh").write_text(f"#!/bin/sh\necho {i}\n")


if __name__ == "__main__":
    generate(Path(sys.argv[1]), int(sys.argv[2]) if len(sys.argv) > 2 else 500,
             engine=sys.argv[3] if len(sys.argv) > 3 else "jinja2")
