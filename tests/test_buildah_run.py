"""`buildah run`'s one transient failure (the kernel refusing to seal buildah's in-memory
copy, before the step starts) is tried again; a step's own failure never is. A stand-in
buildah on PATH plays both."""

from __future__ import annotations

import pytest

from cosbuild.builds.buildah import RUN_ATTEMPTS, Buildah, BuildahSettings, Container
from cosbuild.errors import CosbuildError
from cosbuild.tools import TaskLog

FAKE = """#!/bin/sh
n=$(cat {calls} 2>/dev/null || echo 0)
echo $((n + 1)) > {calls}
if [ "$n" -lt {transient} ]; then
  echo "Close_Fd sealing memfd copy: Device or resource busy"
  echo "Error: exit status 1"
  exit 1
fi
{rest}
"""


def container(tmp_path, monkeypatch, transient: int, rest: str = "exit 0") -> Container:
    calls = tmp_path / "calls"
    fake = tmp_path / "bin/buildah"
    fake.parent.mkdir()
    fake.write_text(FAKE.format(calls=calls, transient=transient, rest=rest))
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}:/usr/bin:/bin")
    log = TaskLog(tmp_path / "log")
    return Container(Buildah(BuildahSettings()), "cosbuild-1-0", log)


def calls(tmp_path) -> int:
    return int((tmp_path / "calls").read_text())


def test_a_step_that_could_not_start_is_tried_again(tmp_path, monkeypatch):
    box = container(tmp_path, monkeypatch, transient=RUN_ATTEMPTS - 1)
    box.run("true")
    assert calls(tmp_path) == RUN_ATTEMPTS
    assert "attempt 3 of 3" in (tmp_path / "log").read_text()


def test_it_fails_when_every_attempt_could_not_start(tmp_path, monkeypatch):
    box = container(tmp_path, monkeypatch, transient=RUN_ATTEMPTS)
    with pytest.raises(CosbuildError, match="sealing memfd copy"):
        box.run("true")
    assert calls(tmp_path) == RUN_ATTEMPTS


@pytest.mark.parametrize("rest", [
    "exit 7",                                                      # the step failed
    "echo 'step output'; echo 'sealing memfd copy: Device or resource busy'; exit 1",
], ids=["step-failed", "step-printed-the-message"])
def test_a_step_that_ran_and_failed_is_not_tried_again(tmp_path, monkeypatch, rest):
    box = container(tmp_path, monkeypatch, transient=0, rest=rest)
    with pytest.raises(CosbuildError):
        box.run("false")
    assert calls(tmp_path) == 1


@pytest.mark.parametrize("ref", ["--help", "-q", "", "a b", "repo/app:1\n--root=/", "a\x1b[2J"])
@pytest.mark.parametrize("call", ["ensure_image", "pull", "push", "container", "remove_image"])
def test_an_image_reference_is_never_read_as_an_option(tmp_path, monkeypatch, ref, call):
    """References come from specs and repository indexes (`package_cacheimage`): buildah is
    not run with one it could read as an option, and the message shows it escaped."""
    c = container(tmp_path, monkeypatch, transient=0)
    buildah, log = c.buildah, c.log
    with pytest.raises(CosbuildError, match="invalid image reference") as refused:
        if call == "container":
            with buildah.container(ref, log):
                pass
        else:
            getattr(buildah, call)(ref, log)
    assert not (tmp_path / "calls").exists()
    assert "\x1b" not in str(refused.value) and "\n" not in str(refused.value)
