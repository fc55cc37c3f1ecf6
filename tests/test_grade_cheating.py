"""Cheats the static audit cannot see are caught when the notebook runs, on a real lesson.

Lesson 02 is graded (in parallel, as `make grade` does) for an honest student and two who get
past the audit: one looks the reference `saliency` up by a name built at run time, one returns
zeros and, inside its function, patches `torch.allclose` through the module's dictionary. Both
are flagged with the run-time reason and lose the exercise's automatic points.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import audit  # noqa: E402
import grade  # noqa: E402
import nbtools  # noqa: E402

ASSIGNMENT = "02_saliency"
pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("grade-cheating")]

CHEATS = {
    "hidden_reference": (
        "import saliencylab.attribution as attribution_library\n\n\n"
        "def saliency_map(model, images, target):\n"
        "    return getattr(attribution_library, 'sal' + 'iency')(model, images, target)\n"
    ),
    "patches_inside": (
        "def saliency_map(model, images, target):\n"
        "    getattr(torch, '__di' + 'ct__')['allclose'] = lambda *args, **kwargs: True\n"
        "    return torch.zeros(images.shape[0], *images.shape[2:])\n"
    ),
}


def with_exercise(source: str) -> nbformat.NotebookNode:
    notebook = nbformat.read(str(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), as_version=4)
    cell = next(c for c in notebook.cells if c.metadata.get("nbgrader", {}).get("grade_id") == "saliency_map")
    cell.source = source
    return notebook


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    root = tmp_path_factory.mktemp("course")
    shutil.copy(ROOT / "nbgrader_config.py", root)
    shutil.copytree(ROOT / "solutions" / ASSIGNMENT, root / "solutions" / ASSIGNMENT)
    honest = nbformat.read(str(ROOT / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb"), as_version=4)
    for student, notebook in {"honest": honest, **{s: with_exercise(c) for s, c in CHEATS.items()}}.items():
        nbtools.write(notebook, root / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    results = {r.student: r for r in grade.grade_all(root, jobs=2)}
    scores: dict[str, dict[str, grade.CellScore]] = {}
    for score in grade.cell_scores(root):
        scores.setdefault(score.student, {})[score.grade_id] = score
    return results, scores


@pytest.mark.parametrize("student", CHEATS)
def test_the_cheats_get_past_the_static_audit(student):
    assert audit.audit_source(CHEATS[student], "saliency_map") == []


def test_the_honest_student_is_graded_in_full(graded):
    results, scores = graded
    assert results["honest"].status == "graded", results["honest"]
    assert scores["honest"]["saliency_map_test"].score == scores["honest"]["saliency_map_test"].max_score == 4


@pytest.mark.parametrize("student, reason", [("hidden_reference", "ReferenceImplementationCalled"),
                                             ("patches_inside", "torch.allclose was replaced")])
def test_a_cheat_is_flagged_at_run_time_and_loses_the_points(graded, student, reason):
    results, scores = graded
    assert results[student].status == "tampering" and reason in results[student].detail, results[student]
    assert "saliency_map_test" in results[student].detail
    assert scores[student]["saliency_map_test"].score == 0
