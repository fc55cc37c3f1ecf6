"""Every lesson is also a lecture: slide metadata on the solution notebooks, and reveal.js decks.

The slide type of each cell (``cell.metadata.slideshow.slide_type``, what RISE and nbconvert
read) is not chosen by hand: ``annotate`` derives it from the lesson's structure with the rules
below, so that a lesson of 25-50 cells reads as a lecture of 15-25 slides, and ``check`` (run by
tests/test_slides.py) fails when a notebook's stored types are not what the rules give.

Command line::

    python tools/slides.py annotate [PATH...]     # split cells at headings, set every slide type
    python tools/slides.py check [PATH...]        # per lesson: slide count, metadata up to date?
    python tools/slides.py explain PATH           # each cell's slide type and the rule that chose it
    python tools/slides.py build [--out DIR] [PATH...]   # one reveal.js deck per lesson (make slides)

PATH defaults to every ``solutions/NN_topic/NN_topic.ipynb``.

Before the rules, ``annotate`` splits a markdown cell before every ``#``/``##``/``###`` heading
and every run-in heading (a paragraph opening with a short bold sentence, ``**The recipe.** ...``)
that is not its first line: a slide can only start at a cell, and without the split a new topic
would start on the previous topic's slide. Cells with nbgrader metadata or attachments are never
split.

Then each cell on its own, first match wins:

==========================================================  ==========  ===================================
cell                                                        slide type  why
==========================================================  ==========  ===================================
tagged ``slides:<type>`` (override, see below)              <type>      the author knows better
under a heading that says "Optional" (up to the next        skip        the lecture covers the core; these
heading of the same or a higher level)                                  cells do not even run by default
nbgrader solution or graded cell (exercise, hidden tests,   skip        never show a solution or a hidden
model answer), the Colab badge and set-up cell                          test, nor the set-up plumbing
markdown starting with ``#`` or ``##``                      slide       the title and each section
markdown starting with ``###`` or deeper, or with a         subslide    exercise, question, sub-topic
run-in heading
prose of at most 70 words                                   fragment    one point, revealed on a click
longer prose with a list, display maths or a code block     subslide    something to look at
other longer prose                                          notes       the lecturer's script (speaker view)
code that calls a ``check_*`` function                      skip        a student's check, not the lecture
code that is mostly imports                                 skip        plumbing
code with a figure                                          ``-``       the figure belongs on the slide
code with printed output                                    fragment    a result, shown on a click
any other code (definitions, no output)                     skip        nothing to show
==========================================================  ==========  ===================================

Then page by page (a page is a slide or subslide): a page holds at most one exhibit (a figure,
or a table: at least 6 printed lines) and at most ``PAGE_HEIGHT`` pixels of the deck's 700
(estimated from words, code and output lines, and the stored figures' sizes). A ``-`` or
fragment cell that does not fit starts a subslide if it is an exhibit, or prose introducing the
next shown cell's output; anything else that does not fit goes to the notes. A cell taller than
a page alone (a long derivation, a grid of figures) still gets its page, which scrolls.

**Override.** Tag a cell ``slides:slide``, ``slides:subslide``, ``slides:fragment``,
``slides:continue`` (for ``-``), ``slides:notes`` or ``slides:skip`` (JupyterLab: the property
inspector's "Cell Tags"), then run ``annotate`` again. Do not pick a "Slide Type" in JupyterLab's
menu instead: ``annotate`` would overwrite it, and ``check`` fails until it does.

The decks (``build``, ``make slides``) come from the stored outputs of the solution notebooks:
nothing is executed, so re-run a lesson (``tools/nbtools.py execute``) after editing it. Each deck
is one HTML file with its figures embedded (data URIs); reveal.js (from the sphinx-revealjs
package) and MathJax 2 (from jupyter-server-mathjax) are copied next to the decks, so a deck opens
from the disk without a network. Cells of type skip are removed before the deck is written, so no
solution or hidden test can reach it; code of more than 8 lines shows only its output, and
stderr (warnings, progress bars) and widgets are left out.
"""

from __future__ import annotations

import argparse
import base64
import copy
import re
import shutil
import struct
import sys
from dataclasses import dataclass
from pathlib import Path

import nbformat

COURSE_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = COURSE_ROOT / "solutions"
DEFAULT_DECK_FOLDER = COURSE_ROOT / "slides"
TEMPLATE_FOLDER = Path(__file__).resolve().parent / "slides_template"

OVERRIDE_PREFIX = "slides:"
OVERRIDE_NAMES = {"slide": "slide", "subslide": "subslide", "fragment": "fragment",
                  "continue": "-", "notes": "notes", "skip": "skip"}
SHORT_PROSE_WORDS = 70
SHORT_CODE_LINES = 8  # longer code shows only its output in the static decks
TABLE_LINES = 6
# What fits on a page of a deck (reveal.js at 960 x 700, tools/slides_template): measured on the
# lessons' decks, so that a page the rules fill shows without scrolling.
PAGE_HEIGHT = 580
SLIDE_WIDTH_PX = 900
WORDS_PER_LINE = 16
TEXT_LINE_PX = 30
HEADING_PX = 60
CODE_LINE_PX = 20
CODE_CHARS_PER_LINE = 90
OUTPUT_LINE_PX = 17
BLOCK_GAP_PX = 20
OTHER_IMAGE_PX = 350  # an SVG or JPEG figure, whose size is not read
SLIDE_COUNT_RANGE = (15, 25)
COLAB_GRADE_IDS = {"colab_badge", "colab_setup"}
# The live slideshow (jupyterlab-rise) as the decks look: pages taller than the slide scroll.
RISE_SETTINGS = {"scroll": True, "center": False, "theme": "white", "width": 960, "height": 700, "slideNumber": "c/t"}
# What a lecture needs and a student does not: stripped from the release (tools/release.py).
LECTURE_CELL_METADATA = ("slideshow",)
LECTURE_NOTEBOOK_METADATA = ("rise", "celltoolbar")

HEADING = re.compile(r"^(#{1,6})\s+(\S.*)$")
SPLIT_HEADING = re.compile(r"^#{1,3}\s+\S")
# A paragraph that opens with a short bold sentence, "**The recipe.** ...": a heading in all but name.
RUN_IN_HEADING = re.compile(r"^\*\*(?:[^*\s][^*]{0,80}?)[.?!:]\*\*(?:\s|$)")
FENCE = re.compile(r"^\s*(```|~~~)")
SHOWN_STRUCTURE = re.compile(r"^\s*([*+-]|\d+\.)\s|^\s*\$\$|^\s*(```|~~~)", re.M)  # list, maths, code
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
CHECK_CALL = re.compile(r"\bcheck_\w+\s*\(")


# --- splitting markdown cells at headings -----------------------------------------------------


def split_at_headings(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Split every plain markdown cell before each ``#``-``###`` heading that is not its first
    line (headings inside fenced code do not count). Idempotent."""
    taken_ids = {cell.get("id") for cell in notebook.cells}
    cells = []
    for cell in notebook.cells:
        parts = _heading_parts(cell.source) if _may_split(cell) else [cell.source]
        cells.append(cell)
        if len(parts) > 1:
            cell.source = parts[0]
            cells += [_continuation(cell, part, index, taken_ids) for index, part in enumerate(parts[1:], 1)]
    notebook.cells = cells
    return notebook


def _may_split(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "markdown" and "nbgrader" not in cell.metadata and not cell.get("attachments")


def _heading_parts(source: str) -> list[str]:
    parts: list[list[str]] = [[]]
    in_fence = False
    previous = ""
    for line in source.splitlines():
        if FENCE.match(line):
            in_fence = not in_fence
        starts_topic = SPLIT_HEADING.match(line) or (RUN_IN_HEADING.match(line) and not previous.strip())
        if not in_fence and starts_topic and any(text.strip() for text in parts[-1]):
            parts.append([])
        parts[-1].append(line)
        previous = line
    return ["\n".join(lines).strip("\n") for lines in parts]


def _continuation(cell: nbformat.NotebookNode, source: str, index: int, taken_ids: set) -> nbformat.NotebookNode:
    """A new markdown cell for the ``index``-th part of ``cell``, with a stable id derived from
    the original one (so that splitting the same notebook twice gives the same file)."""
    part = nbformat.v4.new_markdown_cell(source)
    if "id" in cell:
        base, suffix = cell.id[:56], index
        while f"{base}-h{suffix}" in taken_ids:
            suffix += 100
        part.id = f"{base}-h{suffix}"
        taken_ids.add(part.id)
    else:
        del part["id"]  # notebooks older than nbformat 4.5 have no cell ids
    return part


# --- the rules ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Decision:
    slide_type: str
    reason: str
    overridden: bool = False  # by a tag: final, whatever room the page has


def heading(cell: nbformat.NotebookNode) -> tuple[int, str] | None:
    """(level, text) of a markdown cell whose first non-empty line is a heading."""
    if cell.cell_type != "markdown":
        return None
    first = next((line for line in cell.source.splitlines() if line.strip()), "")
    match = HEADING.match(first.strip())
    return (len(match.group(1)), match.group(2)) if match else None


def override(cell: nbformat.NotebookNode) -> str | None:
    """The slide type asked for by a ``slides:<name>`` tag; a ValueError for an unknown name."""
    tags = [tag for tag in cell.metadata.get("tags", []) if tag.startswith(OVERRIDE_PREFIX)]
    if not tags:
        return None
    names = [tag[len(OVERRIDE_PREFIX):] for tag in tags]
    unknown = [name for name in names if name not in OVERRIDE_NAMES]
    if unknown or len(names) > 1:
        raise ValueError(
            f"cell {cell.get('id', '?')}: tags {tags}: use one tag out of "
            + ", ".join(OVERRIDE_PREFIX + name for name in OVERRIDE_NAMES)
        )
    return OVERRIDE_NAMES[names[0]]


def has_figure(cell: nbformat.NotebookNode) -> bool:
    return cell.cell_type == "code" and any(
        key.startswith("image/") for output in cell.get("outputs", []) for key in output.get("data", {})
    )


def shown_outputs(cell: nbformat.NotebookNode) -> list:
    """The outputs a deck shows: not stderr (warnings, progress bars) nor widgets, whose
    JavaScript a static deck does not load."""
    return [
        output for output in cell.get("outputs", []) if cell.cell_type == "code"
        and output.get("name") != "stderr" and WIDGET_VIEW not in output.get("data", {})
    ]


def text_output_lines(cell: nbformat.NotebookNode) -> int:
    """Lines of printed output and of plain-text results (not of figures' text fallbacks)."""
    lines = 0
    for output in shown_outputs(cell):
        if output.output_type == "stream":
            lines += len(output.text.strip("\n").splitlines())
        elif "data" in output and not any(key.startswith("image/") for key in output.data):
            lines += len(str(output.data.get("text/plain", "")).strip("\n").splitlines())
    return lines


def is_exhibit(cell: nbformat.NotebookNode) -> bool:
    """A figure, or a printed table (at least TABLE_LINES lines of output)."""
    return has_figure(cell) or text_output_lines(cell) >= TABLE_LINES


def is_nbgrader_hidden(cell: nbformat.NotebookNode) -> bool:
    """Solutions, graded cells (hidden tests, model answers) and the Colab plumbing."""
    meta = cell.metadata.get("nbgrader", {})
    return bool(meta.get("solution") or meta.get("grade") or meta.get("grade_id") in COLAB_GRADE_IDS)


def word_count(text: str) -> int:
    return len(text.split())


@dataclass
class Page:
    """What the current slide or subslide shows so far (its height in pixels of the deck)."""
    exhibits: int = 0
    height: int = 0

    def add(self, cell: nbformat.NotebookNode) -> None:
        self.exhibits += is_exhibit(cell)
        self.height += shown_height(cell)

    def has_room_for(self, cell: nbformat.NotebookNode) -> bool:
        """One figure or table per page, and no more than fits on the slide."""
        if is_exhibit(cell) and self.exhibits:
            return False
        return self.height + shown_height(cell) <= PAGE_HEIGHT


def shown_height(cell: nbformat.NotebookNode) -> int:
    """About how many pixels of a deck's slide (960 x 700) ``cell`` fills."""
    if cell.cell_type == "markdown":
        return sum(_paragraph_height(p) for p in re.split(r"\n\s*\n", cell.source) if p.strip())
    code_lines = sum(-(-max(len(line), 1) // CODE_CHARS_PER_LINE) for line in cell.source.strip().splitlines())
    code = CODE_LINE_PX * code_lines + BLOCK_GAP_PX if len(cell.source.strip().splitlines()) <= SHORT_CODE_LINES else 0
    output = OUTPUT_LINE_PX * min(text_output_lines(cell), 40)
    return code + output + sum(_image_height(output) for output in shown_outputs(cell))


def _paragraph_height(paragraph: str) -> int:
    if HEADING.match(paragraph.strip()):
        return HEADING_PX
    wrapped = -(-word_count(paragraph) // WORDS_PER_LINE)
    lines = max(len(paragraph.splitlines()), wrapped) if SHOWN_STRUCTURE.search(paragraph) else wrapped
    return TEXT_LINE_PX * lines + BLOCK_GAP_PX


def _image_height(output: nbformat.NotebookNode) -> int:
    """The height a stored PNG is shown at: its own size, scaled down to the slide's width."""
    data = output.get("data", {})
    if not any(key.startswith("image/") for key in data):
        return 0
    header = base64.b64decode(data.get("image/png", "")[:32])  # the PNG signature and IHDR chunk
    if not header.startswith(b"\x89PNG"):
        return OTHER_IMAGE_PX
    width, height = struct.unpack(">II", header[16:24])
    size = output.get("metadata", {}).get("image/png", {})
    width, height = size.get("width", width), size.get("height", height)
    return int(height * min(1.0, SLIDE_WIDTH_PX / width)) + BLOCK_GAP_PX


def decide(notebook: nbformat.NotebookNode) -> list[Decision]:
    """The slide type of every cell of ``notebook`` (as it is: not split), with the rule's reason:
    first each cell on its own, then page by page (what does not fit)."""
    decisions = [_decide_cell(cell, in_optional) for cell, in_optional in _in_optional_section(notebook.cells)]
    page = Page()
    for index, (cell, decision) in enumerate(zip(notebook.cells, decisions)):
        fits = not page.height or page.has_room_for(cell)
        if decision.slide_type in ("-", "fragment") and not decision.overridden and not fits:
            follower = next((c for c, d in zip(notebook.cells[index + 1:], decisions[index + 1:])
                             if d.slide_type not in ("skip", "notes")), None)
            decision = decisions[index] = _without_room(cell, decision, follower)
        if decision.slide_type in ("slide", "subslide"):
            page = Page()
        if decision.slide_type not in ("skip", "notes"):
            page.add(cell)
    return decisions


def _in_optional_section(cells: list) -> list[tuple[nbformat.NotebookNode, bool]]:
    """Each cell, and whether it lies under a heading that says "Optional" (up to the next
    heading of the same or a higher level)."""
    flagged = []
    optional_level = None
    for cell in cells:
        title = heading(cell)
        if title and optional_level is not None and title[0] <= optional_level:
            optional_level = None
        if title and optional_level is None and "optional" in title[1].lower():
            optional_level = title[0]
        flagged.append((cell, optional_level is not None))
    return flagged


def _without_room(cell, decision: Decision, follower) -> Decision:
    """A cell that does not fit on the page: a figure or table, or prose that introduces the
    next cell's result, starts a page; anything else goes to the speaker notes."""
    introduces_result = cell.cell_type == "markdown" and follower is not None and (
        follower.cell_type == "code" and text_output_lines(follower) or has_figure(follower))
    if is_exhibit(cell) or introduces_result:
        return Decision("subslide", f"{decision.reason}, no room on the page")
    return Decision("notes", f"{decision.reason}, no room on the page")


def _decide_cell(cell: nbformat.NotebookNode, in_optional_section: bool) -> Decision:
    chosen = override(cell)
    if chosen:
        return Decision(chosen, f"tag {OVERRIDE_PREFIX}{_override_name(chosen)}", overridden=True)
    if in_optional_section:
        return Decision("skip", "optional section")
    if is_nbgrader_hidden(cell):
        return Decision("skip", "nbgrader solution, graded cell or Colab set-up")
    if cell.cell_type == "markdown":
        return _decide_markdown(cell, heading(cell))
    if cell.cell_type == "code":
        return _decide_code(cell)
    return Decision("skip", f"{cell.cell_type} cell")


def _override_name(slide_type: str) -> str:
    return next(name for name, value in OVERRIDE_NAMES.items() if value == slide_type)


def _decide_markdown(cell, title) -> Decision:
    if title:
        level, _ = title
        if level <= 2:
            return Decision("slide", f"heading level {level}")
        return Decision("subslide", f"heading level {level}")
    if RUN_IN_HEADING.match(cell.source.lstrip()):
        return Decision("subslide", "run-in heading (**Bold sentence.**)")
    words = word_count(cell.source)
    if words <= SHORT_PROSE_WORDS:
        return Decision("fragment", f"short prose ({words} words)")
    if SHOWN_STRUCTURE.search(cell.source):
        return Decision("subslide", f"long prose with a list, maths or code ({words} words)")
    return Decision("notes", f"long prose ({words} words)")


def _decide_code(cell) -> Decision:
    if CHECK_CALL.search(cell.source):
        return Decision("skip", "calls a check")
    if is_imports(cell):
        return Decision("skip", "imports")
    if has_figure(cell):
        return Decision("-", "figure")
    if text_output_lines(cell):
        return Decision("fragment", f"code with output ({text_output_lines(cell)} lines)")
    return Decision("skip", "code without output")


def is_imports(cell: nbformat.NotebookNode) -> bool:
    statements = [line for line in cell.source.splitlines() if line.strip() and not line.lstrip().startswith("#")]
    imports = [line for line in statements if re.match(r"(import|from)\s", line)]
    return bool(statements) and len(imports) * 2 >= len(statements)


def slide_types(notebook: nbformat.NotebookNode) -> list[str]:
    return [decision.slide_type for decision in decide(notebook)]


# --- annotating and checking -------------------------------------------------------------------


def annotate(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Split at headings, store every cell's slide type and the live slideshow's settings
    (an author's own ``rise`` settings win). Idempotent."""
    split_at_headings(notebook)
    for cell, slide_type in zip(notebook.cells, slide_types(notebook)):
        cell.metadata["slideshow"] = nbformat.from_dict({**cell.metadata.get("slideshow", {}), "slide_type": slide_type})
    notebook.metadata["rise"] = nbformat.from_dict({**RISE_SETTINGS, **notebook.metadata.get("rise", {})})
    return notebook


def stored_slide_types(notebook: nbformat.NotebookNode) -> list[str | None]:
    return [cell.metadata.get("slideshow", {}).get("slide_type") for cell in notebook.cells]


def slide_count(notebook: nbformat.NotebookNode) -> int:
    """Pages of the deck: slides and subslides among the stored slide types."""
    return sum(slide_type in ("slide", "subslide") for slide_type in stored_slide_types(notebook))


def is_annotated(notebook: nbformat.NotebookNode) -> bool:
    """True when ``annotate`` would change neither the cells nor their slide types."""
    fresh = annotate(copy.deepcopy(notebook))
    return (
        [cell.source for cell in fresh.cells] == [cell.source for cell in notebook.cells]
        and stored_slide_types(fresh) == stored_slide_types(notebook)
        and fresh.metadata.rise == notebook.metadata.get("rise")
    )


@dataclass(frozen=True)
class LessonReport:
    lesson: str
    slides: int  # as the rules give them
    up_to_date: bool

    @property
    def in_range(self) -> bool:
        low, high = SLIDE_COUNT_RANGE
        return low <= self.slides <= high

    def __str__(self) -> str:
        low, high = SLIDE_COUNT_RANGE
        count = f"{self.slides} slides" + ("" if self.in_range else f" (outside {low}-{high})")
        state = "metadata up to date" if self.up_to_date else "NOT ANNOTATED: run `python tools/slides.py annotate`"
        return f"{self.lesson}: {count}, {state}"


def report(path: Path) -> LessonReport:
    notebook = read(path)
    return LessonReport(path.stem, slide_count(annotate(copy.deepcopy(notebook))), is_annotated(notebook))


# --- what a student does not need --------------------------------------------------------------


def strip_lecture_metadata(notebook: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Remove slide types, override tags and the notebook's RISE settings (for the release)."""
    for key in LECTURE_NOTEBOOK_METADATA:
        notebook.metadata.pop(key, None)
    for cell in notebook.cells:
        for key in LECTURE_CELL_METADATA:
            cell.metadata.pop(key, None)
        tags = cell.metadata.get("tags")
        if tags is not None:
            kept = [tag for tag in tags if not tag.startswith(OVERRIDE_PREFIX)]
            if kept:
                cell.metadata["tags"] = kept
            else:
                del cell.metadata["tags"]
    return notebook


# --- decks -------------------------------------------------------------------------------------


class NoStoredOutputs(RuntimeError):
    pass


def deck_notebook(notebook: nbformat.NotebookNode, name: str) -> nbformat.NotebookNode:
    """What a deck shows: the annotated lesson without its skipped cells, the code of long cells
    (their output stays) and widget state.

    The slide types come from the rules, not from the stored metadata, so that a deck is right
    even before ``annotate`` was run (``check`` reports that separately)."""
    if not any(cell.get("outputs") for cell in notebook.cells if cell.cell_type == "code"):
        raise NoStoredOutputs(
            f"{name} has no stored outputs, so its deck would have no figures: run "
            f"`.venv/bin/python tools/nbtools.py execute solutions/{name}/{name}.ipynb` first."
        )
    deck = annotate(copy.deepcopy(notebook))
    deck.cells = [cell for cell in deck.cells if cell.metadata.slideshow.slide_type != "skip"]
    for cell in (cell for cell in deck.cells if cell.cell_type == "code"):
        cell.outputs = shown_outputs(cell)
        if len(cell.source.strip().splitlines()) > SHORT_CODE_LINES:
            cell.metadata["transient"] = {"remove_source": True}  # its output speaks for it
    deck.metadata.pop("widgets", None)  # widget views need their JavaScript from a CDN
    return deck


def reveal_js_folder() -> Path:
    """reveal.js's dist/ and plugin/ folders as the sphinx-revealjs package ships them."""
    try:
        import sphinx_revealjs
    except ImportError as error:
        raise RuntimeError("reveal.js comes from the sphinx-revealjs package: run `make setup`") from error
    found = sorted(Path(sphinx_revealjs.__file__).parent.rglob("dist/reveal.js"))
    if not found:
        raise RuntimeError(f"no dist/reveal.js inside {Path(sphinx_revealjs.__file__).parent}")
    return found[0].parent.parent


def mathjax_folder() -> Path:
    """MathJax 2 (MathJax.js, configs, fonts) as the jupyter-server-mathjax package ships it."""
    try:
        import jupyter_server_mathjax
    except ImportError as error:
        raise RuntimeError("MathJax comes from the jupyter-server-mathjax package: run `make setup`") from error
    return Path(jupyter_server_mathjax.__file__).parent / "static"


def copy_assets(out: Path) -> None:
    """reveal.js and MathJax next to the decks, which load them by relative paths."""
    reveal = reveal_js_folder()
    for part in ("dist", "plugin"):
        _replace_tree(reveal / part, out / "reveal.js" / part)
    shutil.copy(reveal / "LICENSE", out / "reveal.js" / "LICENSE")
    _replace_tree(mathjax_folder(), out / "mathjax")


def _replace_tree(source: Path, target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("*.map", "*.esm.js", "__pycache__"))


def build_deck(path: Path, out: Path) -> Path:
    """Write ``out/<lesson>.slides.html`` from the stored outputs of ``path``; return its path.
    Needs the assets in ``out`` (``copy_assets``)."""
    from nbconvert import SlidesExporter

    exporter = SlidesExporter(
        extra_template_basedirs=[str(TEMPLATE_FOLDER.parent)],
        template_name=TEMPLATE_FOLDER.name,
        reveal_url_prefix="reveal.js",
        reveal_theme="white",
        reveal_scroll=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
        mathjax_url="mathjax/MathJax.js?config=TeX-AMS-MML_HTMLorMML-full,Safe",
    )
    body, _ = exporter.from_notebook_node(deck_notebook(read(path), path.stem), resources={"metadata": {"name": path.stem}})
    target = out / f"{path.stem}.slides.html"
    target.write_text(body, encoding="utf-8")
    return target


def build(paths: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    copy_assets(out)
    return [build_deck(path, out) for path in paths]


# --- command line ------------------------------------------------------------------------------


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def solution_notebooks() -> list[Path]:
    """Every ``solutions/NN_topic/NN_topic.ipynb``, in course order."""
    return sorted(p for p in SOLUTIONS.glob("*/*.ipynb") if p.stem == p.parent.name)


def annotate_file(path: Path) -> bool:
    """Annotate ``path`` in place; True when the file changed."""
    notebook = read(path)
    if is_annotated(notebook):
        return False
    annotate(notebook)
    nbformat.validate(notebook)
    nbformat.write(notebook, str(path))
    return True


def explain(path: Path) -> str:
    notebook = split_at_headings(read(path))
    lines = []
    for index, (cell, decision) in enumerate(zip(notebook.cells, decide(notebook))):
        first_line = next((line for line in cell.source.splitlines() if line.strip()), "")[:60]
        lines.append(f"{index:3} {decision.slide_type:9} {decision.reason:42} | {first_line}")
    return "\n".join(lines)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slides.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["annotate", "check", "explain", "build"])
    parser.add_argument("paths", nargs="*", type=Path)
    parser.add_argument("--out", type=Path, default=DEFAULT_DECK_FOLDER, help="where build writes the decks")
    args = parser.parse_intermixed_args(argv)
    paths = args.paths or solution_notebooks()
    try:
        return _run(args.command, paths, args.out)
    except (RuntimeError, ValueError, OSError) as error:
        print(f"slides.py {args.command}: {error}", file=sys.stderr)
        return 1


def _run(command: str, paths: list[Path], out: Path) -> int:
    if command == "annotate":
        for path in paths:
            print(("annotated " if annotate_file(path) else "unchanged ") + str(path))
        return 0
    if command == "check":
        reports = [report(path) for path in paths]
        print("\n".join(map(str, reports)))
        return 0 if all(r.up_to_date and r.in_range for r in reports) else 1
    if command == "explain":
        print("\n\n".join(f"{path}\n{explain(path)}" for path in paths))
        return 0
    for deck in build(paths, out):
        print("wrote", deck.relative_to(Path.cwd()) if deck.is_relative_to(Path.cwd()) else deck)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
