"""The docs: the README stays a newcomer's page, and docs/ builds with MkDocs without a broken link."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent


def test_mkdocs_builds_strictly(tmp_path):
    """--strict: a link to a page or a #heading that is not there fails the build (mkdocs.yml's validation)."""
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for page in (REPO / "docs").glob("*.md"):
        # Python-Markdown ends a list at a block indented by two spaces: what follows reads as one paragraph
        # of "- **...**" text. Every bullet must come out as a list item.
        html = tmp_path / "site" / ("index.html" if page.stem == "index" else f"{page.stem}/index.html")
        bullets = sum(line.startswith("- ") for line in page.read_text().splitlines())
        assert html.read_text().count("<li>") >= bullets, page.name


def test_every_page_is_in_the_nav():
    """MkDocs only mentions a page left out of the nav (INFO, which --strict lets through)."""
    nav = yaml.safe_load((REPO / "mkdocs.yml").read_text())["nav"]
    listed = {page for entry in nav for page in entry.values()}
    assert listed == {page.name for page in (REPO / "docs").glob("*.md")}


def test_the_readme_links_lead_somewhere():
    readme = (REPO / "README.md").read_text()
    local = [target for target in re.findall(r"\]\(([^)#]+)", readme) if "://" not in target]
    assert local and all((REPO / target).exists() for target in local), local


def test_the_readme_stays_short():
    """The reference goes into docs/: the README is what it is, the set-up commands, the verbs, links."""
    assert len((REPO / "README.md").read_text().splitlines()) <= 100


def test_no_table_is_broken_by_a_blank_line():
    """A blank line between a table's rows ends the table: the rows after it read as a paragraph."""
    broken = [
        f"{page.name}:{number + 2}"
        for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
        for number, (row, gap, following) in enumerate(zip(*(page.read_text().splitlines()[i:] for i in range(3))))
        if row.startswith("|") and not gap.strip() and following.startswith("|")
    ]
    assert not broken, broken
