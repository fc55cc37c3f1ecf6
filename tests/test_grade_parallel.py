"""Grading a class in parallel: on a Dask cluster the results are those of grading one by one,
an unchanged class is not run again, and a worker that dies costs only its own submission."""

from __future__ import annotations

import html
import os
import re
import shutil
import sys
from pathlib import Path

import cloudpickle
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))

import grade  # noqa: E402
import grading_task  # noqa: E402
import nbtools  # noqa: E402

ASSIGNMENT = "parallel"
pytestmark = [pytest.mark.notebooks, pytest.mark.xdist_group("grade-parallel")]
cloudpickle.register_pickle_by_value(sys.modules[__name__])  # Dask workers need not import this file


def notebook(double_body: str, extra: str | None = None):
    cells = [
        nbtools.solution("def double(v):\n" + double_body, "double"),
        nbtools.tests("assert double(2) == 4\n### BEGIN HIDDEN TESTS\nassert double(3) == 6\n### END HIDDEN TESTS",
                      "double_test", 2),
        nbtools.solution("def triple(v):\n    ### BEGIN SOLUTION\n    return 3 * v\n    ### END SOLUTION", "triple"),
        nbtools.tests("assert triple(2) == 6", "triple_test", 1),
        nbtools.written_answer("why", 1, "Because."),
    ]
    if extra:
        cells.insert(2, nbtools.code(extra))
    return nbtools.new_notebook(cells, ASSIGNMENT)


CORRECT = "    ### BEGIN SOLUTION\n    return 2 * v\n    ### END SOLUTION"
CLASS = {
    "ada": notebook(CORRECT),
    "bob": notebook("    return 3 * v"),
    "cy": notebook("    raise ValueError('not done')"),
    "dee": notebook(CORRECT, extra="import torch\ntorch.allclose = lambda *a, **k: True"),
    "eve": notebook(CORRECT),
}


def make_course(root: Path) -> Path:
    shutil.copy(ROOT / "nbgrader_config.py", root)
    nbtools.write(notebook(CORRECT), root / "solutions" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    for student, nb in CLASS.items():
        nbtools.write(nb, root / "submitted" / student / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    return root


def outcome(root: Path, results) -> dict:
    """Per student: status, scores per cell, and the feedback page's text."""
    scores = {}
    for score in grade.cell_scores(root):
        scores.setdefault(score.student, {})[score.grade_id] = (score.score, score.needs_manual_grade)
    summary = {}
    for result in results:
        page = root / "feedback" / result.student / ASSIGNMENT / f"{ASSIGNMENT}.html"
        text = html.unescape(re.sub(r"<[^>]+>", "", page.read_text())) if page.exists() else None
        summary[result.student] = (result.status, scores.get(result.student), text)
    return summary


@pytest.fixture(scope="module")
def cluster():
    import dask
    from dask.distributed import LocalCluster

    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.worker.daemon": False}):
        with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, memory_limit=0,
                          dashboard_address=None) as local:
            yield local


@pytest.fixture(scope="module")
def graded_both_ways(tmp_path_factory, cluster):
    one_by_one = make_course(tmp_path_factory.mktemp("one_by_one"))
    on_dask = make_course(tmp_path_factory.mktemp("on_dask"))
    sequential = grade.grade_all(one_by_one, jobs=1)
    parallel = grade.grade_all(on_dask, scheduler=cluster.scheduler_address)
    return one_by_one, sequential, on_dask, parallel


def test_a_dask_cluster_gives_the_results_of_grading_one_by_one(graded_both_ways):
    one_by_one, sequential, on_dask, parallel = graded_both_ways
    expected, got = outcome(one_by_one, sequential), outcome(on_dask, parallel)
    assert got == expected
    # the task modules went to the workers only: this process (the scheduler's) keeps its own
    assert Path(grade.sandbox.__file__).parent == ROOT / "tools"
    assert expected["ada"][0] == "graded" and expected["dee"][0] == "tampering"
    assert expected["bob"][1]["double_test"] == (0.0, False) and expected["ada"][1]["double_test"] == (2.0, False)
    assert all(text is not None and "double(3)" not in text for _, _, text in got.values())


def test_an_unchanged_class_is_not_run_again(graded_both_ways, cluster):
    _, _, on_dask, parallel = graded_both_ways
    before = outcome(on_dask, parallel)
    again = grade.grade_all(on_dask, scheduler=cluster.scheduler_address)
    assert not any(r.rerun for r in again)
    assert outcome(on_dask, again) == before


def test_only_changed_submissions_are_regraded_and_force_regrades_all(tmp_path):
    root = make_course(tmp_path)
    grade.grade_all(root, jobs=1)
    nbtools.write(notebook(CORRECT), root / "submitted" / "bob" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    nbtools.write(notebook(CORRECT), root / "submitted" / "dee" / ASSIGNMENT / f"{ASSIGNMENT}.ipynb")
    results = {r.student: r for r in grade.grade_all(root, jobs=1)}
    assert {s for s, r in results.items() if r.rerun} == {"bob", "dee"}
    scores = {(s.student, s.grade_id): s.score for s in grade.cell_scores(root)}
    assert results["dee"].status == "graded"
    assert scores[("bob", "double_test")] == 2 and scores[("dee", "double_test")] == 2  # the zero withdrawn
    assert all(r.rerun for r in grade.grade_all(root, jobs=1, force=True))


def test_a_changed_check_regrades_everyone(tmp_path, monkeypatch):
    root = make_course(tmp_path)
    grade.grade_all(root, jobs=1)
    monkeypatch.setattr(grade, "checks_fingerprint", lambda: "a new version of the checks")
    assert all(r.rerun for r in grade.grade_all(root, jobs=1))


# --- a worker that dies ---------------------------------------------------------------------


def dies_once(task: grading_task.GradingTask) -> str:
    marker = Path(task.config)  # the test passes a marker path here
    if not marker.exists():
        marker.write_text("died")
        os._exit(1)  # as a worker killed by the system would
    return f"graded {task.student}"


def always_dies(task: grading_task.GradingTask) -> str:
    os._exit(1)


def fake_task(student: str, marker: Path) -> grading_task.GradingTask:
    return grading_task.GradingTask(student=student, assignment=ASSIGNMENT, files={}, source_files={},
                                    gradebook=b"", config=str(marker))


@pytest.mark.parametrize("task_fn, expected", [(dies_once, "graded victim"), (always_dies, "KilledWorker")])
def test_a_dying_worker_is_retried_once_then_reported(cluster, tmp_path, task_fn, expected):
    tasks = [fake_task("victim", tmp_path / "marker")]
    finished = {}
    grade.run_tasks(tasks, jobs=2, scheduler=cluster.scheduler_address, task_fn=task_fn,
                    finished=lambda index, outcome: finished.setdefault(index, outcome))
    from dask.distributed import Client

    with Client(cluster) as client:  # let the nanny bring the killed worker back before the next test
        client.wait_for_workers(2, timeout=120)
    got = finished[0]
    assert (got if isinstance(got, str) else type(got).__name__) == expected
    if expected == "KilledWorker":
        prepared = grade.Prepared("victim", ASSIGNMENT, key="")
        result = grade.merge(tmp_path, prepared, got)
        assert result.status == "failed" and "failed twice" in result.detail


def test_a_daemon_worker_grades_through_a_fresh_interpreter(tmp_path, monkeypatch):
    import multiprocessing

    root = make_course(tmp_path)
    for student in list(CLASS)[1:]:
        shutil.rmtree(root / "submitted" / student)
    monkeypatch.setitem(multiprocessing.current_process()._config, "daemon", True)  # as in a Dask worker
    (result,) = grade.grade_all(root, jobs=1)
    assert result.status == "graded"
    assert {s.grade_id: s.score for s in grade.cell_scores(root)}["double_test"] == 2


def test_make_feedback_shows_scores_given_by_hand(tmp_path):
    from nbgrader.api import Gradebook

    root = make_course(tmp_path)
    grade.grade_all(root, jobs=1)
    with Gradebook(f"sqlite:///{root / 'gradebook.db'}") as gradebook:
        gradebook.find_grade("why", ASSIGNMENT, ASSIGNMENT, "ada").manual_score = 1.0
        gradebook.db.commit()
    assert grade.regenerate_feedback(root) == len(CLASS)
    page = html.unescape(re.sub(r"<[^>]+>", "", (root / "feedback" / "ada" / ASSIGNMENT / f"{ASSIGNMENT}.html").read_text()))
    assert "Score: 1.0 / 1.0" in page and "double(3)" not in page
