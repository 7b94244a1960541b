"""`cosbuild plan` (cosbuild/plan.py) without building: the jobs and their needs, the
GitHub and GitLab files parsed back, what a tree change changes, and the `from_cache_only`
rule. tests/test_ci_runners.py runs a plan for real."""

from __future__ import annotations

import json

import pytest
import yaml

from cosbuild import settings
from cosbuild.builds.builder import Builder
from cosbuild.errors import CosbuildError
from cosbuild.tree.project import load_project

from .buildtree import SMALL_TREE
from .test_ci_runners import ISO_TREE

CACHE = "registry.example.org:5000/team/cache"
PACKAGE_JOBS = {   # job: the jobs it needs (those of the packages it builds on)
    "build-distro-base": [],
    "build-apps-app": ["build-distro-base"],
    "build-apps-pd": ["build-apps-app", "build-distro-base"],   # requires base, copies from app
    "build-system-fin": ["build-apps-app", "build-distro-base"],   # app's final image closure
    "build-system-os": ["build-distro-base"],
    "build-live-efi": ["build-distro-base"],
    "build-live-bios": ["build-distro-base"],
}
# the jobs no other package job needs: every package is done once these are
LAST = ["build-apps-pd", "build-live-bios", "build-live-efi", "build-system-fin",
        "build-system-os"]


@pytest.fixture
def tree(project, monkeypatch):
    monkeypatch.setenv("COSBUILD_IMAGE_REPOSITORY", CACHE)
    project({**SMALL_TREE, **ISO_TREE})
    return project


def plan(run_cli, fmt: str = "json", *args: str):
    code, out, err = run_cli("plan", "--format", fmt, *args)
    assert code == 0, err
    return json.loads(out) if fmt == "json" else yaml.safe_load(out)


def test_a_job_per_package_with_images_needing_what_it_builds_on(tree, run_cli):
    doc = plan(run_cli)
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert {n: j["needs"] for n, j in jobs.items() if n.startswith("build-")} == PACKAGE_JOBS
    # virtual/meta has no images: the jobs that need it make it on the way
    assert not [j for j in doc["jobs"] if "virtual/meta@1" in j["packages"]]
    assert jobs["build-apps-app"]["argv"] == ["cosbuild", "build", "apps/app", "--push",
                                              "--from-cache-only"]
    assert list(jobs["build-apps-app"]["packages"]) == ["apps/app@1.0"]
    assert len(jobs["build-apps-app"]["packages"]["apps/app@1.0"]) == 64
    # the final jobs fetch what the package jobs pushed, and build nothing
    assert [n for n in jobs if not n.startswith("build-")] == ["repository", "iso"]
    assert jobs["repository"]["argv"] == ["cosbuild", "--from-cache-only", "run", "repo"]
    assert jobs["iso"]["argv"] == ["cosbuild", "--from-cache-only", "run", "iso"]
    assert jobs["iso"]["needs"] == jobs["repository"]["needs"] == LAST
    assert "build/test-live.iso" in jobs["iso"]["outputs"]
    assert {"build/repository.yaml", "build/app-apps-1.0.package.tar.zst",
            "build/meta-virtual-1.metadata.yaml"} <= set(jobs["repository"]["outputs"])
    assert doc["env"] == {"COSBUILD_IMAGE_REPOSITORY": CACHE}


def test_every_job_runs_with_the_settings_given_and_only_package_jobs_push(tree, run_cli,
                                                                          monkeypatch):
    monkeypatch.setenv("COSBUILD_INSECURE_REGISTRIES", "registry.example.org:5000")
    monkeypatch.setenv("COSBUILD_PUSH", "1")
    tree({"values/ci.yaml": "flag: on\n", "disk.yaml": "name: t\nsystem: [system/os]\n"})
    doc = plan(run_cli, "json", "--values", "values/ci.yaml")
    assert doc["env"] == {"COSBUILD_IMAGE_REPOSITORY": CACHE, "COSBUILD_VALUES": "values/ci.yaml",
                          "COSBUILD_INSECURE_REGISTRIES": "registry.example.org:5000"}
    disk = next(j for j in doc["jobs"] if j["name"] == "disk")
    assert disk["argv"][-2:] == ["run", "disk"] and "build/t.raw" in disk["outputs"]
    assert all("--push" not in j["argv"] for j in doc["jobs"] if not j["name"].startswith("build-"))


def test_github_workflow(tree, run_cli):
    doc = plan(run_cli, "github")
    jobs = doc["jobs"]
    assert set(doc) == {"name", "on", "env", "jobs"} and doc["env"] == {"COSBUILD_IMAGE_REPOSITORY": CACHE}
    assert list(jobs) == [*sorted(PACKAGE_JOBS), "repository", "iso"]
    for name, needs in PACKAGE_JOBS.items():
        assert jobs[name].get("needs", []) == needs
        assert jobs[name]["steps"][0] == {"uses": "actions/checkout@v4"}
        assert jobs[name]["steps"][-1]["run"] == \
            f".venv/bin/cosbuild build {name.removeprefix('build-').replace('-', '/', 1)} " \
            "--push --from-cache-only"
        assert jobs[name]["container"]["options"] == "--privileged"
    iso = jobs["iso"]
    assert iso["needs"] == LAST
    assert iso["steps"][-2]["run"] == ".venv/bin/cosbuild --from-cache-only run iso"
    upload = iso["steps"][-1]
    assert upload["uses"] == "actions/upload-artifact@v4"
    assert "build/test-live.iso" in upload["with"]["path"].splitlines()
    # every `needs` names a job of the workflow
    assert all(n in jobs for j in jobs.values() for n in j.get("needs", []))


def test_gitlab_pipeline(tree, run_cli):
    doc = plan(run_cli, "gitlab", "--container", "registry.example.org/ci/debian:12",
               "--setup", "make deps")
    assert doc["stages"] == ["build", "images"]
    assert doc["variables"] == {"COSBUILD_IMAGE_REPOSITORY": CACHE}
    assert doc["default"] == {"image": "registry.example.org/ci/debian:12",
                              "before_script": ["make deps"]}
    jobs = {k: v for k, v in doc.items() if k not in ("stages", "variables", "default")}
    assert {n: j["needs"] for n, j in jobs.items() if j["stage"] == "build"} == PACKAGE_JOBS
    assert jobs["repository"] == {"stage": "images", "needs": LAST,
                                  "script": [".venv/bin/cosbuild --from-cache-only run repo"],
                                  "artifacts": {"paths": jobs["repository"]["artifacts"]["paths"]}}
    assert "build/test-live.iso" in jobs["iso"]["artifacts"]["paths"]


def test_regenerating_after_a_tree_change_changes_only_what_changed(tree, run_cli):
    before = plan(run_cli, "github")["jobs"]
    before_json = {j["name"]: j for j in plan(run_cli)["jobs"]}
    # a step edited: the same CI jobs; in the JSON, the hashes of app and what builds on it
    tree({"tree/app/build.yaml": SMALL_TREE["tree/app/build.yaml"] + "  - echo edited\n"})
    assert plan(run_cli, "github")["jobs"] == before
    after_json = {j["name"]: j for j in plan(run_cli)["jobs"]}
    changed = {n for n in after_json if after_json[n] != before_json[n]}
    assert changed == {"build-apps-app", "build-apps-pd", "build-system-fin"}
    assert all({**after_json[n], "packages": None} == {**before_json[n], "packages": None}
               for n in changed)
    # a package added on top of pd: its job, and the final jobs wait for it instead of pd
    tree({"tree/top/definition.yaml": "name: top\ncategory: apps\nversion: '1'\n",
          "tree/top/build.yaml": "requires:\n  - {name: pd, category: apps}\nsteps:\n  - echo top\n"})
    after = plan(run_cli, "github")["jobs"]
    assert set(after) - set(before) == {"build-apps-top"}
    assert after["build-apps-top"]["needs"] == ["build-apps-pd"]
    assert {n: j for n, j in after.items() if n.startswith("build-") and n != "build-apps-top"} \
        == {n: j for n, j in before.items() if n.startswith("build-")}
    assert after["iso"]["needs"] == sorted({*LAST, "build-apps-top"} - {"build-apps-pd"})


def test_a_plan_needs_a_registry_to_share_images(project, run_cli, monkeypatch):
    monkeypatch.delenv("COSBUILD_IMAGE_REPOSITORY", raising=False)
    project(SMALL_TREE)
    code, out, err = run_cli("plan")
    assert code == 1 and out == ""
    assert "image_repository: the image repository 'luet/cache' is in local storage only" in err


def test_plan_output_file(tree, run_cli):
    code, out, err = run_cli("plan", "--format", "gitlab", "--output", "ci/.gitlab-ci.yml")
    assert code == 0 and out == "" and "jobs in ci/.gitlab-ci.yml" in err
    assert "build-apps-app" in yaml.safe_load(open("ci/.gitlab-ci.yml"))


@pytest.mark.parametrize("on, targets, refused", [
    ("", frozenset(), False),                            # the setting off: anything builds
    ("1", frozenset({"apps/app@1.0"}), False),           # the package `cosbuild build` names
    ("1", frozenset({"apps/app@1.0"}), True),            # what it builds on: refused
    ("1", frozenset(), True),                            # `run iso`: nothing builds
])
def test_from_cache_only_builds_only_the_packages_named(tree, on, targets, refused):
    config = settings.resolve(env={"COSBUILD_FROM_CACHE_ONLY": on,
                                   "COSBUILD_IMAGE_REPOSITORY": CACHE})
    project = load_project(config)
    builder = Builder(project, targets=targets)
    key = "distro/base@1" if refused and targets else "apps/app@1.0"
    pkg = project.graph.packages[key]
    if not refused:
        builder._refuse_unless_target(pkg, builder.tags(pkg))
        return
    with pytest.raises(CosbuildError) as exc:
        builder._refuse_unless_target(pkg, builder.tags(pkg))
    assert exc.value.key == "from_cache_only" and f"{key}: its images {CACHE}:" in exc.value.message
    assert CACHE in exc.value.message and "must run and push first" in exc.value.hint


def test_a_plan_for_arm64_runs_its_jobs_for_arm64(tree, run_cli, monkeypatch):
    """An architecture is a plan of its own: every job runs with COSBUILD_ARCH, its outputs
    are build-arm64's, its ISO job is that of iso-arm64.yaml, and its package jobs build
    other hashes."""
    amd64 = plan(run_cli)
    tree({"iso-arm64.yaml": (tree.path / "iso.yaml").read_text()})
    monkeypatch.setenv("COSBUILD_ARCH", "arm64")
    doc = plan(run_cli)
    assert doc["env"]["COSBUILD_ARCH"] == "arm64"
    jobs = {j["name"]: j for j in doc["jobs"]}
    assert [n for n in jobs if not n.startswith("build-")] == ["repository", "iso"]
    assert all(o.startswith("build-arm64/") for n in ("repository", "iso")
               for o in jobs[n]["outputs"])
    hashes = {j["name"]: j["packages"] for j in amd64["jobs"] if j["packages"]}
    assert hashes.keys() == {n for n, j in jobs.items() if j["packages"]}
    assert all(jobs[n]["packages"] != h for n, h in hashes.items())
