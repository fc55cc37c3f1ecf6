"""Lessons as lectures (tools/slides.py): the slide-type rules, the stored metadata of every
solution, one deck built end to end, and a release without slide metadata."""

from __future__ import annotations

import base64
import copy
import html
import io
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import nbtools  # noqa: E402
import release  # noqa: E402
import slides  # noqa: E402

LESSONS = slides.solution_notebooks()
ANNOTATE = ".venv/bin/python tools/slides.py annotate"


# --- a small synthetic lesson --------------------------------------------------------------------


def png_output(width: int = 600, height: int = 200) -> nbformat.NotebookNode:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    data = {"image/png": base64.b64encode(buffer.getvalue()).decode(), "text/plain": "<Figure>"}
    return nbformat.v4.new_output("display_data", data=data)


def printed(text: str) -> nbformat.NotebookNode:
    return nbformat.v4.new_output("stream", name="stdout", text=text)


def with_outputs(cell: nbformat.NotebookNode, *outputs: nbformat.NotebookNode) -> nbformat.NotebookNode:
    cell.outputs = list(outputs)
    return cell


def words(count: int, word: str = "word") -> str:
    return " ".join([word] * count)


def tagged(cell: nbformat.NotebookNode, *tags: str) -> nbformat.NotebookNode:
    cell.metadata.setdefault("tags", []).extend(tags)
    return cell


LONG_PROSE = f"LONG_PROSE {words(120)}"
SOLUTION_LINE = "return secret_solution_value * 42"


def synthetic_lesson() -> nbformat.NotebookNode:
    """Every rule once, each cell recognisable by its first word."""
    m, c = nbtools.markdown, nbtools.code
    cells = [
        m("# 99 · A synthetic lesson"),
        m(f"INTRO {words(30)}"),
        c("import torch\nfrom pathlib import Path"),
        m(f"## 1. First section\n\nFIRST_SECTION_TEXT {words(20)}\n\n### A sub-topic inside the same cell\n\nSUB {words(10)}"),
        with_outputs(c("show_figure()"), png_output()),
        m(f"SHORT_PROSE {words(20)}"),
        m(LONG_PROSE),
        m(f"LIST_PROSE {words(80)}\n\n* first point\n* second point"),
        m(f"**The recipe.** RUN_IN {words(30)}"),
        with_outputs(c("print_result()"), printed("0.42\n")),
        c("def DEFINES_ONLY(x):\n    return x"),
        nbtools.solution(f"def exercise(x):\n    ### BEGIN SOLUTION\n    {SOLUTION_LINE}\n    ### END SOLUTION", "exercise"),
        nbtools.tests("check_exercise(exercise)\n### BEGIN HIDDEN TESTS\nassert HIDDEN_TEST\n### END HIDDEN TESTS",
                      "exercise_test", 2),
        with_outputs(c("check_exercise(exercise)  # VISIBLE_CHECK"), printed("✓ check_exercise passed\n")),
        m("## 2. Optional: the full-size run"),
        with_outputs(c("optional_figure()"), png_output()),
        m("## 3. Back to the core"),
        with_outputs(c("first_figure()"), png_output()),
        with_outputs(c("second_figure()"), png_output()),
        tagged(m(f"OVERRIDDEN_SLIDE {words(5)}"), "slides:slide"),
        tagged(with_outputs(c("skipped_figure()"), png_output()), "slides:skip"),
        tagged(m(f"OVERRIDDEN_CONTINUE {words(5)}"), "slides:continue"),
        m("## What next"),
    ]
    return nbtools.new_notebook(cells, "99_synthetic")


def decide(notebook: nbformat.NotebookNode) -> list[tuple[str, slides.Decision]]:
    """(source, decision) of every cell, after the split at headings."""
    split = slides.split_at_headings(copy.deepcopy(notebook))
    return [(cell.source, decision) for cell, decision in zip(split.cells, slides.decide(split))]


@pytest.fixture(scope="module")
def lesson() -> nbformat.NotebookNode:
    return synthetic_lesson()


@pytest.fixture(scope="module")
def decisions(lesson) -> list[tuple[str, slides.Decision]]:
    return decide(lesson)


def slide_type(decisions: list[tuple[str, slides.Decision]], marker: str) -> str:
    """The slide type of the cell whose source starts with ``marker`` (or contains it)."""
    matches = [d for source, d in decisions if source.startswith(marker)] or [
        d for source, d in decisions if marker in source]
    assert matches, f"no cell with {marker!r}"
    return matches[0].slide_type


# --- the rules -----------------------------------------------------------------------------------


def test_title_and_sections_start_slides_and_subheadings_subslides(decisions):
    assert slide_type(decisions, "# 99 · A synthetic lesson") == "slide"
    assert slide_type(decisions, "## 1. First section") == "slide"
    assert slide_type(decisions, "### A sub-topic") == "subslide"
    assert slide_type(decisions, "## What next") == "slide"


def test_a_heading_inside_a_cell_splits_it_so_that_it_can_start_a_slide(lesson):
    split = slides.split_at_headings(copy.deepcopy(lesson))
    assert len(split.cells) == len(lesson.cells) + 1
    first, sub = next((a, b) for a, b in zip(split.cells, split.cells[1:]) if a.source.startswith("## 1."))
    assert "FIRST_SECTION_TEXT" in first.source and "###" not in first.source
    assert sub.source.startswith("### A sub-topic") and sub.id == f"{first.id}-h1"
    nbformat.validate(split)


def test_prose_short_is_a_fragment_long_is_notes_long_with_a_list_is_a_page(decisions):
    assert slide_type(decisions, "SHORT_PROSE") == "fragment"
    assert slide_type(decisions, "LONG_PROSE") == "notes"
    assert slide_type(decisions, "LIST_PROSE") == "subslide"
    assert slide_type(decisions, "**The recipe.**") == "subslide"


def test_solutions_hidden_tests_checks_setup_imports_and_definitions_are_skipped(decisions):
    for marker in ("def exercise", "check_exercise(exercise)\n### BEGIN HIDDEN TESTS", "VISIBLE_CHECK",
                   "import torch", "def DEFINES_ONLY", "[![Open In Colab]", "# Setup: installs"):
        assert slide_type(decisions, marker) == "skip", marker


def test_figures_continue_the_slide_one_per_page_and_printed_results_are_fragments(decisions):
    assert slide_type(decisions, "show_figure()") == "-"
    assert slide_type(decisions, "print_result()") == "fragment"
    assert slide_type(decisions, "first_figure()") == "-"
    assert slide_type(decisions, "second_figure()") == "subslide"


def test_an_optional_section_is_skipped_up_to_the_next_section(decisions):
    assert slide_type(decisions, "## 2. Optional") == "skip"
    assert slide_type(decisions, "optional_figure()") == "skip"
    assert slide_type(decisions, "## 3. Back to the core") == "slide"


def test_a_tag_overrides_the_rules(decisions):
    assert slide_type(decisions, "OVERRIDDEN_SLIDE") == "slide"
    assert slide_type(decisions, "skipped_figure()") == "skip"
    assert slide_type(decisions, "OVERRIDDEN_CONTINUE") == "-"


def test_an_unknown_override_tag_names_the_valid_ones():
    cell = tagged(nbtools.markdown("text"), "slides:title")
    with pytest.raises(ValueError, match="slides:subslide"):
        slides.override(cell)


def test_what_does_not_fit_on_a_page_starts_a_page_or_goes_to_the_notes():
    m, c = nbtools.markdown, nbtools.code
    cells = [
        m(f"## Section\n\n{words(220)}"),                     # most of a page
        m(f"FITS_NOT {words(60)}"),                           # short prose, no room, nothing follows
        m("## Next section"),
        m(f"## Another section\n\n{words(220)}"),
        m(f"INTRODUCES {words(60)}"),                         # short prose that introduces a result
        with_outputs(c("result()"), printed("1\n")),
    ]
    decisions = decide(nbtools.new_notebook(cells, "99_pages"))
    assert slide_type(decisions, "FITS_NOT") == "notes"
    assert slide_type(decisions, "INTRODUCES") == "subslide"
    assert slide_type(decisions, "result()") == "fragment"


def test_annotate_is_idempotent_and_check_sees_a_stale_notebook(lesson):
    annotated = slides.annotate(copy.deepcopy(lesson))
    assert slides.is_annotated(annotated)
    assert slides.annotate(copy.deepcopy(annotated)) == annotated
    assert annotated.metadata.rise == slides.RISE_SETTINGS
    assert all("slide_type" in cell.metadata.slideshow for cell in annotated.cells)
    assert not slides.is_annotated(lesson)

    edited = copy.deepcopy(annotated)
    edited.cells.insert(3, nbtools.markdown("## A new section"))
    assert not slides.is_annotated(edited), "a new cell without its slide type"
    edited = copy.deepcopy(annotated)
    fragment = next(cell for cell in edited.cells if cell.metadata.slideshow.slide_type == "fragment")
    fragment.metadata.slideshow.slide_type = "slide"  # JupyterLab's menu instead of a tag
    assert not slides.is_annotated(edited)


def test_slide_count_counts_slides_and_subslides(lesson):
    annotated = slides.annotate(copy.deepcopy(lesson))
    types = slides.stored_slide_types(annotated)
    assert slides.slide_count(annotated) == types.count("slide") + types.count("subslide") > 0


def test_the_release_loses_slide_metadata_and_override_tags_but_keeps_other_tags(lesson):
    annotated = slides.annotate(copy.deepcopy(lesson))
    stripped = slides.strip_lecture_metadata(copy.deepcopy(annotated))
    assert "rise" not in stripped.metadata
    for cell in stripped.cells:
        assert "slideshow" not in cell.metadata
        assert not any(tag.startswith("slides:") for tag in cell.metadata.get("tags", []))
    assert any("raises-exception" in cell.metadata.get("tags", []) for cell in stripped.cells)
    assert [cell.source for cell in stripped.cells] == [cell.source for cell in annotated.cells]


# --- the course's lessons ------------------------------------------------------------------------


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_stores_the_slide_types_the_rules_give(path):
    assert slides.is_annotated(slides.read(path)), (
        f"{path.stem}: slide metadata out of date: run `{ANNOTATE} {path.relative_to(ROOT)}` "
        "(or `make release`)"
    )


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_every_lesson_is_a_lecture_of_15_to_25_slides(path):
    report = slides.report(path)
    low, high = slides.SLIDE_COUNT_RANGE
    assert report.in_range, (
        f"{path.stem}: the rules give {report.slides} slides, not {low}-{high}: see "
        f"`.venv/bin/python tools/slides.py explain {path.relative_to(ROOT)}` and tag cells slides:<type>"
    )


# --- one deck, end to end ------------------------------------------------------------------------


class DeckParser(HTMLParser):
    """The assets a deck loads, its sections and its visible text."""

    def __init__(self):
        super().__init__()
        self.assets: list[str] = []
        self.sections = 0
        self.images: list[str] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.assets.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.assets.append(attrs["href"])
        if tag == "section":
            self.sections += 1
        if tag == "img":
            self.images.append(attrs.get("src", ""))

    def handle_data(self, data):
        self.text.append(data)


@pytest.fixture(scope="module")
def deck(tmp_path_factory):
    """Lesson 02's deck, built from an annotated copy (as after `annotate`)."""
    folder = tmp_path_factory.mktemp("deck")
    lesson = slides.annotate(slides.read(ROOT / "solutions" / "02_saliency" / "02_saliency.ipynb"))
    source = folder / "02_saliency.ipynb"
    nbformat.write(lesson, str(source))
    out = folder / "slides"
    (path,) = slides.build([source], out)
    parser = DeckParser()
    parser.feed(path.read_text(encoding="utf-8"))
    return lesson, path, parser


def test_the_deck_loads_only_local_files_that_exist(deck):
    _, path, parser = deck
    assert any(a.startswith("reveal.js/dist/reveal.js") for a in parser.assets)
    assert any(a.startswith("mathjax/MathJax.js") for a in parser.assets)
    for asset in parser.assets:
        assert not re.match(r"(https?:)?//", asset), f"loads {asset} from the network"
        assert (path.parent / asset.split("?")[0]).is_file(), f"{asset} is missing next to the deck"
    theme = path.parent / "reveal.js" / "dist" / "theme" / "white.css"
    assert not re.search(r"@import\s+url\(\s*['\"]?https?:", theme.read_text()), "the theme fetches fonts"


def test_the_deck_has_the_lessons_figures_and_one_section_per_page(deck):
    lesson, _, parser = deck
    types = slides.stored_slide_types(lesson)
    shown = [cell for cell, slide_type in zip(lesson.cells, types) if slide_type != "skip"]
    figures = sum(key == "image/png" for cell in shown for output in slides.shown_outputs(cell)
                  for key in output.get("data", {}))
    assert figures >= 5
    assert sum(src.startswith("data:image/png;base64,") for src in parser.images) == figures
    # every slide is a <section> of <section>s (one per page)
    assert parser.sections == 2 * types.count("slide") + types.count("subslide")


def test_the_deck_shows_no_solution_hidden_test_or_check(deck):
    lesson, _, parser = deck
    text = html.unescape("".join(parser.text))
    assert "HIDDEN TESTS" not in text and "BEGIN SOLUTION" not in text
    for cell in lesson.cells:
        meta = cell.metadata.get("nbgrader", {})
        if meta.get("solution") or meta.get("grade"):
            body = [line.strip() for line in cell.source.splitlines() if len(line.strip()) > 25]
            leaked = [line for line in body if line in text]
            assert not leaked, f"{meta['grade_id']} leaked into the deck: {leaked[:2]}"
    assert "check_saliency_map(" not in text


def test_a_lesson_without_stored_outputs_says_to_run_it_first(tmp_path, capsys):
    lesson = slides.read(ROOT / "solutions" / "02_saliency" / "02_saliency.ipynb")
    for cell in lesson.cells:
        if cell.cell_type == "code":
            cell.outputs = []
    path = tmp_path / "02_saliency.ipynb"
    nbformat.write(lesson, str(path))
    assert slides.main(["build", "--out", str(tmp_path / "slides"), str(path)]) == 1
    assert "tools/nbtools.py execute" in capsys.readouterr().err


# --- the release ---------------------------------------------------------------------------------


def test_the_generated_release_carries_no_slide_metadata(tmp_path, monkeypatch):
    course = tmp_path / "course"
    course.mkdir()
    shutil.copy(ROOT / "nbgrader_config.py", course)
    lesson = slides.annotate(slides.read(ROOT / "solutions" / "02_saliency" / "02_saliency.ipynb"))
    tagged(lesson.cells[-1], "slides:notes")
    (course / "solutions" / "02_saliency").mkdir(parents=True)
    nbformat.write(lesson, str(course / "solutions" / "02_saliency" / "02_saliency.ipynb"))
    monkeypatch.setattr(release, "COURSE_ROOT", course)

    (tmp_path / "work").mkdir()
    generated = release.generate("02_saliency", tmp_path / "work")

    student = slides.read(generated / "02_saliency.ipynb")
    assert "rise" not in student.metadata
    for cell in student.cells:
        assert "slideshow" not in cell.metadata
        assert not any(tag.startswith("slides:") for tag in cell.metadata.get("tags", []))
    assert [cell.source for cell in student.cells if "nbgrader" not in cell.metadata] == [
        cell.source for cell in lesson.cells if "nbgrader" not in cell.metadata
    ]
