"""Authoring helpers for the course notebooks (nbgrader source in solutions/).

The solution notebooks are the source of truth; these helpers only make the nbgrader
metadata right every time (schema 3, unique grade ids, points on graded cells) and stamp the
cells every lesson shares, from one place, ``course.toml``: the Colab badge and setup cell (the
repository's address) and the lesson card (objectives, prerequisites, lab time, the compute time
measured from the stored outputs, links to the roadmap, glossary and cheat sheet). The README's
roadmap table is stamped from the same file.

Command line::

    python tools/nbtools.py stamp            # refresh badge, card, setup cell and slide types (tools/slides.py)
                                             # in every solution, and the README's roadmap
    python tools/nbtools.py execute PATH...   # run notebooks in place, storing outputs (for nbval)
"""

from __future__ import annotations

import functools
import math
import os
import re
import sys
import tomllib
from datetime import datetime
from pathlib import Path

import nbformat

import slides

COURSE_ROOT = Path(__file__).resolve().parent.parent
SOLUTIONS = COURSE_ROOT / "solutions"

COLAB_SETUP_ID = "colab_setup"
COLAB_BADGE_ID = "colab_badge"
LESSON_CARD_ID = "lesson_card"
STAMPED_IDS = (COLAB_BADGE_ID, LESSON_CARD_ID, COLAB_SETUP_ID)  # in the order they follow the title

COMPUTE_LIMIT_SECONDS = 60  # every lesson's cells together, on 2 CPU cores
GLOSSARY = "docs/glossary.md"
CHEATSHEET = "docs/cheatsheet.md"
ROADMAP = "README.md#course-roadmap"
ROADMAP_START, ROADMAP_END = "<!-- roadmap: stamped by tools/nbtools.py from course.toml -->", "<!-- end of roadmap -->"


@functools.cache
def course_config() -> dict:
    """The course settings of ``course.toml`` (repository address, branch, lessons), read once:
    ``stamp`` asks for them for every cell it writes. Do not modify the returned dict."""
    with open(COURSE_ROOT / "course.toml", "rb") as file:
        return tomllib.load(file)


def _nbgrader(**flags: object) -> dict:
    meta = {"schema_version": 3, "grade": False, "solution": False, "locked": False}
    meta.update(flags)
    return {"nbgrader": meta}


def markdown(text: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """A plain markdown cell."""
    cell = nbformat.v4.new_markdown_cell(text.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def code(source: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """A plain code cell. Tag plots/timings ``nbval-ignore-output``."""
    cell = nbformat.v4.new_code_cell(source.strip("\n"))
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def solution(source: str, grade_id: str) -> nbformat.NotebookNode:
    """An exercise: the student's code goes between ``### BEGIN/END SOLUTION``."""
    cell = code(source)
    cell.metadata.update(_nbgrader(solution=True, grade_id=grade_id))
    return cell


def readonly(source: str, grade_id: str, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """A locked code cell without points, e.g. the visible check of an exercise."""
    cell = code(source, tags)
    cell.metadata.update(_nbgrader(locked=True, grade_id=grade_id))
    return cell


def tests(source: str, grade_id: str, points: float, tags: tuple[str, ...] = ()) -> nbformat.NotebookNode:
    """An autograded, locked test cell worth ``points``; hidden tests go between
    ``### BEGIN/END HIDDEN TESTS``. Its ``grade_id`` must start with the exercise's id +
    ``_test`` so the grading tests know which exercise it belongs to."""
    cell = code(source, tags)
    cell.metadata.update(_nbgrader(grade=True, locked=True, grade_id=grade_id, points=points))
    return tag_raises_exception(cell)


def tag_raises_exception(cell: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """Tag a cell that calls a student's function ``raises-exception``: in the release it raises
    NotImplementedError until the exercise is done, and JupyterLab's "Run All" (and nbval) then
    carry on past it instead of stopping the whole notebook."""
    tags = cell.metadata.setdefault("tags", [])
    if "raises-exception" not in tags:
        tags.append("raises-exception")
    return cell


def written_answer(grade_id: str, points: float, answer: str) -> nbformat.NotebookNode:
    """A manually graded markdown answer; ``answer`` is the model answer kept in the source."""
    cell = nbformat.v4.new_markdown_cell(answer.strip())
    cell.metadata.update(_nbgrader(grade=True, solution=True, grade_id=grade_id, points=points))
    return cell


def colab_badge(assignment: str) -> nbformat.NotebookNode:
    """Markdown cell with the 'Open in Colab' badge of the student notebook."""
    config = course_config()
    url = (
        f"https://colab.research.google.com/github/{config['github']}/blob/{config['branch']}"
        f"/notebooks/{assignment}/{assignment}.ipynb"
    )
    cell = markdown(
        f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"
    )
    cell.metadata.update(_nbgrader(locked=True, grade_id=COLAB_BADGE_ID))
    return cell


def colab_setup() -> nbformat.NotebookNode:
    """First code cell: installs saliencylab where it is missing (Colab), nothing elsewhere.

    ``SALIENCYLAB_PIP_SPEC`` overrides what is installed (a local path or wheel), which is
    how the tests check this cell without the network.
    """
    config = course_config()
    spec = f"saliencylab @ git+https://github.com/{config['github']}@{config['branch']}#subdirectory=lib"
    source = f'''# Setup: installs the course package where it is missing (e.g. on Colab); does nothing elsewhere.
import importlib.util, os, subprocess, sys
if importlib.util.find_spec("saliencylab") is None:
    spec = os.environ.get("SALIENCYLAB_PIP_SPEC", "{spec}")
    print("Installing saliencylab from", spec)
    subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", spec])
    importlib.invalidate_caches()'''
    cell = code(source)
    cell.metadata.update(_nbgrader(locked=True, grade_id=COLAB_SETUP_ID))
    return cell


def _is_stamped(cell: nbformat.NotebookNode, grade_id: str) -> bool:
    return cell.get("metadata", {}).get("nbgrader", {}).get("grade_id") == grade_id


def stamp(notebook: nbformat.NotebookNode, assignment: str) -> nbformat.NotebookNode:
    """Put the current badge, lesson card and setup cell after the title (replacing older ones)
    and tag every test cell ``raises-exception``.

    Idempotent: a stamped cell whose source is already current is kept as it is (its id and
    stored output too), so re-stamping leaves an up-to-date notebook unchanged.
    """
    old = {grade_id: cell for cell in notebook.cells for grade_id in STAMPED_IDS if _is_stamped(cell, grade_id)}
    rest = [cell for cell in notebook.cells if cell not in old.values()]
    for cell in rest:
        if cell.cell_type == "code" and cell.get("metadata", {}).get("nbgrader", {}).get("grade"):
            tag_raises_exception(cell)
    fresh = {COLAB_BADGE_ID: colab_badge(assignment), COLAB_SETUP_ID: colab_setup()}
    if assignment in lessons():
        fresh[LESSON_CARD_ID] = lesson_card(assignment, compute_seconds(notebook))
    stamped = [_current(old.get(grade_id), fresh[grade_id]) for grade_id in STAMPED_IDS if grade_id in fresh]
    title, body = (rest[:1], rest[1:]) if rest and rest[0].cell_type == "markdown" else ([], rest)
    notebook.cells = title + stamped + body
    return notebook


def lessons() -> dict[str, dict]:
    """``course.toml``'s ``[lessons.NN_topic]`` tables, in course order."""
    return dict(sorted(course_config().get("lessons", {}).items()))


def compute_seconds(notebook: nbformat.NotebookNode) -> float | None:
    """Seconds the stored outputs took to compute: the sum over code cells of the kernel's
    execute-input to execute-reply times that nbclient and JupyterLab record. None when some code
    cell has no timing (never run, or run by a tool that does not record it)."""
    total = 0.0
    for cell in notebook.cells:
        if cell.cell_type != "code" or not cell.source.strip():
            continue
        timing = cell.get("metadata", {}).get("execution", {})
        if "iopub.execute_input" not in timing or "shell.execute_reply" not in timing:
            return None
        started, finished = (datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
                             for key in ("iopub.execute_input", "shell.execute_reply"))
        total += (finished - started).total_seconds()
    return total


def rounded_up_seconds(seconds: float) -> int:
    """``seconds`` rounded up to a multiple of 5 (so a re-run a little faster or slower keeps the
    card as it is), at least 5."""
    return max(5, 5 * math.ceil(seconds / 5))


def glossary_anchor(term: str) -> str:
    """The link target of a glossary heading ``### term`` (GitHub and JupyterLab agree on it for
    lower-case words, digits, hyphens and spaces, the only characters terms use)."""
    if not re.fullmatch(r"[a-z0-9\- ]+", term):
        raise ValueError(f"glossary term {term!r}: use lower-case letters, digits, spaces and hyphens only")
    return term.replace(" ", "-")


def _lesson_link(name: str) -> str:
    return f"[{name}](../{name}/{name}.ipynb)"


def lesson_card(assignment: str, seconds: float | None) -> nbformat.NotebookNode:
    """The card after the title: objectives, prerequisites, time, terms and reference links.

    Links are relative, so they work offline in JupyterLab from solutions/ and notebooks/ alike.
    """
    lesson = lessons()[assignment]
    objectives = "\n".join(f"{i}. {objective}" for i, objective in enumerate(lesson["objectives"], start=1))
    before = "; ".join(lesson["prerequisites"])
    builds_on = ", ".join(_lesson_link(name) for name in lesson["builds_on"]) or "nothing: start here"
    compute = (f"running every cell takes about {rounded_up_seconds(seconds)} s on 2 CPU cores (measured when "
               "the outputs were stored)" if seconds is not None else "compute time not measured yet")
    terms = ", ".join(f"[{term}](../../{GLOSSARY}#{glossary_anchor(term)})" for term in lesson["terms"])
    text = f"""**After this lesson you can**

{objectives}

**Before you start:** {before}. Builds on: {builds_on}.

**Time:** about {lesson["lab_minutes"]} minutes as a lab; {compute}.

**New terms:** {terms}. Look up any term in the [glossary](../../{GLOSSARY}), each method's question, cost
and known failure in the [cheat sheet](../../{CHEATSHEET}), and where this lesson sits in the
[course roadmap](../../{ROADMAP})."""
    cell = markdown(text)
    cell.metadata.update(_nbgrader(locked=True, grade_id=LESSON_CARD_ID))
    return cell


def roadmap_table(notebooks: dict[str, nbformat.NotebookNode]) -> str:
    """The README's roadmap: every lesson, its title, what it builds on and its times."""
    rows = ["| # | lesson | builds on | lab | compute |",
            "|---|---|---|---|---|"]
    for name, lesson in lessons().items():
        number, topic = name.split("_", 1)
        builds_on = ", ".join(other.split("_", 1)[0] for other in lesson["builds_on"]) or "–"
        seconds = compute_seconds(notebooks[name]) if name in notebooks else None
        compute = f"~{rounded_up_seconds(seconds)} s" if seconds is not None else "?"
        title = _title(notebooks[name]) if name in notebooks else topic
        rows.append(f"| {number} | [{title}](notebooks/{name}/{name}.ipynb) | {builds_on} | "
                    f"{lesson['lab_minutes']} min | {compute} |")
    return "\n".join(rows)


def _title(notebook: nbformat.NotebookNode) -> str:
    """The lesson's title without its number: ``# 02 · Saliency maps: ...`` -> ``Saliency maps: ...``."""
    first_line = notebook.cells[0].source.splitlines()[0]
    return first_line.lstrip("# ").split(" · ", 1)[-1]


def stamp_readme(readme: str, notebooks: dict[str, nbformat.NotebookNode]) -> str:
    """``readme`` with the text between the roadmap markers replaced by the current table."""
    start, end = readme.find(ROADMAP_START), readme.find(ROADMAP_END)
    if start < 0 or end < start:
        raise ValueError(f"README.md needs the markers {ROADMAP_START} and {ROADMAP_END} around the roadmap table")
    return readme[: start + len(ROADMAP_START)] + "\n" + roadmap_table(notebooks) + "\n" + readme[end:]


def _current(existing: nbformat.NotebookNode | None, fresh: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """``existing`` when it already says what ``fresh`` says, else ``fresh``."""
    if existing is None or existing.source != fresh.source:
        return fresh
    if all(existing.metadata.get(key) == fresh.metadata.get(key) for key in ("nbgrader", "tags")):
        return existing  # only run metadata (execution times) may differ
    return fresh


def new_notebook(cells: list[nbformat.NotebookNode], assignment: str) -> nbformat.NotebookNode:
    """A course notebook: python3 kernel, cells as given, badge + setup stamped after the title."""
    notebook = nbformat.v4.new_notebook()
    notebook.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    notebook.metadata["language_info"] = {"name": "python"}
    notebook.cells = cells
    return stamp(notebook, assignment)


def write(notebook: nbformat.NotebookNode, path: Path) -> None:
    """Validate and write ``notebook``; grade ids must be unique."""
    ids = [c.metadata["nbgrader"]["grade_id"] for c in notebook.cells if "nbgrader" in c.metadata]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"duplicate grade_id(s): {sorted(duplicates)}")
    nbformat.validate(notebook)
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(notebook, str(path))


def execute(path: Path, timeout: int = 600) -> None:
    """Run a notebook in place in its own folder (outputs stored, as nbval compares them).

    The kernel gets one thread, as under `make test`: float sums depend on the thread count,
    and a fooling-image run stopped one step apart with 2 threads (so nbval saw other numbers).
    """
    from nbclient import NotebookClient

    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")  # inherited by the kernel

    notebook = nbformat.read(str(path), as_version=4)
    NotebookClient(
        notebook, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(path.parent)}}
    ).execute()
    nbformat.write(notebook, str(path))


def solution_notebooks() -> list[Path]:
    """Every ``solutions/NN_topic/NN_topic.ipynb``, in course order."""
    return sorted(p for p in SOLUTIONS.glob("*/*.ipynb") if p.stem == p.parent.name)


def main(argv: list[str]) -> int:
    command, *paths = argv or ["help"]
    if command == "stamp":
        notebooks = {}
        for path in solution_notebooks():
            notebook = nbformat.read(str(path), as_version=4)
            notebook = slides.annotate(stamp(notebook, path.stem))
            write(notebook, path)
            notebooks[path.stem] = notebook
            print("stamped", path.relative_to(COURSE_ROOT))
        readme = COURSE_ROOT / "README.md"
        readme.write_text(stamp_readme(readme.read_text(), notebooks))
        print("stamped the roadmap in README.md")
        return 0
    if command == "execute":
        for path in map(Path, paths):
            execute(path)
            print("executed", path)
        return 0
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
