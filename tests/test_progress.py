"""Progress lines: whole lines, one write each, whatever runs in parallel."""

from __future__ import annotations

import re
import sys
import threading

from cosbuild import tasks, terminal


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
