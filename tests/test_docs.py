"""The README as a front door and the guide in docs/: the README is short and starts with
the two commands, links every page; the generated pages are current; every relative link
resolves to a file and heading; nothing of the README before the split was lost."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
PAGES = sorted(DOCS.glob("*.md"))
GENERATED = {"keywords": "keywords.md", "settings": "settings.md", "cli": "cli.md"}
# the sections of the README when it held the whole reference (before the guide was split
# out of it): each is a section of the guide now
SECTIONS_BEFORE = (
    "Layout", "The sample tree", "doit tasks", "Builds", "Repositories",
    "Building on a remote repository", "Shared build cache", "CI runners",
    "Docker repositories", "Signed repositories", "The live ISO",
    "Installed disks and upgrades", "Boot assessment", "Deploy formats", "Signed upgrades",
    "Secure Boot", "Boot it", "The derivative runtime", "Spec format",
    "Templating: Helm (luet's) and Jinja2", "Versions", "Build hash",
    "Security: what each input may and may not do", "Tests", "Benchmarks")


def headings(text: str) -> list[str]:
    """The Markdown headings of `text`, outside code blocks."""
    found, fenced = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        elif not fenced and (m := re.match(r"^#{1,6} (.*)$", line)):
            found.append(m.group(1).strip())
    return found


def anchors(text: str) -> set[str]:
    """GitHub's anchors of the headings: lower case, punctuation but '-' and '_' dropped,
    spaces made '-', a repeated one numbered."""
    seen: dict[str, int] = {}
    for title in headings(text):
        slug = re.sub(r"[^\w\- ]", "", title.lower()).replace(" ", "-")
        seen[slug] = seen.get(slug, -1) + 1
        yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


def links(text: str) -> list[str]:
    """The targets of the Markdown links of `text`, outside code blocks and spans."""
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    text = re.sub(r"`[^`\n]*`", "", text)
    return re.findall(r"\]\(([^)\s]+)\)", text)


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 150
    assert text.splitlines()[2:6] == [
        "```sh",
        "make iso     # installs what is missing, then builds the sample ISO (build/sampleOS-0.live.iso)",
        "make test    # installs what is missing, then runs the test suite (what CI runs)",
        "```"]
    linked = {Path(t.split("#")[0]).name for t in links(text) if t.startswith("docs/")}
    assert linked == {p.name for p in PAGES}


@pytest.mark.parametrize("page", sorted(GENERATED))
def test_a_generated_page_is_current(page):
    proc = subprocess.run([sys.executable, "-m", "cosbuild.cli", "docs", page], cwd=REPO,
                          capture_output=True, text=True, check=True)
    assert proc.stdout.rstrip("\n") == (DOCS / GENERATED[page]).read_text().rstrip("\n"), \
        f"docs/{GENERATED[page]} is stale: run `cosbuild docs {page} > docs/{GENERATED[page]}`"


def test_the_generated_pages_follow_their_tables():
    from cosbuild import settings
    from cosbuild.cli import DOIT_COMMANDS, _parser
    text = (DOCS / "settings.md").read_text()
    assert all(f"`{s.env}`" in text for s in settings.SETTINGS)
    cli = (DOCS / "cli.md").read_text()
    commands = next(a for a in _parser()._actions if hasattr(a, "choices") and a.choices
                    and "validate" in a.choices)
    assert [name for name in commands.choices
            if name not in DOIT_COMMANDS and f"## cosbuild {name}\n" not in cli] == []
    assert "## cosbuild " + "|".join(DOIT_COMMANDS) in cli


@pytest.mark.parametrize("page", [REPO / "README.md", *PAGES], ids=lambda p: p.name)
def test_every_relative_link_resolves_to_a_file_and_heading(page):
    for target in links(page.read_text()):
        if re.match(r"^[a-z]+:", target):   # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        dest = (page.parent / path).resolve() if path else page
        assert dest.is_file(), f"{page.name}: {target}: no such file"
        if anchor:
            assert anchor in set(anchors(dest.read_text())), f"{page.name}: {target}: no such heading"


def test_nothing_of_the_old_readme_is_lost():
    held = {title for page in PAGES for title in headings(page.read_text())}
    assert [s for s in SECTIONS_BEFORE if s not in held] == []
    # the reference the README held is generated now: every setting and command
    assert "--signing-expiry" in (DOCS / "settings.md").read_text()
    assert "cosbuild serve-repo" in (DOCS / "cli.md").read_text()


def test_the_anchor_rule():
    assert list(anchors("# A b\n## Templating: Helm (luet's) and Jinja2\n## A b\n```\n# x\n```\n"
                        "## --tree VALUE\n")) == [
        "a-b", "templating-helm-luets-and-jinja2", "a-b-1", "--tree-value"]
