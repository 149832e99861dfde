"""The README and docs stand on their own: every file they name is in the repository, and the
simulator's synopsis lists every option the command takes."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from traces.simulator.run import add_arguments

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
NAMED_FILE = re.compile(r"`([\w./-]+\.md)`")


def heading_anchors(path: Path) -> set[str]:
    """The anchors GitHub gives the headings of a Markdown file."""
    anchors = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_in_the_docs_leads_to_a_file_and_heading_of_the_repository(doc):
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):
            continue  # a web address
        path, _, anchor = target.partition("#")
        linked = (doc.parent / path).resolve() if path else doc
        assert linked.is_file() and linked.is_relative_to(ROOT), f"{target} in {doc.name} is not in the repository"
        if anchor:
            assert anchor in heading_anchors(linked), f"{target} in {doc.name}: no such heading"


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_document_the_docs_name_is_in_the_repository(doc):
    for name in NAMED_FILE.findall(doc.read_text()):
        assert (doc.parent / name).is_file() or (ROOT / name).is_file(), f"{doc.name} names {name}, which is missing"


def test_the_readme_synopsis_of_simulate_lists_every_option():
    readme = (ROOT / "README.md").read_text()
    synopsis = readme[readme.index("    python manage.py simulate "):].split("\n\n")[0]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    options = {o for action in parser._actions for o in action.option_strings if o.startswith("--") and o != "--help"}
    assert {"--endpoint", "--key", "--canary-version", "--canary-share", "--regression"} <= options
    assert sorted(o for o in options if not re.search(rf"\[{o}[ \]]", synopsis)) == []
