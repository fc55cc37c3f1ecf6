"""The exercises of the course notebooks, as the checks' unit tests need them.

A solution cell (from ``solutions/``) or a wrong answer (from ``tests/wrong_answers/``) is run the
way the notebook would run it, with the names the notebook imported, and the function it defines
is handed to the check under test.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path
from typing import Callable

import nbformat
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parent.parent
WRONG_ANSWERS = ROOT / "tests" / "wrong_answers"

# What the notebooks import before their exercise cells.
NOTEBOOK_NAMES = {"torch": torch, "nn": nn, "F": F, "copy": copy}


def cell_source(assignment: str, grade_id: str) -> str:
    """The source of cell ``grade_id`` in ``solutions/<assignment>/<assignment>.ipynb``."""
    notebook = nbformat.read(str(ROOT / "solutions" / assignment / f"{assignment}.ipynb"), as_version=4)
    for cell in notebook.cells:
        if cell.metadata.get("nbgrader", {}).get("grade_id") == grade_id:
            return cell.source
    raise LookupError(f"no cell {grade_id!r} in {assignment}")


def solution_without_markers(assignment: str, grade_id: str) -> str:
    """The solution cell with its ``### BEGIN/END SOLUTION`` lines removed."""
    return re.sub(r"^\s*### (BEGIN|END) SOLUTION\n", "", cell_source(assignment, grade_id), flags=re.MULTILINE)


def define(source: str, name: str, filename: str | None = None, prelude: str = "", **names: object) -> Callable:
    """Run ``prelude`` then ``source`` in a fresh namespace and return the function ``name``.

    The namespace holds the notebooks' imports and ``names`` (e.g. another exercise's reference
    function); ``filename`` is what tracebacks show.
    """
    namespace: dict[str, object] = {**NOTEBOOK_NAMES, **names}
    if prelude:
        exec(compile(prelude, "<prelude>", "exec"), namespace)
    exec(compile(source, filename or f"<{name}>", "exec"), namespace)
    return namespace[name]  # type: ignore[return-value]


def wrong_answer_files(assignment: str, exercise: str) -> list[Path]:
    """Every ``tests/wrong_answers/<assignment>/<exercise>/*.py``, sorted."""
    return sorted((WRONG_ANSWERS / assignment / exercise).glob("*.py"))


def wrong_answer_stems(assignment: str, exercise: str) -> set[str]:
    return {path.stem for path in wrong_answer_files(assignment, exercise)}


def wrong_answer_cases(expected: dict[tuple[str, str], dict[str, str]]) -> list:
    """``pytest.param(assignment, exercise, stem, phrase)`` for every expected explanation.

    ``expected`` maps ``(assignment, exercise)`` to ``{wrong answer file stem: a phrase its
    explanation must contain}``.
    """
    import pytest

    return [
        pytest.param(assignment, exercise, stem, phrase, id=f"{exercise}-{stem}")
        for (assignment, exercise), explanations in expected.items()
        for stem, phrase in explanations.items()
    ]


def wrong_answer(assignment: str, exercise: str, stem: str, **names: object) -> Callable:
    """The function defined by ``tests/wrong_answers/<assignment>/<exercise>/<stem>.py``."""
    path = WRONG_ANSWERS / assignment / exercise / f"{stem}.py"
    return define(path.read_text(), exercise, str(path), **names)
