"""The wrong answers of tests/wrong_answers/ are edits of the current solution cells: each one
applies, and one that no longer applies (its solution changed) fails loudly, naming itself,
instead of testing an old version of the solution."""

from __future__ import annotations

import exercise_cells
import pytest
from exercise_cells import (
    WRONG_ANSWERS,
    WrongAnswer,
    WrongAnswerError,
    _parse,
    cell_source,
    without_markers,
    wrong_answers,
)

CELL = "def f(x):\n    y = 2 * x\n    z = 3\n    z = 3\n    return y + z"


@pytest.fixture
def cell(monkeypatch):
    """Every wrong answer built in a test edits CELL instead of a real solution cell."""
    monkeypatch.setattr(exercise_cells, "solution_without_markers", lambda assignment, exercise: CELL)


def test_every_wrong_answer_applies_to_its_current_solution_cell():
    problems = []
    for wrong in wrong_answers():
        try:
            source = wrong.source()
        except WrongAnswerError as error:
            problems.append(str(error))
            continue
        compile(source, wrong.filename, "exec")
    assert not problems, "\n\n".join(problems)


def test_wrong_answers_are_only_edit_files_of_existing_exercises():
    """A full copy (`<exercise>/<name>.py`, the old layout) would be silently ignored."""
    files = [path for path in WRONG_ANSWERS.rglob("*") if path.is_file()]
    strays = [path for path in files if path.suffix != ".toml" or path.parent.parent != WRONG_ANSWERS]
    assert files and not strays, f"only <assignment>/<exercise>.toml files belong here: {strays}"
    for path in files:
        cell_source(path.parent.name, path.stem)  # LookupError: no such exercise
    assert len(wrong_answers()) == sum(len(_parse(path)) for path in files)


def test_edits_apply_to_the_cell_as_it_is_and_the_mistake_heads_the_code(cell):
    wrong = WrongAnswer("a", "f", "demo", "adds instead of subtracting.", (
        ("    return y + z\n", "    return y - z\n"),
        ("    y = 2 * x\n", "    y = x\n    w = 0\n"),
        ("    z = 3\n    z = 3\n", ""),
    ))
    expected = "# Wrong answer: adds instead of subtracting.\ndef f(x):\n    y = x\n    w = 0\n    return y - z\n"
    assert wrong.source() == expected


@pytest.mark.parametrize("old, times", [("    return y * z\n", 0), ("    z = 3\n", 2)])
def test_an_edit_that_does_not_match_once_names_its_wrong_answer(cell, old, times):
    edits = (("    y = 2 * x\n", "    y = x\n"), (old, ""))
    wrong = WrongAnswer("02_saliency", "saliency_map", "stale_one", "a mistake.", edits)
    with pytest.raises(WrongAnswerError, match=rf"02_saliency/saliency_map/stale_one .*edit 2 occur {times} times"):
        wrong.source()


def test_overlapping_edits_are_refused(cell):
    edits = (
        ("    y = 2 * x\n    z = 3\n    z = 3\n", ""),
        ("    return y + z\n", ""),
        ("    z = 3\n    z = 3\n    return y + z\n", ""),
    )
    wrong = WrongAnswer("a", "f", "overlap", "a mistake.", edits)
    with pytest.raises(WrongAnswerError, match="a/f/overlap: its edits 1 and 3 overlap"):
        wrong.source()


@pytest.mark.parametrize("entry, complaint", [
    ("[demo]\n[[demo.edit]]\nold = 'x = 1'\nnew = ''\n", "needs exactly `mistake"),
    ("[demo]\nmistake = '''two\nlines'''\n[[demo.edit]]\nold = 'x = 1'\nnew = ''\n", "must be one line"),
    ("[demo]\nmistake = 'm'\n[[demo.edit]]\nold = ''\nnew = 'x = 1'\n", "non-empty `old`"),
    ("[demo]\nmistake = 'm'\n[[demo.edit]]\nold = 'x = 1'\nnew = 'x = 1'\n", "changes nothing"),
])
def test_a_malformed_entry_is_refused_by_name(tmp_path, entry, complaint):
    path = tmp_path / "01_linear_models" / "input_gradient.toml"
    path.parent.mkdir()
    path.write_text(entry)
    with pytest.raises(WrongAnswerError, match=f"input_gradient.toml, wrong answer 'demo': .*{complaint}"):
        _parse(path)


def test_the_last_solution_marker_goes_too():
    cell = "def f():\n    ### BEGIN SOLUTION\n    return 1\n    ### END SOLUTION"
    assert without_markers(cell) == "def f():\n    return 1"
