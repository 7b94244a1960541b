"""Progress lines: whole lines, one write each, whatever runs in parallel."""

from __future__ import annotations

import re
import sys
import threading

from cosbuild import tasks, terminal, tools
from cosbuild.tools import TaskLog


class Writes:
    """A stdout that records each write() call, slowly: a second writer that did not wait
    for the first would land between two of them."""

    def __init__(self):
        self.calls: list[str] = []

    def write(self, text: str) -> int:
        self.calls.append(text)
        threading.Event().wait(0.0005)
        return len(text)

    def flush(self) -> None:
        pass


def test_lines_of_parallel_writers_are_whole(monkeypatch):
    out = Writes()
    monkeypatch.setattr(sys, "stdout", out)

    def task(n: int) -> None:
        for i in range(40):
            terminal.say(f"[{n}/8] package-{n}: line {i}")

    threads = [threading.Thread(target=task, args=(n,)) for n in range(1, 9)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(out.calls) == 8 * 40
    assert all(re.fullmatch(r"\[\d/8\] package-\d: line \d+\n", c) for c in out.calls), out.calls[:5]


def test_an_image_step_says_when_it_starts_and_how_long_it_took(capsys):
    def make_squashfs():
        print("working")

    tasks._step("iso", make_squashfs)
    assert capsys.readouterr().out.splitlines() == [
        "iso: make squashfs", "working", "iso: make squashfs done in 0.0s"]


def test_a_long_step_says_it_still_runs_and_for_how_long(capsys):
    with terminal.heartbeat(lambda t: f"squashfs running for {terminal.duration(t)}",
                            every=0.05):
        threading.Event().wait(0.18)
    lines = capsys.readouterr().out.splitlines()
    assert 2 <= len(lines) <= 4, lines
    assert all(re.fullmatch(r"squashfs running for 0\.\ds", line) for line in lines), lines
    threading.Event().wait(0.1)   # and it stopped with the block
    assert capsys.readouterr().out == ""


def test_a_build_line_names_the_command_that_runs(tmp_path):
    with TaskLog(tmp_path / "log") as log:
        assert tasks._running("[2/9] system/os", 95, log, "system/os@1") == \
            "[2/9] system/os: running for 1m35s"
        log.doing = "system/os@1: step 3 (dracut --force " + "x" * 100 + ")"
        line = tasks._running("[2/9] system/os", 5, log, "system/os@1")
        assert line.startswith("[2/9] system/os: running for 5.0s (step 3 (dracut --force xx")
        assert line.endswith("...)") and len(line) < 130


def test_tools_run_says_what_runs_while_it_runs(tmp_path):
    with TaskLog(tmp_path / "log") as log:
        seen = []
        timer = threading.Timer(0.2, lambda: seen.append(log.doing))
        timer.start()
        tools.run(["sleep", "0.5"], log=log, what="bootstrap Debian bookworm")
        assert seen == ["bootstrap Debian bookworm"] and log.doing == ""
