"""`cosbuild plan`: the build graph as CI jobs (cOS-toolkit built each package as its own
job, sharing images through a registry).

A job per package that builds images, needing the jobs of the packages it builds on; it runs
`cosbuild build CAT/NAME --push --from-cache-only`, so what it builds on comes from the
image repository (a registry) and a job run too early fails naming what is missing. Then
the final jobs: the repository, the ISO and the disk, each `cosbuild --from-cache-only run
TASK`, which pull every image and write the artifacts from them, building nothing. Packages
without images (virtual ones, those of a build repository) get no job: each job makes them
on the way, as a local build does.

The plan is a pure function of the graph and the settings given: jobs are named by package,
sorted, and carry no build hash in the CI formats, so regenerating after a tree change
changes only the jobs whose place in the graph changed. The JSON form (for any other
engine) adds each job's build hashes.
"""

from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from typing import TYPE_CHECKING

from .errors import CosbuildError

if TYPE_CHECKING:   # the command line imports FORMATS for every command: kept light
    from .tree.project import Project

FORMATS = ("json", "github", "gitlab")
# what CI jobs run cosbuild as: `make deps` (the setup) installs it there
COMMAND = ".venv/bin/cosbuild"
SETUP = ("apt-get update -qq", "apt-get install -y -qq make git", "make deps")
CONTAINER = "debian:12"
RUNS_ON = "ubuntu-latest"
# set per job, not for the whole plan: only package jobs push
PER_JOB = ("COSBUILD_PUSH", "COSBUILD_FROM_CACHE_ONLY", "COSBUILD_VERBOSE",
           "COSBUILD_KEEP_FAILED")


@dataclass(frozen=True)
class Job:
    name: str                       # a CI job id: letters, digits, '-' and '_'
    title: str
    argv: tuple[str, ...]           # `cosbuild ...`
    needs: tuple[str, ...] = ()
    packages: tuple[str, ...] = ()  # keys of the packages it builds
    hashes: tuple[str, ...] = ()    # and their build hashes
    outputs: tuple[str, ...] = ()   # files the job leaves (CI artifacts)
    stage: str = "build"            # build (a package), images (the final jobs)


@dataclass(frozen=True)
class Plan:
    env: tuple[tuple[str, str], ...]
    jobs: tuple[Job, ...]
    setup: tuple[str, ...] = SETUP
    runs_on: str = RUNS_ON
    container: str = CONTAINER


def job_id(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "-", text)


def make_plan(project: Project, env: dict[str, str], setup: tuple[str, ...] = SETUP,
              runs_on: str = RUNS_ON, container: str = CONTAINER) -> Plan:
    """The jobs of `project`; `env`: the settings given (settings.given), which every job
    runs with."""
    from .oci.registry import registry_of
    settings = project.settings
    if registry_of(settings.image_repository) is None:
        raise CosbuildError(f"the image repository '{settings.image_repository}' is in local "
                            "storage only, and CI jobs share images through a registry",
                            key="image_repository",
                            hint="set --image-repository / COSBUILD_IMAGE_REPOSITORY to "
                                 "HOST[:PORT]/PATH")
    graph = project.graph
    built = sorted((k for k, p in graph.packages.items() if p.needs_images and not p.remote),
                   key=graph.task_name)
    names: dict[str, str] = {}
    for key in built:   # distinct ids even where two names differ only in '.' and '-'
        name = f"build-{job_id(graph.task_name(key))}"
        while name in names.values():
            name += "_"
        names[key] = name

    def nearest_jobs(key: str) -> set[str]:
        """The jobs of what `key` builds on, through packages that have none."""
        out: set[str] = set()
        for dep in graph.packages[key].build_deps:
            out |= {names[dep]} if dep in names else nearest_jobs(dep)
        return out

    jobs = [Job(names[k], f"build {graph.task_name(k)}",
                ("cosbuild", "build", graph.task_name(k), "--push", "--from-cache-only"),
                tuple(sorted(nearest_jobs(k))), (k,), (graph.packages[k].hash,))
            for k in built]
    needed = {n for j in jobs for n in j.needs}
    last = tuple(sorted(j.name for j in jobs if j.name not in needed))   # enough for all
    jobs += [Job(name, title, ("cosbuild", "--from-cache-only", "run", task), last,
                 outputs=tuple(str(p) for p in paths), stage="images")
             for name, title, task, paths in _final_jobs(project)]
    given = tuple(sorted((k, v) for k, v in env.items() if k not in PER_JOB))
    return Plan(given, tuple(jobs), setup, runs_on, container)


def _final_jobs(project: Project):
    """(name, title, doit task, outputs) of the repository, ISO and disk jobs."""
    from .repos.create import repository_outputs
    settings, graph = project.settings, project.graph
    local = [graph.packages[k] for k in graph.order if not graph.packages[k].remote]
    yield ("repository", "package repository", "repo",
           [*repository_outputs(settings.build_dir, signed=settings.signing_keys is not None),
            *(settings.build_dir / f for p in local for f in (p.artifact_file, p.metadata_file))])
    if settings.iso.is_file():
        from .images.iso import IsoBuilder, load_iso_spec
        iso = IsoBuilder(project, load_iso_spec(settings.iso))
        yield ("iso", "live ISO", "iso",
               [iso.output, iso.output.with_name(iso.output.name + ".sha256"), iso.sbom])
    if settings.disk.is_file():
        from .images import formats
        from .images.disk import DiskBuilder, load_disk_spec
        disk = DiskBuilder(project, load_disk_spec(settings.disk))
        yield ("disk", "installed disk", "disk",
               [*(disk.output(f.name) for f in formats.closure(disk.disk.formats)), disk.sbom])


# --------------------------------------------------------------------------- the formats

def as_json(plan: Plan) -> str:
    return json.dumps({
        "format": "cosbuild-plan/1", "env": dict(plan.env), "setup": list(plan.setup),
        "jobs": [{"name": j.name, "title": j.title, "needs": list(j.needs),
                  "argv": list(j.argv), "run": shlex.join(j.argv),
                  "packages": dict(zip(j.packages, j.hashes)), "outputs": list(j.outputs)}
                 for j in plan.jobs]}, indent=2) + "\n"


def _run(job: Job) -> str:
    return shlex.join((COMMAND, *job.argv[1:]))


def as_github(plan: Plan) -> str:
    """A GitHub Actions workflow: one job per plan job, `needs` as the plan's; the final
    jobs upload what they make."""
    def job(j: Job) -> dict:
        out = {"name": j.title, "runs-on": plan.runs_on}
        if j.needs:
            out["needs"] = list(j.needs)
        # buildah builds in the job's container: it must be privileged
        out["container"] = {"image": plan.container, "options": "--privileged"}
        out["steps"] = [{"uses": "actions/checkout@v4"},
                        *({"run": command} for command in plan.setup),
                        {"name": j.title, "run": _run(j)}]
        if j.outputs:
            out["steps"].append({"uses": "actions/upload-artifact@v4",
                                 "with": {"name": j.name, "path": "\n".join(j.outputs)}})
        return out
    doc = {"name": "cosbuild", "on": {"push": None, "workflow_dispatch": None},
           "env": dict(plan.env), "jobs": {j.name: job(j) for j in plan.jobs}}
    return _yaml(doc)


def as_gitlab(plan: Plan) -> str:
    """A GitLab CI pipeline: package jobs in stage `build`, the final ones in `images`, the
    order within them by `needs` (the runner must allow privileged containers)."""
    def job(j: Job) -> dict:
        out = {"stage": j.stage, "needs": list(j.needs), "script": [_run(j)]}
        if j.outputs:
            out["artifacts"] = {"paths": list(j.outputs)}
        return out
    doc = {"stages": ["build", "images"], "variables": dict(plan.env),
           "default": {"image": plan.container, "before_script": list(plan.setup)},
           **{j.name: job(j) for j in plan.jobs}}
    return _yaml(doc)


def _yaml(doc: dict) -> str:
    import yaml
    return yaml.safe_dump(doc, sort_keys=False, default_flow_style=False, width=100)


RENDER = {"json": as_json, "github": as_github, "gitlab": as_gitlab}
