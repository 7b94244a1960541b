"""The shared build cache: machine B (an empty image store) pulling what machine A built and
pushed, against A's build itself, on the same tree, in one run.

Uses the test suite's small tree (a bootstrapped base, cached by its inputs, and four
packages on it) and a real registry (Debian's docker-registry on 127.0.0.1).
Usage: python bench/shared_cache.py
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
import uuid
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.buildtree import SMALL_TREE  # noqa: E402
from tests.conftest import free_port, registry_server, write_files  # noqa: E402
from tests.test_build_integration import cosbuild  # noqa: E402
from tests.test_shared_cache import empty_image_store, env_for, remove_images  # noqa: E402


def timed_build(root: Path, env: dict) -> float:
    start = time.perf_counter()
    cosbuild(root, "run", "-n", "2", "-P", "thread", "build", env=env)
    return time.perf_counter() - start


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        with registry_server(tmp / "registry", free_port()) as registry:
            cache = f"{registry}/bench-{uuid.uuid4().hex[:8]}/cache"
            a = write_files(tmp / "a", SMALL_TREE)
            try:
                plain = timed_build(a, env_for(image_repository=cache.replace(registry + "/", "")))
                remove_images(cache.replace(registry + "/", "localhost/") + ":")
                shutil.rmtree(a / "build")
                pushed = timed_build(a, env_for(image_repository=cache, push="1",
                                                insecure_registries=registry))
                b = tmp / "b"
                shutil.copytree(a / "tree", b / "tree")
                with empty_image_store(tmp / "store-b") as storage:
                    pulled = timed_build(b, {**env_for(image_repository=cache,
                                                       insecure_registries=registry), **storage})
            finally:
                remove_images(f"{cache}:")
    print("| run | time | ratio |\n|---|---|---|")
    print(f"| A builds (no registry; baseline) | {plain:.1f} s | 1 |")
    print(f"| A builds and pushes | {pushed:.1f} s | {pushed / plain:.2f} |")
    print(f"| B, empty image store, pulls everything | {pulled:.1f} s | {pulled / plain:.2f} |")


if __name__ == "__main__":
    main()
