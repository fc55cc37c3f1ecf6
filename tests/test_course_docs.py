"""The course's framing stays true: lesson cards, roadmap, glossary and cheat sheet.

Each lesson opens with a card stamped from ``course.toml`` (objectives, prerequisites, lab time,
the compute time measured from the stored outputs, new terms); the README's roadmap is stamped
from the same file; every link in them, and in docs/, leads somewhere that exists.
"""

from __future__ import annotations

import functools
import re
import sys
from pathlib import Path
from urllib.parse import unquote

import nbformat
import pytest

from saliencylab import attribution

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import nbtools  # noqa: E402

LESSONS = nbtools.lessons()
SOLUTIONS = {path.stem: path for path in nbtools.solution_notebooks()}
LINK = re.compile(r"\]\(([^)\s]+)\)")


@functools.cache
def glossary_terms() -> list[str]:
    text = (ROOT / nbtools.GLOSSARY).read_text()
    return re.findall(r"^### (.+)$", text, flags=re.MULTILINE)


def relative_links(markdown: str) -> list[str]:
    return [link for link in LINK.findall(markdown) if not re.match(r"[a-z]+:", link)]


def assert_links_resolve(markdown: str, base: Path, where: str) -> None:
    anchors = {nbtools.glossary_anchor(term) for term in glossary_terms()}
    for link in relative_links(markdown):
        path, _, anchor = unquote(link).partition("#")
        target = (base / path).resolve() if path else None
        assert target is None or target.exists(), f"{where}: the link {link} leads nowhere"
        if target is not None and target == (ROOT / nbtools.GLOSSARY).resolve() and anchor:
            assert anchor in anchors, f"{where}: the glossary has no term for #{anchor}"
        if target is not None and target.name == "README.md" and anchor:
            headings = re.findall(r"^#+ (.+)$", target.read_text(), flags=re.MULTILINE)
            assert anchor in {h.lower().replace(" ", "-") for h in headings}, f"{where}: README has no #{anchor}"


def test_every_lesson_has_a_card_entry_and_every_entry_a_lesson():
    assert sorted(LESSONS) == sorted(SOLUTIONS)


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_entry_is_complete(name):
    lesson = LESSONS[name]
    assert 3 <= len(lesson["objectives"]) <= 4, f"{name}: give 3-4 learning objectives"
    assert lesson["prerequisites"], f"{name}: name what a student should know before"
    assert 45 <= lesson["lab_minutes"] <= 90, f"{name}: a lab is 45-90 minutes"
    assert all(earlier < name and earlier in LESSONS for earlier in lesson["builds_on"]), lesson["builds_on"]
    missing = set(lesson["terms"]) - set(glossary_terms())
    assert not missing, f"{name} introduces terms the glossary does not define: {sorted(missing)}"


@pytest.mark.parametrize("name", sorted(LESSONS))
def test_lesson_opens_with_its_card_and_runs_within_the_compute_limit(name):
    notebook = nbformat.read(str(SOLUTIONS[name]), as_version=4)
    card = notebook.cells[2]
    assert card.metadata["nbgrader"]["grade_id"] == nbtools.LESSON_CARD_ID
    seconds = nbtools.compute_seconds(notebook)
    assert seconds is not None, f"{name}: its stored outputs have no cell timings; run tools/nbtools.py execute"
    assert seconds <= nbtools.COMPUTE_LIMIT_SECONDS, f"{name}: its cells took {seconds:.0f} s (limit 60 s)"
    assert f"about {nbtools.rounded_up_seconds(seconds)} s" in card.source, f"{name}: run `make release` to restamp"
    for objective in LESSONS[name]["objectives"]:
        assert objective in card.source
    assert_links_resolve(card.source, SOLUTIONS[name].parent, f"{name}'s card")


def test_released_notebooks_carry_the_same_card():
    for name, path in SOLUTIONS.items():
        released = nbformat.read(str(ROOT / "notebooks" / name / f"{name}.ipynb"), as_version=4)
        solution = nbformat.read(str(path), as_version=4)
        assert released.cells[2].source == solution.cells[2].source, f"{name}: run `make release`"


def test_readme_roadmap_is_current_and_lists_every_lesson():
    notebooks = {name: nbformat.read(str(path), as_version=4) for name, path in SOLUTIONS.items()}
    readme = (ROOT / "README.md").read_text()
    assert nbtools.stamp_readme(readme, notebooks) == readme, "README's roadmap is out of date: run `make release`"
    for name in LESSONS:
        assert f"notebooks/{name}/{name}.ipynb" in readme


def test_glossary_is_alphabetical_and_every_term_can_be_linked():
    terms = glossary_terms()
    assert terms == sorted(terms), "keep the glossary in alphabetical order"
    for term in terms:
        nbtools.glossary_anchor(term)  # raises for characters GitHub and JupyterLab anchor differently


def test_glossary_anchor_rejects_characters_that_anchor_differently():
    assert nbtools.glossary_anchor("class-discriminative") == "class-discriminative"
    assert nbtools.glossary_anchor("target class") == "target-class"
    with pytest.raises(ValueError, match="lower-case"):
        nbtools.glossary_anchor("gradient × input")


def test_cheat_sheet_covers_every_method_with_a_lesson_link():
    sheet = (ROOT / nbtools.CHEATSHEET).read_text()
    methods = [name for name in attribution.__all__ if name != "recompute_profile"]
    rows = [line for line in sheet.splitlines() if line.startswith("| ") and "`" in line]
    for method in methods:
        row = next((line for line in rows if f"`{method}`" in line), None)
        assert row is not None, f"the cheat sheet has no row for {method}"
        assert "../notebooks/" in row, f"{method}'s row links no lesson"


@pytest.mark.parametrize("document", ["README.md", nbtools.GLOSSARY, nbtools.CHEATSHEET])
def test_links_in_the_documents_resolve(document):
    path = ROOT / document
    assert_links_resolve(path.read_text(), path.parent, document)


def test_compute_seconds_sums_cell_times_and_needs_every_code_cell_timed():
    notebook = nbformat.v4.new_notebook()
    timed = nbformat.v4.new_code_cell("x = 1")
    timed.metadata["execution"] = {"iopub.execute_input": "2026-01-01T00:00:00.000Z",
                                   "shell.execute_reply": "2026-01-01T00:00:02.500Z"}
    notebook.cells = [nbformat.v4.new_markdown_cell("# t"), timed, nbformat.v4.new_code_cell("")]
    assert nbtools.compute_seconds(notebook) == pytest.approx(2.5)
    assert nbtools.rounded_up_seconds(2.5) == 5 and nbtools.rounded_up_seconds(10.0) == 10
    assert nbtools.rounded_up_seconds(10.1) == 15
    notebook.cells.append(nbformat.v4.new_code_cell("y = 2"))
    assert nbtools.compute_seconds(notebook) is None
