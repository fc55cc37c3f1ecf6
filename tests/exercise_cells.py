"""The exercises of the course notebooks, as the checks' unit tests need them.

A solution cell (from ``solutions/``) or a wrong answer (a solution cell with the edits listed in
``tests/wrong_answers/<assignment>/<exercise>.toml``) is run the way the notebook would run it,
with the names the notebook imported, and the function it defines is handed to the check under
test.

A wrong answer is stored as edits, never as a copy: each edit replaces lines ``old`` of the
current solution cell (markers removed) by lines ``new``, and ``old`` must occur there exactly
once. When a solution changes so that an edit no longer applies, loading that wrong answer fails
with :class:`WrongAnswerError`, naming it: a wrong answer cannot silently test an old solution.
"""

from __future__ import annotations

import linecache
import tomllib
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Callable

import nbformat

ROOT = Path(__file__).resolve().parent.parent
WRONG_ANSWERS = ROOT / "tests" / "wrong_answers"
SOLUTION_MARKERS = ("### BEGIN SOLUTION", "### END SOLUTION")


def notebook_names() -> dict[str, object]:
    """What the notebooks import before their exercise cells (imported here only when needed, so
    that listing or reading wrong answers does not import torch)."""
    import copy

    import torch
    import torch.nn.functional as F
    from torch import nn

    return {"torch": torch, "nn": nn, "F": F, "copy": copy}


def cell_source(assignment: str, grade_id: str) -> str:
    """The source of cell ``grade_id`` in ``solutions/<assignment>/<assignment>.ipynb``."""
    try:
        return _graded_cells(assignment)[grade_id]
    except KeyError:
        raise LookupError(f"no cell {grade_id!r} in {assignment}") from None


@lru_cache(maxsize=None)
def _graded_cells(assignment: str) -> dict[str, str]:
    """grade_id -> source of the cells of a solution notebook (read once per process)."""
    notebook = nbformat.read(str(ROOT / "solutions" / assignment / f"{assignment}.ipynb"), as_version=4)
    cells: dict[str, str] = {}
    for cell in notebook.cells:
        cells.setdefault(cell.metadata.get("nbgrader", {}).get("grade_id"), cell.source)
    return cells


def solution_without_markers(assignment: str, grade_id: str) -> str:
    """The solution cell with its ``### BEGIN/END SOLUTION`` lines removed."""
    return without_markers(cell_source(assignment, grade_id))


def without_markers(source: str) -> str:
    """``source`` without its ``### BEGIN/END SOLUTION`` lines (the last one included, which
    ends a cell without a newline)."""
    return "\n".join(line for line in source.splitlines() if line.strip() not in SOLUTION_MARKERS)


def define(source: str, name: str, filename: str | None = None, prelude: str = "", **names: object) -> Callable:
    """Run ``prelude`` then ``source`` in a fresh namespace and return the function ``name``.

    The namespace holds the notebooks' imports and ``names`` (e.g. another exercise's reference
    function); ``filename`` is what tracebacks show.
    """
    namespace: dict[str, object] = {**notebook_names(), **names}
    if prelude:
        exec(compile(prelude, "<prelude>", "exec"), namespace)
    exec(compile(source, filename or f"<{name}>", "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


class WrongAnswerError(Exception):
    """A wrong answer no longer applies to the solution cell it edits, or is malformed."""


@dataclass(frozen=True)
class WrongAnswer:
    """One plausible mistake in one exercise: its solution cell with ``edits`` applied.

    Listed as ``[name]`` in ``tests/wrong_answers/<assignment>/<exercise>.toml``, with a one-line
    ``mistake`` and one ``[[name.edit]]`` table (``old`` lines, ``new`` lines) per edit.
    """

    assignment: str
    exercise: str
    name: str
    mistake: str  # one line: what the student got wrong
    edits: tuple[tuple[str, str], ...]  # (old lines, new lines) of the solution cell

    @property
    def label(self) -> str:
        return f"{self.assignment}/{self.exercise}/{self.name}"

    @property
    def filename(self) -> str:
        """What tracebacks show for the wrong answer's code."""
        return f"<wrong answer {self.label}>"

    def source(self) -> str:
        """The solution cell (markers removed) with the edits applied, after a comment naming
        the mistake. Raises :class:`WrongAnswerError` when an edit's ``old`` lines do not occur
        exactly once in the current solution cell, or when two edits overlap."""
        lines = solution_without_markers(self.assignment, self.exercise).splitlines()
        spans = []
        for number, (old, new) in enumerate(self.edits, start=1):
            old_lines = old.splitlines()
            found = [i for i in range(len(lines) - len(old_lines) + 1) if lines[i:i + len(old_lines)] == old_lines]
            if len(found) != 1:
                raise WrongAnswerError(
                    f"wrong answer {self.label} ({self.mistake}): the old lines of its edit {number} occur "
                    f"{len(found)} times in the solution cell {self.exercise!r} of "
                    f"solutions/{self.assignment}/{self.assignment}.ipynb, not once; the solution changed: "
                    f"update the edit in {_shown(self.path)}. The old lines:\n{old}"
                )
            spans.append((found[0], found[0] + len(old_lines), new.splitlines(), number))
        spans.sort()
        for (_, end, _, first), (start, _, _, second) in zip(spans, spans[1:]):
            if start < end:
                raise WrongAnswerError(f"wrong answer {self.label}: its edits {first} and {second} overlap")
        for start, end, new_lines, _ in reversed(spans):
            lines[start:end] = new_lines
        return "\n".join([f"# Wrong answer: {self.mistake}", *lines]) + "\n"

    @property
    def path(self) -> Path:
        """The file that lists this wrong answer (with the other ones of its exercise)."""
        return WRONG_ANSWERS / self.assignment / f"{self.exercise}.toml"


def _shown(path: Path) -> str:
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def _parse(path: Path) -> list[WrongAnswer]:
    """The wrong answers listed in ``<assignment>/<exercise>.toml``."""
    assignment, exercise = path.parent.name, path.stem
    with path.open("rb") as file:
        table = tomllib.load(file)
    found = []
    for name, entry in table.items():
        where = f"{_shown(path)}, wrong answer {name!r}"
        if not isinstance(entry, dict) or set(entry) != {"mistake", "edit"}:
            raise WrongAnswerError(f"{where}: needs exactly `mistake = \"...\"` and one or more [[{name}.edit]]")
        mistake, edits = entry["mistake"], entry["edit"]
        if not isinstance(mistake, str) or not mistake.strip() or "\n" in mistake:
            raise WrongAnswerError(f"{where}: `mistake` must be one line describing the mistake")
        if not isinstance(edits, list) or not edits:
            raise WrongAnswerError(f"{where}: no [[{name}.edit]]")
        for edit in edits:
            if set(edit) != {"old", "new"} or not all(isinstance(v, str) for v in edit.values()) \
                    or not edit["old"].strip():
                raise WrongAnswerError(f"{where}: each edit needs non-empty `old` lines and `new` lines (may be empty)")
            if edit["old"].splitlines() == edit["new"].splitlines():
                raise WrongAnswerError(f"{where}: an edit whose `new` lines are its `old` lines changes nothing")
        found.append(WrongAnswer(assignment, exercise, name, mistake, tuple((e["old"], e["new"]) for e in edits)))
    return found


@lru_cache(maxsize=None)
def _all_wrong_answers() -> tuple[WrongAnswer, ...]:
    found = [w for path in WRONG_ANSWERS.glob("*/*.toml") for w in _parse(path)]
    return tuple(sorted(found, key=lambda w: (w.assignment, w.exercise, w.name)))


def wrong_answers(assignment: str | None = None, exercise: str | None = None) -> list[WrongAnswer]:
    """The wrong answers (of one assignment, of one exercise), sorted by assignment, exercise, name."""
    return [
        w for w in _all_wrong_answers()
        if assignment in (None, w.assignment) and exercise in (None, w.exercise)
    ]


def find_wrong_answer(assignment: str, exercise: str, name: str) -> WrongAnswer:
    for candidate in wrong_answers(assignment, exercise):
        if candidate.name == name:
            return candidate
    raise LookupError(f"no wrong answer {name!r} in {WRONG_ANSWERS.relative_to(ROOT)}/{assignment}/{exercise}.toml")


def wrong_answer_stems(assignment: str, exercise: str) -> set[str]:
    """The names of the wrong answers of ``exercise``."""
    return {w.name for w in wrong_answers(assignment, exercise)}


def wrong_answer_cases(expected: dict[tuple[str, str], dict[str, str]]) -> list:
    """``pytest.param(assignment, exercise, name, phrase)`` for every expected explanation.

    ``expected`` maps ``(assignment, exercise)`` to ``{wrong answer name: a phrase its
    explanation must contain}``.
    """
    import pytest

    return [
        pytest.param(assignment, exercise, stem, phrase, id=f"{exercise}-{stem}")
        for (assignment, exercise), explanations in expected.items()
        for stem, phrase in explanations.items()
    ]


def wrong_answer(assignment: str, exercise: str, name: str, prelude: str = "", **names: object) -> Callable:
    """The function defined by wrong answer ``name`` of ``exercise`` (run as :func:`define` runs
    a cell); tracebacks show its lines."""
    found = find_wrong_answer(assignment, exercise, name)
    source = found.source()
    linecache.cache[found.filename] = (len(source), None, source.splitlines(keepends=True), found.filename)
    return define(source, exercise, found.filename, prelude, **names)


def check_module_tests(expected: dict[tuple[str, str], dict[str, str]], checks: dict[str, Callable],
                       prelude: Callable[[], str] = lambda: "") -> tuple[Callable, Callable, Callable]:
    """The three tests every exercise's check gets, for a test module to bind at module level::

        (test_reference_solution_passes, test_every_wrong_answer_file_has_an_expected_explanation,
         test_wrong_answer_is_caught_with_its_explanation) = check_module_tests(EXPECTED, CHECKS)

    ``expected``: ``{(assignment, exercise): {wrong answer file stem: a phrase its explanation
    contains}}``; ``checks``: ``{exercise: check_<exercise>}``; ``prelude()``: source of the
    notebook cells that run before the exercise (e.g. a helper its solution calls).
    """
    import pytest
    from saliencylab.checks import CheckFailed

    @pytest.mark.parametrize("assignment, exercise", list(expected))
    def test_reference_solution_passes(assignment, exercise, capsys):
        checks[exercise](define(cell_source(assignment, exercise), exercise, prelude=prelude()))
        assert f"✓ check_{exercise} passed: " in capsys.readouterr().out

    @pytest.mark.parametrize("assignment, exercise", list(expected))
    def test_every_wrong_answer_file_has_an_expected_explanation(assignment, exercise):
        assert wrong_answer_stems(assignment, exercise) == set(expected[assignment, exercise])

    @pytest.mark.parametrize("assignment, exercise, stem, phrase", wrong_answer_cases(expected))
    def test_wrong_answer_is_caught_with_its_explanation(assignment, exercise, stem, phrase):
        student_fn = wrong_answer(assignment, exercise, stem, prelude=prelude())
        with pytest.raises(CheckFailed) as failure:
            checks[exercise](student_fn)
        assert phrase in str(failure.value)

    return (test_reference_solution_passes, test_every_wrong_answer_file_has_an_expected_explanation,
            test_wrong_answer_is_caught_with_its_explanation)
