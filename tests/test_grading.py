"""The grading works: release = nbgrader(solutions), solutions get full marks, the untouched
release gets zero, and every plausible wrong answer loses exactly its exercise's points.

Expensive steps run once per assignment and are shared by its tests: one ``nbgrader autograde``
of two submissions (the solution and the untouched release) and one kernel in which the solution
notebook has run and wrong answers are swapped in and out.
"""

from __future__ import annotations

import functools
import shutil
import sys
import tempfile
from pathlib import Path

import nbformat
import pytest
from exercise_cells import wrong_answers

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import grade  # noqa: E402
import nbtools  # noqa: E402
import release  # noqa: E402

ASSIGNMENTS = release.assignments()
SOLUTION_STUDENT, BLANK_STUDENT = "reference_solution", "untouched_release"


def _nbgrader_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in notebook.cells if "nbgrader" in c.metadata]


def solution_path(assignment: str) -> Path:
    return ROOT / "solutions" / assignment / f"{assignment}.ipynb"


def read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(str(path), as_version=4)


def exercises(assignment: str) -> list[str]:
    """grade_ids of the code cells students write."""
    return [
        c.metadata.nbgrader.grade_id
        for c in _nbgrader_cells(read(solution_path(assignment)))
        if c.cell_type == "code" and c.metadata.nbgrader.get("solution")
    ]


def graded_test_cells(notebook: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [c for c in _nbgrader_cells(notebook) if c.cell_type == "code" and c.metadata.nbgrader.get("grade")]


def grouped(assignment: str, *marks: pytest.MarkDecorator):
    return pytest.param(assignment, marks=[pytest.mark.xdist_group(f"grading-{assignment}"), *marks])


ASSIGNMENT_PARAMS = [grouped(a) for a in ASSIGNMENTS]


# --- structure -------------------------------------------------------------------------------


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_notebook_has_exercise_tests_written_answer_and_colab_cells(assignment):
    notebook = read(solution_path(assignment))
    assert notebook.metadata.kernelspec.name == "python3"
    cells = _nbgrader_cells(notebook)
    ids = [c.metadata.nbgrader.grade_id for c in cells]
    assert len(ids) == len(set(ids)), "grade_ids must be unique"
    assert exercises(assignment), "at least one graded exercise"
    for exercise in exercises(assignment):
        assert any(i.startswith(f"{exercise}_test") for i in ids), f"{exercise} has no test cell"
    for cell in graded_test_cells(notebook):
        assert "### BEGIN HIDDEN TESTS" in cell.source, f"{cell.metadata.nbgrader.grade_id}: hidden tests carry the points"
        assert any(cell.metadata.nbgrader.grade_id.startswith(f"{e}_test") for e in exercises(assignment))
    assert any(c.cell_type == "markdown" and c.metadata.nbgrader.get("grade") for c in cells), "a written answer"
    stamped = nbtools.stamp(read(solution_path(assignment)), assignment)
    assert [c.source for c in stamped.cells[:4]] == [c.source for c in notebook.cells[:4]], (
        "Colab badge, lesson card or setup cell out of date: run `make release`"
    )


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_every_exercise_has_three_wrong_answers(assignment):
    for exercise in exercises(assignment):
        found = wrong_answers(assignment, exercise)
        assert len(found) >= 3, f"{assignment}/{exercise}: {len(found)} wrong answers, need >= 3"


@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_release_is_exactly_what_nbgrader_generates(assignment, tmp_path):
    generated = read(release.generate(assignment, tmp_path) / f"{assignment}.ipynb")
    committed = read(ROOT / "notebooks" / assignment / f"{assignment}.ipynb")
    assert len(generated.cells) == len(committed.cells), "run `make release` and commit notebooks/"
    for new, old in zip(generated.cells, committed.cells):
        assert (new.cell_type, new.source, new.metadata) == (old.cell_type, old.source, old.metadata), (
            "notebooks/ differs from what nbgrader generates from solutions/: run `make release`"
        )


# --- autograde -------------------------------------------------------------------------------


@functools.lru_cache(maxsize=None)
def autograded(assignment: str) -> tuple[Path, dict[str, dict[str, grade.CellScore]]]:
    """Autograde the solution and the untouched release as two students, each in its scratch
    copy with a sandboxed kernel, as `make grade` does; scores by student."""
    root = Path(tempfile.mkdtemp(prefix=f"saliencylab-autograde-{assignment}-"))
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions" / assignment, root / "solutions" / assignment)
    for student, source in [(SOLUTION_STUDENT, solution_path(assignment)),
                            (BLANK_STUDENT, ROOT / "notebooks" / assignment / f"{assignment}.ipynb")]:
        folder = root / "submitted" / student / assignment
        folder.mkdir(parents=True)
        shutil.copy(source, folder / f"{assignment}.ipynb")
    grade.register_assignment(root, assignment)
    for student in (SOLUTION_STUDENT, BLANK_STUDENT):  # as `make grade` does: scratch copy, sandbox
        result = grade.grade_submission(root, student, assignment)
        assert result.graded, result
    scores: dict[str, dict[str, grade.CellScore]] = {}
    for score in grade.cell_scores(root):
        scores.setdefault(score.student, {})[score.grade_id] = score
    return root, scores


@pytest.mark.notebooks
@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_solution_gets_full_marks(assignment):
    _, scores = autograded(assignment)
    autograded_cells = {k: s for k, s in scores[SOLUTION_STUDENT].items() if not s.needs_manual_grade}
    assert autograded_cells, "no autograded cells were scored"
    lost = {k: f"{s.score:g}/{s.max_score:g}" for k, s in autograded_cells.items() if s.score != s.max_score}
    assert not lost, f"the reference solution lost points: {lost}"


@pytest.mark.notebooks
@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_untouched_release_gets_zero_on_every_cell(assignment):
    root, scores = autograded(assignment)
    assert (root / "autograded" / BLANK_STUDENT / assignment / f"{assignment}.ipynb").exists(), "run completed"
    earned = {k: s.score for k, s in scores[BLANK_STUDENT].items() if s.score}
    assert not earned, f"the untouched release earned points: {earned}"
    assert len(scores[BLANK_STUDENT]) == len(scores[SOLUTION_STUDENT])


@pytest.mark.notebooks
@pytest.mark.parametrize("assignment", ASSIGNMENT_PARAMS)
def test_nbgrader_validator_passes_the_freshly_executed_solution(assignment):
    """The Validator's verdict on the notebook that autograde just executed (sharing that run;
    ``nbgrader validate`` itself always exits 0, so the API is used)."""
    from nbgrader.validator import Validator

    root, _ = autograded(assignment)
    executed = root / "autograded" / SOLUTION_STUDENT / assignment / f"{assignment}.ipynb"
    validator = Validator()
    validator.preprocessors = []  # already executed by autograde
    assert validator.validate(str(executed)) == {}


# --- wrong answers ---------------------------------------------------------------------------


class NotebookKernel:
    """A kernel in which the solution notebook has run; cells can be re-run one at a time."""

    def __init__(self, path: Path):
        from jupyter_client.manager import start_new_kernel

        self.notebook = read(path)
        self.manager, self.client = start_new_kernel(kernel_name="python3", cwd=str(path.parent))
        try:
            self._run_up_to_the_last_test_cell()
        except BaseException:
            self.close()  # a kernel left running holds its memory until the whole run ends
            raise

    def _run_up_to_the_last_test_cell(self) -> None:
        last_test = max(i for i, c in enumerate(self.notebook.cells) if c in graded_test_cells(self.notebook))
        for cell in self.notebook.cells[: last_test + 1]:
            if cell.cell_type == "code":
                error = self.run(cell.source)
                assert error is None, f"solution cell failed: {error}\n{cell.source[:500]}"

    def run(self, source: str) -> str | None:
        """Execute ``source``; the error as 'Name: value', or None when it ran cleanly."""
        reply = self.client.execute_interactive(source, timeout=600, output_hook=lambda msg: None)
        content = reply["content"]
        return None if content["status"] == "ok" else f"{content.get('ename')}: {content.get('evalue')}"

    def close(self) -> None:
        self.client.stop_channels()
        self.manager.shutdown_kernel(now=True)


@pytest.fixture(scope="module")
def kernels():
    """``kernels(assignment)``: that assignment's kernel, started once.

    Only one kernel lives at a time (each holds a model, ~0.7 GB): the wrong answers of one
    assignment run one after another in one worker (one xdist group), so asking for another
    assignment closes the previous kernel.
    """
    started: dict[str, NotebookKernel] = {}

    def kernel_for(assignment: str) -> NotebookKernel:
        if assignment not in started:
            for other in started.values():
                other.close()
            started.clear()
            started[assignment] = NotebookKernel(solution_path(assignment))
        return started[assignment]

    yield kernel_for
    for kernel in started.values():
        kernel.close()


def wrong_answer_params():
    return [
        pytest.param(a, e, w, id=f"{a}-{e}-{w.name}", marks=[pytest.mark.xdist_group(f"grading-{a}"), pytest.mark.notebooks])
        for a in ASSIGNMENTS
        for e in exercises(a)
        for w in wrong_answers(a, e)
    ]


@pytest.mark.parametrize("assignment, exercise, wrong_answer", wrong_answer_params())
def test_wrong_answer_loses_its_exercise_points_only(kernels, assignment, exercise, wrong_answer):
    kernel = kernels(assignment)
    solution_cell = next(c for c in _nbgrader_cells(kernel.notebook) if c.metadata.nbgrader.grade_id == exercise)
    assert kernel.run(wrong_answer.source()) is None, "the wrong answer itself must define cleanly"
    try:
        outcome = {c.metadata.nbgrader.grade_id: kernel.run(c.source) for c in graded_test_cells(kernel.notebook)}
    finally:
        assert kernel.run(solution_cell.source) is None
    own = {k: v for k, v in outcome.items() if k.startswith(f"{exercise}_test")}
    others = {k: v for k, v in outcome.items() if k not in own}
    assert any(own.values()), f"{wrong_answer.label} passed every test of {exercise}: the grader misses it"
    tampering = {k: v for k, v in own.items() if v and v.split(":")[0] in ("TamperingError", "ReferenceImplementationCalled")}
    assert not tampering, f"{wrong_answer.label} is an honest mistake, yet flagged as tampering: {tampering}"
    broken = {k: v for k, v in others.items() if v}
    assert not broken, f"{wrong_answer.label} also failed other exercises' tests: {broken}"
